"""The fault-injecting TCP relay (ledgermq.testing.relay) with real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
import time

import pytest

from ledgermq.testing.relay import Relay, RelayMesh, ThreadedRelay, ThreadedRelayMesh

pytestmark = pytest.mark.timeout(30)


class EchoServer:
    """Echoes what it reads and remembers it, so a test can await what arrived."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.received = bytearray()
        self.connections = 0
        self.changed = asyncio.Condition()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> EchoServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                async with self.changed:
                    self.received += data
                    self.changed.notify_all()
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def wait_received(self, data: bytes, timeout: float = 5.0) -> None:
        async def check() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: data in self.received)

        await asyncio.wait_for(check(), timeout)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def nothing_arrives(reader: asyncio.StreamReader, window: float = 0.1) -> bool:
    """A bounded check that no byte is readable within `window` (absence cannot be awaited)."""
    try:
        await asyncio.wait_for(reader.read(1), window)
    except TimeoutError:
        return True
    return False  # a byte, or EOF


async def read_exactly(reader: asyncio.StreamReader, n: int, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), timeout)


async def assert_reset(reader: asyncio.StreamReader, timeout: float = 5.0) -> None:
    """The connection ends (reset or EOF) rather than delivering anything."""
    try:
        data = await asyncio.wait_for(reader.read(100), timeout)
    except ConnectionError:
        return
    assert data == b""


@pytest.fixture
async def echo():
    server = await EchoServer().start()
    yield server
    await server.stop()


async def test_forwards_both_ways_and_counts(echo):
    async with Relay("127.0.0.1", echo.port) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"hello relay")
        assert await read_exactly(reader, 11) == b"hello relay"
        big = bytes(range(256)) * 4096  # 1 MiB, several chunks, in order
        writer.write(big)
        assert await read_exactly(reader, len(big)) == big
        await relay.wait_until(lambda r: r.bytes["backward"] == len(big) + 11)
        assert relay.accepted == 1 and relay.active == 1
        assert relay.bytes["forward"] == len(big) + 11
        writer.close()
        await relay.wait_until(lambda r: r.active == 0)


async def test_half_close_is_passed_on(echo):
    async with Relay("127.0.0.1", echo.port) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"last words")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"last words"  # then EOF
        writer.close()
        await relay.wait_until(lambda r: r.active == 0)


async def test_block_resets_open_and_new_connections_until_unblock(echo):
    async with Relay("127.0.0.1", echo.port) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"ping")
        assert await read_exactly(reader, 4) == b"ping"

        await relay.block()
        await assert_reset(reader)
        await relay.wait_until(lambda r: r.active == 0)
        writer.close()

        reader2, writer2 = await asyncio.open_connection("127.0.0.1", relay.port)
        await assert_reset(reader2)
        await relay.wait_until(lambda r: r.refused == 1)
        writer2.close()

        await relay.unblock()
        reader3, writer3 = await asyncio.open_connection("127.0.0.1", relay.port)
        writer3.write(b"back")
        assert await read_exactly(reader3, 4) == b"back"
        writer3.close()


async def test_blackhole_holds_bytes_and_delivers_them_after_unblock(echo):
    async with Relay("127.0.0.1", echo.port) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"one")
        assert await read_exactly(reader, 3) == b"one"

        await relay.blackhole()
        writer.write(b"two")
        assert await nothing_arrives(reader)
        assert b"two" not in echo.received
        assert relay.active == 1  # the connection stays open

        # A new connection is accepted, but nothing passes either.
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", relay.port)
        writer2.write(b"new")
        assert await nothing_arrives(reader2)

        await relay.unblock()
        assert await read_exactly(reader, 3) == b"two"  # held, not lost: stream intact
        assert await read_exactly(reader2, 3) == b"new"
        writer.close()
        writer2.close()


async def test_blackhole_one_direction(echo):
    async with Relay("127.0.0.1", echo.port) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        await relay.blackhole(forward=False, backward=True)
        writer.write(b"request")
        await echo.wait_received(b"request")  # the request gets through...
        assert await nothing_arrives(reader)  # ...the reply does not
        assert relay.bytes["backward"] == 0
        await relay.unblock()
        assert await read_exactly(reader, 7) == b"request"
        writer.close()


async def test_delay_is_added_to_each_direction(echo):
    async with Relay("127.0.0.1", echo.port) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"warm")
        await read_exactly(reader, 4)
        await relay.set_delay(0.05)
        started = time.monotonic()
        writer.write(b"slow")
        assert await read_exactly(reader, 4) == b"slow"
        assert time.monotonic() - started >= 0.1  # 50 ms there, 50 ms back
        await relay.set_delay(0)
        writer.close()


async def test_unreachable_target_resets_the_dialer():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    async with Relay("127.0.0.1", dead_port) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        await assert_reset(reader)
        await relay.wait_until(lambda r: r.failed == 1)
        writer.close()


@pytest.fixture
async def three_echoes():
    servers = {i: await EchoServer(f"m{i}").start() for i in range(3)}
    yield servers
    for s in servers.values():
        await s.stop()


async def dial(mesh: RelayMesh, i: int, j: int):
    host, port = mesh.address(i, j)
    return await asyncio.open_connection(host, port)


