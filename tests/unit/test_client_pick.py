"""Producer queue selection: round robin, and a retry avoids the broker that just failed
(Java's MQFaultStrategy without latency fault tolerance: selectOneMessageQueue(last))."""

from __future__ import annotations

import pytest

from ledgermq.client.message import Message, MessageQueue
from ledgermq.client.producer import Producer
from ledgermq.common import fastjson
from ledgermq.common.route_data import BrokerData, QueueData, TopicRouteData
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.connection import Dispatcher
from ledgermq.remoting.server import RemotingServer

T = "PickT"


def queues(layout: dict[str, int]) -> list[MessageQueue]:
    return [MessageQueue(T, b, q) for b, n in layout.items() for q in range(n)]


def fresh_producer() -> Producer:
    # _pick needs no connection; the producer is never started.
    return Producer("pick-group", "127.0.0.1:1")


def test_round_robin_visits_every_queue_in_turn():
    p = fresh_producer()
    qs = queues({"a": 2, "b": 2})
    picks = [p._pick(T, qs, None) for _ in range(8)]
    assert picks == qs + qs


@pytest.mark.parametrize("layout", [{"a": 2, "b": 2}, {"a": 3, "b": 1}, {"a": 1, "b": 1, "c": 4}])
def test_avoided_broker_is_never_picked_from_any_position(layout):
    qs = queues(layout)
    for avoid in layout:
        for advance in range(len(qs)):
            p = fresh_producer()
            for _ in range(advance):
                p._pick(T, qs, None)
            mq = p._pick(T, qs, avoid)
            assert mq.broker_name != avoid, (avoid, advance, mq)


def test_avoiding_moves_the_rotation_past_the_chosen_queue():
    p = fresh_producer()
    qs = queues({"a": 2, "b": 2})
    assert p._pick(T, qs, None) == qs[0]  # a/0
    assert p._pick(T, qs, "a") == qs[2]  # a/1 skipped: b/0
    assert p._pick(T, qs, None) == qs[3]  # continues after b/0


def test_when_only_the_avoided_broker_has_queues_it_is_used_anyway():
    p = fresh_producer()
    qs = queues({"a": 3})
    picks = [p._pick(T, qs, "a") for _ in range(3)]
    assert picks == qs  # still rotates instead of failing or sticking to one queue


def test_rotation_is_per_topic():
    p = fresh_producer()
    qs = queues({"a": 2})
    other = [MessageQueue("Other", "a", 0), MessageQueue("Other", "a", 1)]
    assert p._pick(T, qs, None) == qs[0]
    assert p._pick("Other", other, None) == other[0]
    assert p._pick(T, qs, None) == qs[1]


# --- through send(): the retry goes to the other broker ----------------------------------
class FakeBrokers:
    """One NameServer and two brokers; broker 'a' fails every send with SYSTEM_ERROR."""

    def __init__(self) -> None:
        self.sends: list[str] = []  # broker names, in the order they received a send
        self.ns = self._server({RequestCode.GET_ROUTEINFO_BY_TOPIC: self._route})
        self.brokers = {
            name: self._server({RequestCode.SEND_MESSAGE_V2: self._sender(name)})
            for name in ("a", "b")
        }

    @staticmethod
    def _server(handlers) -> RemotingServer:
        d = Dispatcher()
        for code, handler in handlers.items():
            d.register(code, handler)
        for code in (RequestCode.HEART_BEAT, RequestCode.UNREGISTER_CLIENT):
            d.register(code, lambda conn, cmd: cmd.make_response(ResponseCode.SUCCESS))
        return RemotingServer(d, "127.0.0.1", 0)

    def _route(self, conn, cmd: RemotingCommand) -> RemotingCommand:
        route = TopicRouteData(
            queue_datas=[QueueData(n, 2, 2, 6) for n in self.brokers],
            broker_datas=[
                BrokerData("c", n, {0: f"127.0.0.1:{s.port}"}) for n, s in self.brokers.items()
            ],
        )
        return cmd.make_response(ResponseCode.SUCCESS, body=fastjson.encode(route))

    def _sender(self, name: str):
        def handle(conn, cmd: RemotingCommand) -> RemotingCommand:
            self.sends.append(name)
            if name == "a":
                return cmd.make_response(ResponseCode.SYSTEM_ERROR, "broker a is failing")
            return cmd.make_response(
                ResponseCode.SUCCESS,
                ext_fields={"msgId": "00" * 16, "queueId": cmd.ext_fields["e"], "queueOffset": "0"},
            )

        return handle

    def all(self) -> list[RemotingServer]:
        return [self.ns, *self.brokers.values()]


async def test_send_retries_once_on_the_other_broker_after_a_retryable_error():
    fake = FakeBrokers()
    for s in fake.all():
        await s.start()
    producer = Producer("pick-group", f"127.0.0.1:{fake.ns.port}", retry_times=2)
    try:
        await producer.start()
        for _ in range(8):  # every rotation position, twice over
            fake.sends.clear()
            result = await producer.send(Message(T, b"x"))
            assert result.message_queue.broker_name == "b"
            # Either straight to b, or a once and then b: never a twice.
            assert fake.sends in (["b"], ["a", "b"]), fake.sends
    finally:
        await producer.shutdown()
        for s in fake.all():
            await s.stop()
