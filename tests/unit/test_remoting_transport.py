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


class _PausableTransport(_RecordingTransport):
    """Records reads paused and resumed, and closes on request."""

    def __init__(self):
        super().__init__()
        self.reading = True
        self.pauses = 0
        self.resumes = 0
        self.closing = False

    def pause_reading(self):
        assert self.reading, "paused twice without a resume in between"
        self.reading = False
        self.pauses += 1

    def resume_reading(self):
        assert not self.reading, "resumed while reading"
        assert not self.closing, "resumed a closed transport"
        self.reading = True
        self.resumes += 1

    def is_closing(self):
        return self.closing

    def close(self):
        self.closing = True


def _burst(n: int, body_size: int) -> bytes:
    return b"".join(
        encode_command(RemotingCommand(code=1, opaque=i, body=bytes(body_size))) for i in range(n)
    )


async def test_a_burst_read_at_once_is_handled_a_slice_per_loop_iteration():
    # The loop reads a socket until it is drained, so one read can bring a producer's
    # whole window. Handled in slices, what the first requests start (here: a callback
    # they schedule, in a broker the Raft driver replicating them) runs before the rest
    # are decoded, and nothing more is read until the burst is done.
    from ledgermq.remoting.connection import RemotingConnection

    loop = asyncio.get_running_loop()
    order: list[object] = []

    def handler(conn, cmd):
        order.append(cmd.opaque)
        if cmd.opaque == 0:
            loop.call_soon(order.append, "work started by request 0")
        return cmd.make_response(0)

    dispatcher = Dispatcher()
    dispatcher.register(1, handler)
    conn = RemotingConnection(dispatcher, read_slice_bytes=64 * 1024)
    transport = _PausableTransport()
    conn.connection_made(transport)

    conn.data_received(_burst(10, 20 * 1024))
    assert order == [0, 1, 2, 3]  # 80 KiB: the first request past 64 KiB ends the slice
    assert not transport.reading
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == [0, 1, 2, 3, "work started by request 0", 4, 5, 6, 7, 8, 9]
    assert (transport.pauses, transport.resumes) == (1, 1)
    assert transport.reading
    replies = [c.opaque for w in transport.writes for c in FrameDecoder().feed(w)]
    assert replies == list(range(10))


async def test_without_a_slice_limit_a_burst_is_handled_in_one_go():
    from ledgermq.remoting.connection import RemotingConnection

    handled: list[int] = []
    dispatcher = Dispatcher()
    dispatcher.register(1, lambda conn, cmd: handled.append(cmd.opaque))
    conn = RemotingConnection(dispatcher, read_slice_bytes=0)
    transport = _PausableTransport()
    conn.connection_made(transport)
    conn.data_received(_burst(10, 20 * 1024))
    assert handled == list(range(10))
    assert transport.pauses == 0


async def test_grouped_requests_keep_their_order_across_slices():
    # A run of groupable requests (pipelined sends) is cut at the slice boundary into
    # several groups; each request is still answered once, in arrival order.
    from ledgermq.remoting.connection import RemotingConnection

    groups: list[list[int]] = []

    def group(conn, cmds):
        groups.append([c.opaque for c in cmds])
        return [c.make_response(0) for c in cmds]

    dispatcher = Dispatcher()
    dispatcher.register(1, lambda conn, cmd: cmd.make_response(0), group=group)
    conn = RemotingConnection(dispatcher, read_slice_bytes=64 * 1024)
    transport = _PausableTransport()
    conn.connection_made(transport)
    conn.data_received(_burst(10, 30 * 1024))
    for _ in range(5):
        await asyncio.sleep(0)
    # (a run of one goes to the plain handler)
    assert groups == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    replies = [c.opaque for w in transport.writes for c in FrameDecoder().feed(w)]
    assert replies == list(range(10))
    assert transport.reading


async def test_closing_in_the_middle_of_a_burst_drops_the_rest_and_reads_no_more():
    from ledgermq.remoting.connection import RemotingConnection

    handled: list[int] = []
    conn_box: list[RemotingConnection] = []

    def handler(conn, cmd):
        handled.append(cmd.opaque)
        if cmd.opaque == 5:
            conn_box[0].close()
        return None

    dispatcher = Dispatcher()
    dispatcher.register(1, handler)
    conn = RemotingConnection(dispatcher, read_slice_bytes=16 * 1024)
    conn_box.append(conn)
    transport = _PausableTransport()
    conn.connection_made(transport)
    conn.data_received(_burst(10, 16 * 1024))
    for _ in range(10):
        await asyncio.sleep(0)
    assert handled == [0, 1, 2, 3, 4, 5]
    assert transport.resumes == 0  # _PausableTransport also refuses a resume once closed
