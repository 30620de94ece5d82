import asyncio
import struct

import pytest

from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import FrameDecoder, RemotingCommand, encode_command
from ledgermq.remoting.codes import ResponseCode, SerializeType
from ledgermq.remoting.connection import Dispatcher
from ledgermq.remoting.errors import RemotingError, RemotingTimeoutError
from ledgermq.remoting.server import RemotingServer


@pytest.fixture
async def server():
    dispatcher = Dispatcher()
    release = asyncio.Event()

    def echo(conn, cmd):
        return cmd.make_response(0, ext_fields={"echo": cmd.ext_fields.get("v", "")})

    async def slow(conn, cmd):
        await release.wait()
        return cmd.make_response(0, remark="released")

    def fail(conn, cmd):
        raise RemotingError(ResponseCode.TOPIC_NOT_EXIST, "topic X does not exist")

    dispatcher.register(1, echo)
    dispatcher.register(2, slow)
    dispatcher.register(4, fail)
    srv = RemotingServer(dispatcher, "127.0.0.1", 0, max_frame_size=4096)
    srv.release = release
    await srv.start()
    yield srv
    await srv.stop()


async def test_slow_request_does_not_block_later_requests_on_the_same_connection(server):
    client = RemotingClient()
    addr = f"127.0.0.1:{server.port}"
    slow = asyncio.ensure_future(client.invoke(addr, RemotingCommand(code=2), timeout=5))
    fast = await client.invoke(addr, RemotingCommand(code=1, ext_fields={"v": "x"}), timeout=5)
    assert fast.ext_fields == {"echo": "x"}
    assert not slow.done()
    server.release.set()
    assert (await slow).remark == "released"
    await client.close()


async def test_many_requests_in_flight_are_matched_by_opaque(server):
    client = RemotingClient()
    addr = f"127.0.0.1:{server.port}"
    replies = await asyncio.gather(
        *(
            client.invoke(addr, RemotingCommand(code=1, ext_fields={"v": str(i)}))
            for i in range(200)
        )
    )
    assert [r.ext_fields["echo"] for r in replies] == [str(i) for i in range(200)]
    await client.close()


async def test_unknown_code_names_the_code(server):
    client = RemotingClient()
    reply = await client.invoke(f"127.0.0.1:{server.port}", RemotingCommand(code=777))
    assert reply.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED
    assert "777" in reply.remark
    await client.close()


async def test_handler_error_becomes_error_reply(server):
    client = RemotingClient()
    reply = await client.invoke(f"127.0.0.1:{server.port}", RemotingCommand(code=4))
    assert reply.code == ResponseCode.TOPIC_NOT_EXIST
    assert reply.remark == "topic X does not exist"
    await client.close()


