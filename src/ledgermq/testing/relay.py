"""A fault-injecting TCP relay, for tests that cut links between real server processes.

A `Relay` listens on a loopback port and forwards every connection to one target
(host, port). A test points a process at the relay instead of the target and can then:

- `block()`: reset every open connection (RST) and reset new ones as soon as they are
  accepted, like a host that is down or a firewall that rejects.
- `blackhole(forward=True, backward=True)`: stop moving bytes in one or both directions.
  Connections stay open (new ones are still accepted) and the bytes wait, exactly as when
  a network drops packets: TCP would keep retransmitting, the sender's buffers fill, and
  if the link heals before anyone gives up, the bytes arrive late but intact. Processes
  that time out close their connections themselves, as they would on a real network.
- `unblock()`: everything flows again.
- `set_delay(seconds)`: deliver each chunk that many seconds after it was read (order is
  kept; throughput is not limited by the delay).

"forward" is the direction from the dialer to the target, "backward" the replies.

A `RelayMesh` puts a relay on every directed link of a cluster: member i dials member j
through relay (i, j). Then `partition({a}, {b, c})` cuts a off from b and c in both
directions, and `partition({a}, {b, c}, symmetric=False)` only loses what a sends to b and
c (a's requests and a's replies), while b and c still reach a.

All of this is asyncio and runs on one event loop. A test that is not async (or whose
servers are separate processes and whose loop is busy) uses `ThreadedRelayMesh` or
`ThreadedRelay`, which run the relays on their own loop in a daemon thread and offer the
same methods synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Hashable, Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

FORWARD = "forward"
BACKWARD = "backward"
_CHUNK = 64 * 1024
_QUEUE_CHUNKS = 64  # chunks read ahead per direction; beyond that the reader waits


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) rather than FIN, so the peer sees a reset."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One relayed connection: the dialer's side, the target's side, two pumps."""

    def __init__(
        self,
        relay: Relay,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        target: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.relay = relay
        self.client_reader, self.client_writer = client
        self.target_reader, self.target_writer = target
        self.tasks: list[asyncio.Task[None]] = []
        self.was_reset = False

    async def run(self) -> None:
        self.tasks = [
            asyncio.ensure_future(self._pump(FORWARD, self.client_reader, self.target_writer)),
            asyncio.ensure_future(self._pump(BACKWARD, self.target_reader, self.client_writer)),
        ]
        try:
            await asyncio.gather(*self.tasks)
        except (ConnectionError, OSError):
            self.reset()
        except asyncio.CancelledError:
            if not self.was_reset:
                raise
        finally:
            for task in self.tasks:
                task.cancel()
            for writer in (self.client_writer, self.target_writer):
                if not writer.is_closing():
                    writer.close()

    def reset(self) -> None:
        if self.was_reset:
            return
        self.was_reset = True
        _reset(self.client_writer)
        _reset(self.target_writer)
        for task in self.tasks:
            task.cancel()

    async def _pump(
        self, direction: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Read in one task and write in another so that a delay does not limit throughput."""
        relay = self.relay
        gate = relay._gates[direction]
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await gate.wait()  # bytes read just before a blackhole wait for the heal
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                relay._count(direction, len(data))

        writer_task = asyncio.ensure_future(deliver())

        async def unless_writer_failed(step: Coroutine[Any, Any, T]) -> T:
            """Await `step`, but raise at once if the writer dies (its side was reset)."""
            task = asyncio.ensure_future(step)
            try:
                await asyncio.wait({task, writer_task}, return_when=asyncio.FIRST_COMPLETED)
                if not task.done():
                    writer_task.result()  # raises the writer's error
                    raise ConnectionResetError("writer ended early")
                return task.result()
            finally:
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()  # retrieved: the error is raised above if it matters

        try:
            while True:
                await gate.wait()
                data = await unless_writer_failed(reader.read(_CHUNK))
                await unless_writer_failed(queue.put((loop.time() + relay.delay, data)))
                if not data:
                    break
            await writer_task
        finally:
            if not writer_task.done():
                writer_task.cancel()
            elif not writer_task.cancelled():
                writer_task.exception()  # mark it retrieved; gather has the first error


class Relay:
    """Forward connections from a local port to `target_host:target_port`, with faults."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        name: str = "",
        connect_timeout: float = 5.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.name = name or f"relay->{target_host}:{target_port}"
        self.connect_timeout = connect_timeout
        self.delay = 0.0
        self.refusing = False
        # Counters a test can wait on (see `wait_until`).
        self.accepted = 0
        self.refused = 0
        self.failed = 0  # could not reach the target
        self.bytes = {FORWARD: 0, BACKWARD: 0}
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._gates: dict[str, asyncio.Event] = {}
        self._changed: asyncio.Condition | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    # ---- lifecycle ----

    async def start(self) -> Relay:
        self._gates = {FORWARD: asyncio.Event(), BACKWARD: asyncio.Event()}
        for gate in self._gates.values():
            gate.set()
        self._changed = asyncio.Condition()
        self._server = await asyncio.start_server(
            self._on_accept, self.listen_host, self.listen_port, reuse_address=True
        )
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # no new connections; reset the open ones before waiting
        for conn in list(self._connections):
            conn.reset()
        if server is not None:
            await server.wait_closed()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def __aenter__(self) -> Relay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self.listen_port

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    @property
    def active(self) -> int:
        """Connections open through the relay right now."""
        return len(self._connections)

    def is_open(self, direction: str = FORWARD) -> bool:
        return self._gates[direction].is_set() and not self.refusing

    # ---- faults ----

    async def block(self) -> None:
        """Reset every connection now and every new one (until `unblock`)."""
        self.refusing = True
        for conn in list(self._connections):
            conn.reset()
        await self._notify()

    async def blackhole(self, forward: bool = True, backward: bool = True) -> None:
        """Stop moving bytes in the given directions; connections stay open."""
        if forward:
            self._gates[FORWARD].clear()
        if backward:
            self._gates[BACKWARD].clear()
        await self._notify()

    async def unblock(self) -> None:
        """Undo `block` and `blackhole`: accept, forward and deliver held bytes again."""
        self.refusing = False
        for gate in self._gates.values():
            gate.set()
        await self._notify()

    async def set_delay(self, seconds: float) -> None:
        """Deliver each chunk `seconds` after it was read (applies to chunks read from now)."""
        self.delay = max(0.0, seconds)
        await self._notify()

    async def reset_connections(self) -> None:
        """Reset the open connections once; new ones are accepted as usual."""
        for conn in list(self._connections):
            conn.reset()
        await self._notify()

    # ---- waiting on conditions ----

    async def wait_until(self, predicate: Callable[[Relay], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate(self)` holds (checked after every change of the counters)."""
        assert self._changed is not None, "start() the relay first"

        async def waiter() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self))

        await asyncio.wait_for(waiter(), timeout)

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    def _count(self, direction: str, n: int) -> None:
        self.bytes[direction] += n
        self._poke()

    def _poke(self) -> None:
        """Notify waiters from code that cannot await (schedules the notification)."""
        task = asyncio.ensure_future(self._notify())
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    # ---- connections ----

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._handle(reader, writer)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            _reset(writer)
            await self._notify()
            return
        try:
            target = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port),
                self.connect_timeout,
            )
        except (OSError, TimeoutError):
            self.failed += 1
            _reset(writer)
            await self._notify()
            return
        if self.refusing:  # blocked while we were connecting
            self.refused += 1
            _reset(writer)
            _reset(target[1])
            await self._notify()
            return
        conn = _Connection(self, (reader, writer), target)
        self._connections.add(conn)
        self.accepted += 1
        await self._notify()
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            await self._notify()

    def __repr__(self) -> str:
        state = "blocked" if self.refusing else "open"
        if self._gates and not all(g.is_set() for g in self._gates.values()):
            state = "blackholed " + ",".join(d for d, g in self._gates.items() if not g.is_set())
        return f"<Relay {self.name} {self.address} {state} active={self.active}>"


class RelayMesh:
    """A relay on every directed link of a cluster: dialer i reaches member j via (i, j).

    `targets` maps each member to the (host, port) it really listens on. `dialers` are the
    names that dial members (the members themselves by default; add e.g. "client" to
    route a client through relays too). `address(i, j)` is what i must dial to reach j:
    for member i, j's address is the relay (i, j) and its own is its real address.
    """

    def __init__(
        self,
        targets: Mapping[Hashable, tuple[str, int]],
        dialers: Iterable[Hashable] | None = None,
        *,
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.targets = dict(targets)
        self.dialers = list(self.targets if dialers is None else dialers)
        self.listen_host = listen_host
        self.relays: dict[tuple[Hashable, Hashable], Relay] = {}

    async def start(self) -> RelayMesh:
        try:
            for i in self.dialers:
                for j, (host, port) in self.targets.items():
                    if i == j:
                        continue
                    relay = Relay(host, port, listen_host=self.listen_host, name=f"{i}->{j}")
                    self.relays[(i, j)] = await relay.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.relays.values()), return_exceptions=True)

    async def __aenter__(self) -> RelayMesh:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def link(self, i: Hashable, j: Hashable) -> Relay:
        return self.relays[(i, j)]

    def address(self, i: Hashable, j: Hashable) -> tuple[str, int]:
        if i == j:
            return self.targets[j]
        return (self.listen_host, self.relays[(i, j)].port)

    def addresses_for(self, i: Hashable) -> dict[Hashable, tuple[str, int]]:
        """What dialer i must use for every member."""
        return {j: self.address(i, j) for j in self.targets}

    # ---- faults ----

    async def partition(
        self,
        side_a: Iterable[Hashable],
        side_b: Iterable[Hashable],
        *,
        symmetric: bool = True,
        mode: str = "blackhole",
    ) -> None:
        """Cut the links between `side_a` and `side_b`.

        symmetric: nothing crosses in either direction. `mode` is "blackhole" (bytes are
        held, as when packets are dropped) or "block" (connections are reset and refused).

        symmetric=False: only what side A sends to side B is lost, side B still reaches
        side A. That is: on the links A dials to B, requests are held (forward); on the
        links B dials to A, A's replies are held (backward). Always a blackhole (a reset
        would cut both directions).
        """
        a, b = list(side_a), list(side_b)
        if mode not in ("blackhole", "block"):
            raise ValueError(f"mode must be 'blackhole' or 'block', not {mode!r}")
        for x in a:
            for y in b:
                ab, ba = self.relays.get((x, y)), self.relays.get((y, x))
                if symmetric:
                    for relay in (ab, ba):
                        if relay is None:
                            continue
                        if mode == "block":
                            await relay.block()
                        else:
                            await relay.blackhole()
                else:
                    if ab is not None:
                        await ab.blackhole(forward=True, backward=False)
                    if ba is not None:
                        await ba.blackhole(forward=False, backward=True)

    async def isolate(self, member: Hashable, *, symmetric: bool = True, mode: str = "blackhole"):
        """Partition one member (or dialer) from everyone else."""
        others = [m for m in {*self.targets, *self.dialers} if m != member]
        await self.partition([member], others, symmetric=symmetric, mode=mode)

    async def heal(self) -> None:
        """Unblock every link."""
        for relay in self.relays.values():
            await relay.unblock()

    async def set_delay(
        self, seconds: float, links: Iterable[tuple[Hashable, Hashable]] | None = None
    ) -> None:
        for key in self.relays if links is None else links:
            await self.relays[key].set_delay(seconds)


# ---- the same from a thread ----------------------------------------------------------------


class LoopThread:
    """An asyncio event loop running in a daemon thread; `run(coro)` waits for its result."""

    def __init__(self, name: str = "relay-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class ThreadedRelay:
    """A `Relay` on its own loop thread, with synchronous methods."""

    def __init__(self, target_host: str, target_port: int, **kwargs: Any) -> None:
        self._thread = LoopThread("relay")
        self.relay = Relay(target_host, target_port, **kwargs)
        try:
            self._thread.run(self.relay.start())
        except BaseException:
            self._thread.close()
            raise

    @property
    def port(self) -> int:
        return self.relay.port

    @property
    def address(self) -> str:
        return self.relay.address

    @property
    def active(self) -> int:
        return self.relay.active

    def block(self) -> None:
        self._thread.run(self.relay.block())

    def blackhole(self, forward: bool = True, backward: bool = True) -> None:
        self._thread.run(self.relay.blackhole(forward, backward))

    def unblock(self) -> None:
        self._thread.run(self.relay.unblock())

    def set_delay(self, seconds: float) -> None:
        self._thread.run(self.relay.set_delay(seconds))

    def reset_connections(self) -> None:
        self._thread.run(self.relay.reset_connections())

    def wait_until(self, predicate: Callable[[Relay], bool], timeout: float = 10.0) -> None:
        self._thread.run(self.relay.wait_until(predicate, timeout), timeout + 5)

    def close(self) -> None:
        try:
            self._thread.run(self.relay.stop())
        finally:
            self._thread.close()

    def __enter__(self) -> ThreadedRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadedRelayMesh:
    """A `RelayMesh` on its own loop thread, with synchronous methods.

    with ThreadedRelayMesh({"n0": ("127.0.0.1", p0), ...}) as mesh:
        peers_for_n0 = mesh.addresses_for("n0")   # start n0 with these
        mesh.isolate("n0")
        mesh.heal()
    """

    def __init__(
        self,
        targets: Mapping[Hashable, tuple[str, int]],
        dialers: Iterable[Hashable] | None = None,
        **kwargs: Any,
    ) -> None:
        self._thread = LoopThread("relay-mesh")
        self.mesh = RelayMesh(targets, dialers, **kwargs)
        try:
            self._thread.run(self.mesh.start())
        except BaseException:
            self._thread.close()
            raise

    def link(self, i: Hashable, j: Hashable) -> Relay:
        """The async relay (read its counters; call its methods through `call`)."""
        return self.mesh.link(i, j)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run any coroutine (e.g. `mesh.link(0, 1).blackhole(backward=False)`) on the loop."""
        return self._thread.run(coro, timeout)

    def address(self, i: Hashable, j: Hashable) -> tuple[str, int]:
        return self.mesh.address(i, j)

    def addresses_for(self, i: Hashable) -> dict[Hashable, tuple[str, int]]:
        return self.mesh.addresses_for(i)

    def partition(
        self,
        side_a: Iterable[Hashable],
        side_b: Iterable[Hashable],
        *,
        symmetric: bool = True,
        mode: str = "blackhole",
    ) -> None:
        self._thread.run(
            self.mesh.partition(list(side_a), list(side_b), symmetric=symmetric, mode=mode)
        )

    def isolate(self, member: Hashable, *, symmetric: bool = True, mode: str = "blackhole"):
        self._thread.run(self.mesh.isolate(member, symmetric=symmetric, mode=mode))

    def heal(self) -> None:
        self._thread.run(self.mesh.heal())

    def set_delay(
        self, seconds: float, links: Iterable[tuple[Hashable, Hashable]] | None = None
    ) -> None:
        self._thread.run(self.mesh.set_delay(seconds, None if links is None else list(links)))

    def close(self) -> None:
        try:
            self._thread.run(self.mesh.stop())
        finally:
            self._thread.close()

    def __enter__(self) -> ThreadedRelayMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
