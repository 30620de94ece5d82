"""The producer compresses bodies of at least `compress_over` bytes with zlib and marks
them with sysFlag bit 0x1; smaller bodies go as they are.

What the producer puts on the wire is captured by a tiny fake NameServer + broker on a
real RemotingServer (loopback socket): it answers the route lookup and records every
SEND_MESSAGE_V2 request it receives.
"""

from __future__ import annotations

import zlib

import pytest

from ledgermq.client.message import Message
from ledgermq.client.producer import Producer
from ledgermq.common import fastjson
from ledgermq.common.message import SYSFLAG_COMPRESSED, decode_properties
from ledgermq.common.route_data import BrokerData, QueueData, TopicRouteData
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.connection import Dispatcher
from ledgermq.remoting.server import RemotingServer

TOPIC = "ZTopic"
THRESHOLD = 1000


class FakeBroker:
    """NameServer and broker in one: one route, one queue, every SEND recorded."""

    def __init__(self) -> None:
        self.sends: list[RemotingCommand] = []
        dispatcher = Dispatcher()
        dispatcher.register(RequestCode.GET_ROUTEINFO_BY_TOPIC, self._route)
        dispatcher.register(RequestCode.SEND_MESSAGE_V2, self._send)
        for code in (RequestCode.HEART_BEAT, RequestCode.UNREGISTER_CLIENT):
            dispatcher.register(code, lambda conn, cmd: cmd.make_response(ResponseCode.SUCCESS))
        self.server = RemotingServer(dispatcher, "127.0.0.1", 0, name="fake-broker")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def _route(self, conn, cmd: RemotingCommand) -> RemotingCommand:
        if cmd.ext_fields.get("topic") != TOPIC:
            return cmd.make_response(ResponseCode.TOPIC_NOT_EXIST, "no route")
        route = TopicRouteData(
            queue_datas=[QueueData("fake-b", 1, 1, 6)],
            broker_datas=[BrokerData("c", "fake-b", {0: self.addr})],
        )
        return cmd.make_response(ResponseCode.SUCCESS, body=fastjson.encode(route))

    def _send(self, conn, cmd: RemotingCommand) -> RemotingCommand:
        self.sends.append(cmd)
        return cmd.make_response(
            ResponseCode.SUCCESS,
            ext_fields={"msgId": "00" * 16, "queueId": "0", "queueOffset": str(len(self.sends))},
        )


@pytest.fixture
async def fake():
    broker = FakeBroker()
    await broker.server.start()
    try:
        yield broker
    finally:
        await broker.server.stop()


@pytest.fixture
async def producer(fake):
    p = Producer("zpg", fake.addr, compress_over=THRESHOLD)
    await p.start()
    try:
        yield p
    finally:
        await p.shutdown()


def _body(size: int) -> bytes:
    # Compressible, yet not all one byte, so a wrong inflate would show.
    return bytes(i % 7 + 65 for i in range(size))


@pytest.mark.parametrize("size", [THRESHOLD, THRESHOLD + 1, 20 * THRESHOLD])
async def test_body_at_or_over_threshold_is_sent_zlib_compressed(fake, producer, size):
    body = _body(size)
    await producer.send(Message(TOPIC, body, tags="t"))
    (req,) = fake.sends
    sys_flag = int(req.ext_fields["f"])
    assert sys_flag & SYSFLAG_COMPRESSED
    assert len(req.body) < size
    assert zlib.decompress(req.body) == body
    # Properties are not compressed: the broker reads tags and keys from the header.
    assert decode_properties(req.ext_fields["i"])["TAGS"] == "t"


@pytest.mark.parametrize("size", [1, THRESHOLD - 1])
async def test_body_under_threshold_is_sent_as_is(fake, producer, size):
    body = _body(size)
    await producer.send(Message(TOPIC, body))
    (req,) = fake.sends
    assert int(req.ext_fields["f"]) & SYSFLAG_COMPRESSED == 0
    assert req.body == body


async def test_send_async_compresses_the_same_way(fake, producer):
    body = _body(2 * THRESHOLD)
    await producer.send_async(Message(TOPIC, body))
    await producer.send(Message(TOPIC, b"small"))
    assert [int(r.ext_fields["f"]) & SYSFLAG_COMPRESSED for r in fake.sends] == [1, 0]
    assert zlib.decompress(fake.sends[0].body) == body
    assert fake.sends[1].body == b"small"