async def test_mesh_routes_each_link_through_its_own_relay(three_echoes):
    targets = {i: ("127.0.0.1", s.port) for i, s in three_echoes.items()}
    async with RelayMesh(targets) as mesh:
        assert len(mesh.relays) == 6
        assert mesh.address(0, 0) == targets[0]
        assert mesh.addresses_for(1)[1] == targets[1]
        assert mesh.addresses_for(1)[2] == ("127.0.0.1", mesh.link(1, 2).port)
        for i in range(3):
            for j in range(3):
                if i != j:
                    reader, writer = await dial(mesh, i, j)
                    writer.write(b"%d->%d" % (i, j))
                    assert await read_exactly(reader, 4) == b"%d->%d" % (i, j)
                    writer.close()
                    assert mesh.link(i, j).accepted == 1


async def test_mesh_symmetric_partition_and_heal(three_echoes):
    targets = {i: ("127.0.0.1", s.port) for i, s in three_echoes.items()}
    async with RelayMesh(targets) as mesh:
        conns = {(i, j): await dial(mesh, i, j) for i in range(3) for j in range(3) if i != j}
        await mesh.partition([0], [1, 2], mode="block")
        for (i, j), (reader, _writer) in conns.items():
            if 0 in (i, j):
                await assert_reset(reader)
            else:
                _writer.write(b"ok")
                assert await read_exactly(reader, 2) == b"ok"
        for _reader, writer in conns.values():
            writer.close()

        await mesh.heal()
        reader, writer = await dial(mesh, 0, 1)
        writer.write(b"healed")
        assert await read_exactly(reader, 6) == b"healed"
        writer.close()


async def test_mesh_asymmetric_partition(three_echoes):
    """0 cannot send to 1 and 2; 1 and 2 still reach 0 (but never hear its answer)."""
    targets = {i: ("127.0.0.1", s.port) for i, s in three_echoes.items()}
    async with RelayMesh(targets) as mesh:
        r01, w01 = await dial(mesh, 0, 1)
        r10, w10 = await dial(mesh, 1, 0)
        r12, w12 = await dial(mesh, 1, 2)
        await mesh.partition([0], [1, 2], symmetric=False)

        w10.write(b"from-1")  # 1 -> 0 gets through...
        await three_echoes[0].wait_received(b"from-1")
        assert await nothing_arrives(r10)  # ...but 0's reply to 1 is lost

        w01.write(b"from-0")  # 0 -> 1 is lost
        assert await nothing_arrives(r01)
        assert b"from-0" not in three_echoes[1].received

        w12.write(b"1to2")  # links not touching 0 work
        assert await read_exactly(r12, 4) == b"1to2"

        await mesh.heal()
        assert await read_exactly(r10, 6) == b"from-1"
        assert await read_exactly(r01, 6) == b"from-0"
        for w in (w01, w10, w12):
            w.close()


async def test_mesh_isolate_counts_extra_dialers(three_echoes):
    targets = {i: ("127.0.0.1", s.port) for i, s in three_echoes.items()}
    async with RelayMesh(targets, dialers=[0, 1, 2, "client"]) as mesh:
        assert len(mesh.relays) == 9
        await mesh.isolate(2)
        assert not mesh.link("client", 2).is_open("forward")
        assert not mesh.link(0, 2).is_open("backward")
        assert mesh.link("client", 0).is_open("forward")
        await mesh.heal()
        assert all(r.is_open("forward") and r.is_open("backward") for r in mesh.relays.values())


# ---- from a synchronous test (the relays' loop runs in a thread) -----------------------


class _SyncEcho(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    while data := self.request.recv(65536):
                        self.request.sendall(data)
                except OSError:
                    pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def roundtrip(addr: tuple[str, int], payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def assert_refused(addr: tuple[str, int]) -> None:
    """Reset on accept: the first read sees the reset (or EOF), never data."""
    try:
        got = roundtrip(addr, b"x")
    except OSError:
        return
    assert got == b""


def test_threaded_relay_from_sync_code():
    echo = _SyncEcho()
    try:
        with ThreadedRelay("127.0.0.1", echo.server_address[1]) as relay:
            addr = ("127.0.0.1", relay.port)
            assert roundtrip(addr, b"sync") == b"sync"
            relay.block()
            assert_refused(addr)
            relay.unblock()
            assert roundtrip(addr, b"again") == b"again"
            relay.wait_until(lambda r: r.refused == 1 and r.active == 0)
    finally:
        echo.close()


def test_threaded_mesh_from_sync_code():
    echoes = [_SyncEcho() for _ in range(3)]
    try:
        targets = {f"n{i}": ("127.0.0.1", e.server_address[1]) for i, e in enumerate(echoes)}
        with ThreadedRelayMesh(targets) as mesh:
            assert roundtrip(mesh.address("n0", "n1"), b"a") == b"a"
            mesh.isolate("n0", mode="block")
            assert_refused(mesh.address("n1", "n0"))
            assert roundtrip(mesh.address("n1", "n2"), b"c") == b"c"
            mesh.heal()
            assert roundtrip(mesh.address("n1", "n0"), b"d") == b"d"
            mesh.call(mesh.link("n2", "n1").blackhole(forward=False))
            with socket.create_connection(mesh.address("n2", "n1"), timeout=0.2) as s:
                s.sendall(b"e")
                with pytest.raises(TimeoutError):
                    s.recv(1)
    finally:
        for e in echoes:
            e.close()