async def test_reply_uses_request_serialization(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    req = RemotingCommand(
        code=1, opaque=42, ext_fields={"v": "bin"}, serialize_type=SerializeType.ROCKETMQ
    )
    writer.write(encode_command(req))
    length = struct.unpack(">i", await reader.readexactly(4))[0]
    frame = await reader.readexactly(length)
    (reply,) = FrameDecoder().feed(struct.pack(">i", length) + frame)
    assert reply.serialize_type == SerializeType.ROCKETMQ
    assert reply.opaque == 42 and reply.is_response
    assert reply.ext_fields == {"echo": "bin"}
    writer.close()


async def test_oneway_gets_no_reply_and_timeout_is_reported(server):
    client = RemotingClient()
    addr = f"127.0.0.1:{server.port}"
    await client.invoke_oneway(addr, RemotingCommand(code=1))
    with pytest.raises(RemotingTimeoutError, match="within"):
        await client.invoke(addr, RemotingCommand(code=2), timeout=0.05)
    await client.close()


async def test_oversized_frame_closes_only_that_connection(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(struct.pack(">i", 10_000_000) + b"\0" * 64)
    assert await reader.read() == b""  # closed by the server
    client = RemotingClient()
    reply = await client.invoke(f"127.0.0.1:{server.port}", RemotingCommand(code=1))
    assert reply.code == 0
    await client.close()


async def test_malformed_header_gets_error_reply(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    raw = b'{"code":"x","opaque":5}'
    writer.write(struct.pack(">ii", 4 + len(raw), len(raw)) + raw)
    length = struct.unpack(">i", await reader.readexactly(4))[0]
    frame = await reader.readexactly(length)
    (reply,) = FrameDecoder().feed(struct.pack(">i", length) + frame)
    assert reply.code == ResponseCode.SYSTEM_ERROR and reply.opaque == 5
    assert "malformed" in reply.remark
    writer.close()


def test_transport_works_under_uvloop():
    # The servers run on uvloop (cli/runtime.py), whose transports are not
    # asyncio.Transport subclasses: an isinstance check once broke every connection.
    import uvloop

    async def scenario():
        dispatcher = Dispatcher()
        dispatcher.register(1, lambda conn, cmd: cmd.make_response(0, ext_fields=cmd.ext_fields))
        srv = RemotingServer(dispatcher, "127.0.0.1", 0)
        await srv.start()
        client = RemotingClient()
        try:
            replies = await asyncio.gather(
                *(
                    client.invoke(
                        f"127.0.0.1:{srv.port}", RemotingCommand(code=1, ext_fields={"i": str(i)})
                    )
                    for i in range(100)
                )
            )
            return [r.ext_fields["i"] for r in replies]
        finally:
            await client.close()
            await srv.stop()

    assert uvloop.run(scenario()) == [str(i) for i in range(100)]


class _RecordingTransport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data):
        self.writes.append(bytes(data))

    def is_closing(self):
        return False

    def get_extra_info(self, name, default=None):
        return default


async def test_frames_sent_in_one_loop_iteration_leave_in_bounded_writes():
    from ledgermq.remoting.connection import RemotingConnection

    conn = RemotingConnection(None)
    transport = _RecordingTransport()
    conn.connection_made(transport)
    for i in range(10):
        conn.send(RemotingCommand(code=1, opaque=i))
    assert transport.writes == []  # nothing leaves before the loop turns
    await asyncio.sleep(0)  # one loop iteration
    assert len(transport.writes) == 1
    assert [c.opaque for c in FrameDecoder().feed(transport.writes[0])] == list(range(10))

    transport.writes.clear()
    for i in range(100):
        conn.send(RemotingCommand(code=1, opaque=i))
    await asyncio.sleep(0)
    # A long burst is cut so the peer can start on the first frames early.
    assert 2 <= len(transport.writes) <= 5
    decoded = [c.opaque for w in transport.writes for c in FrameDecoder().feed(w)]
    assert decoded == list(range(100))


async def test_each_request_times_out_on_its_own_deadline(server):
    # One timer per connection serves every pending request: a short deadline armed
    # after a long one must still fire on time, and replies keep flowing afterwards.
    client = RemotingClient()
    addr = f"127.0.0.1:{server.port}"
    loop = asyncio.get_running_loop()
    slow_long = asyncio.ensure_future(client.invoke(addr, RemotingCommand(code=2), timeout=30))
    started = loop.time()
    with pytest.raises(RemotingTimeoutError, match=r"within 0\.100s"):
        await client.invoke(addr, RemotingCommand(code=2), timeout=0.1)
    assert 0.09 <= loop.time() - started < 1.0
    echo = await client.invoke(addr, RemotingCommand(code=1, ext_fields={"v": "after"}))
    assert echo.ext_fields == {"echo": "after"}
    assert not slow_long.done()
    server.release.set()
    assert (await slow_long).remark == "released"
    await client.close()


async def test_start_request_futures_leave_no_bookkeeping_behind(server):
    # The coroutine-free request path: a reply, a timeout and a cancelled caller each
    # remove their entry, so thousands of requests in flight never leak.
    client = RemotingClient()
    addr = f"127.0.0.1:{server.port}"
    conn = await client.connection(addr)
    replies = [
        conn.start_request(RemotingCommand(code=1, ext_fields={"v": str(i)}), 5) for i in range(50)
    ]
    assert [r.ext_fields["echo"] for r in await asyncio.gather(*replies)] == [
        str(i) for i in range(50)
    ]
    late = conn.start_request(RemotingCommand(code=2), 0.05)
    with pytest.raises(RemotingTimeoutError):
        await late
    cancelled = asyncio.ensure_future(conn.request(RemotingCommand(code=2), 30))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert conn._pending == {} and conn._deadlines == {}
    assert client.open_connection(addr) is conn
    await client.close()
    assert client.open_connection(addr) is None
