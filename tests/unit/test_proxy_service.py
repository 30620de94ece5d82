"""MessagingService over a real in-process gRPC channel, with a fake backend."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from ledgermq.client.route import TopicRoute
from ledgermq.common.message import MessageExt, MessageQueue
from ledgermq.common.route_data import BrokerData, QueueData
from ledgermq.proxy.activities.route import AdvertisedEndpoint
from ledgermq.proxy.backend import SendOutcome
from ledgermq.proxy.config import ProxyConfig
from ledgermq.proxy.protocol import definition_pb2 as pb
from ledgermq.proxy.protocol import service_pb2 as svc
from ledgermq.proxy.protocol import service_pb2_grpc as svc_grpc
from ledgermq.proxy.service import MessagingService
from ledgermq.proxy.status import Code, ProxyError
from ledgermq.proxy.txid import TransactionRef

META = (("x-mq-client-id", "host@1@0@abc"), ("x-mq-language", "PYTHON"), ("authorization", "x"))


class FakeBackend:
    def __init__(self) -> None:
        self.sent = []
        self.ended = []
        self.published: set[str] = set()
        self.on_transaction_check = None
        self.attributes = {"Fifo": {"message.type": "FIFO"}}

    async def route(self, topic):
        if topic == "Missing":
            raise ProxyError(Code.TOPIC_NOT_FOUND, "topic 'Missing' does not exist")
        return TopicRoute(
            queue_datas=[QueueData("broker-a", 4, 4, 6)],
            broker_datas=[BrokerData("C", "broker-a", {0: "127.0.0.1:10911"})],
        )

    async def topic_attributes(self, topic):
        return self.attributes.get(topic, {})

    async def send(self, out, timeout=None):
        self.sent.append(out)
        return SendOutcome(Code.OK, MessageQueue(out.topic, "broker-a", 1), 41, "AB" * 16)

    async def end_transaction(self, ref, **kwargs):
        self.ended.append((ref, kwargs))

    def publish_topics(self, topics):
        self.published |= topics


@pytest.fixture
async def proxy():
    backend = FakeBackend()
    server = grpc.aio.server()
    service = MessagingService(ProxyConfig(), backend, AdvertisedEndpoint("", 0))  # type: ignore[arg-type]
    svc_grpc.add_MessagingServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    service.route._advertise.port = port
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield svc_grpc.MessagingServiceStub(channel), backend, service, port
    finally:
        await channel.close()
        await server.stop(0)


def _endpoints(port):
    return pb.Endpoints(scheme=pb.IPv4, addresses=[pb.Address(host="127.0.0.1", port=port)])


def _message(topic="T", **sp):
    msg = pb.Message(topic=pb.Resource(name=topic), body=b"hi")
    msg.system_properties.message_id = "01ID"
    msg.system_properties.message_type = sp.pop("message_type", pb.NORMAL)
    for k, v in sp.items():
        setattr(msg.system_properties, k, v)
    return msg


async def test_query_route_advertises_the_proxy(proxy):
    stub, _, _, port = proxy
    resp = await stub.QueryRoute(
        svc.QueryRouteRequest(topic=pb.Resource(name="T"), endpoints=_endpoints(port)),
        metadata=META,
    )
    assert resp.status.code == Code.OK
    assert [q.id for q in resp.message_queues] == [0, 1, 2, 3]
    assert resp.message_queues[0].broker.endpoints.addresses[0].port == port
    missing = await stub.QueryRoute(
        svc.QueryRouteRequest(topic=pb.Resource(name="Missing"), endpoints=_endpoints(port))
    )
    assert missing.status.code == Code.TOPIC_NOT_FOUND and "Missing" in missing.status.message


async def test_send_returns_one_entry_per_message(proxy):
    stub, backend, _, _ = proxy
    resp = await stub.SendMessage(svc.SendMessageRequest(messages=[_message()]), metadata=META)
    assert resp.status.code == Code.OK and len(resp.entries) == 1
    assert (resp.entries[0].message_id, resp.entries[0].offset) == ("01ID", 41)
    assert backend.sent[0].properties["UNIQ_KEY"] == "01ID"

    wrong_type = await stub.SendMessage(svc.SendMessageRequest(messages=[_message("Fifo")]))
    assert wrong_type.status.code == Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE
    assert len(wrong_type.entries) == 1 and "FIFO" in wrong_type.entries[0].status.message

    empty = await stub.SendMessage(svc.SendMessageRequest())
    assert empty.status.code == Code.MESSAGE_CORRUPTED


async def test_transaction_send_and_end(proxy):
    stub, backend, _, _ = proxy
    backend.send = _tx_send(backend)
    resp = await stub.SendMessage(
        svc.SendMessageRequest(messages=[_message(message_type=pb.TRANSACTION)]), metadata=META
    )
    txid = resp.entries[0].transaction_id
    assert TransactionRef.decode(txid).broker_name == "broker-a"
    end = await stub.EndTransaction(
        svc.EndTransactionRequest(
            topic=pb.Resource(name="T"),
            message_id="01ID",
            transaction_id=txid,
            resolution=pb.COMMIT,
            source=pb.SOURCE_CLIENT,
        )
    )
    assert end.status.code == Code.OK
    _ref, kwargs = backend.ended[0]
    assert kwargs == {"topic": "T", "message_id": "01ID", "commit": True, "from_check": False}
    bad = await stub.EndTransaction(
        svc.EndTransactionRequest(
            topic=pb.Resource(name="T"),
            message_id="01ID",
            transaction_id="nope",
            resolution=pb.ROLLBACK,
        )
    )
    assert bad.status.code == Code.INVALID_TRANSACTION_ID


def _tx_send(backend):
    async def send(out, timeout=None):
        backend.sent.append(out)
        ref = TransactionRef("broker-a", 1234, 5, out.message_id)
        return SendOutcome(Code.OK, MessageQueue(out.topic, "broker-a", 0), 5, "", ref.encode())

    return send


async def test_telemetry_answers_settings_stays_open_and_can_push(proxy):
    stub, backend, service, port = proxy
    outgoing: asyncio.Queue = asyncio.Queue()
    settings = pb.Settings(client_type=pb.PRODUCER, access_point=_endpoints(port))
    settings.publishing.topics.add().name = "T"
    await outgoing.put(svc.TelemetryCommand(settings=settings))

    async def requests():
        while (item := await outgoing.get()) is not None:
            yield item

    call = stub.Telemetry(requests(), metadata=META)
    first = await call.read()
    assert first.status.code == Code.OK and first.settings.publishing.max_body_size > 0
    assert first.settings.backoff_policy.max_attempts == 3
    assert backend.published == {"T"}

    # The server pushes a transaction check to the producer of the topic.
    stored = MessageExt(topic="T", body=b"b", properties={"UNIQ_KEY": "01ID", "TRAN_MSG": "true"})
    service.transaction.on_transaction_check("T", stored, TransactionRef("broker-a", 1, 2, "x"))
    pushed = await asyncio.wait_for(call.read(), 5)
    cmd = pushed.recover_orphaned_transaction_command
    assert cmd.message.system_properties.message_id == "01ID"
    assert TransactionRef.decode(cmd.transaction_id).commit_log_offset == 1

    await outgoing.put(None)  # the client half-closes: the server ends its side
    assert await asyncio.wait_for(call.read(), 5) == grpc.aio.EOF
    assert not service.sessions.sessions["host@1@0@abc"].connected


async def test_telemetry_without_client_id_is_refused(proxy):
    stub, *_ = proxy

    async def requests():
        yield svc.TelemetryCommand(settings=pb.Settings(client_type=pb.PRODUCER))

    replies = [r async for r in stub.Telemetry(requests())]
    assert [r.status.code for r in replies] == [Code.CLIENT_ID_REQUIRED]


async def test_heartbeat_termination_and_unwired_rpcs(proxy):
    stub, _, service, _ = proxy
    hb = await stub.Heartbeat(svc.HeartbeatRequest(client_type=pb.PRODUCER), metadata=META)
    assert hb.status.code == Code.OK and "host@1@0@abc" in service.sessions.sessions
    bye = await stub.NotifyClientTermination(svc.NotifyClientTerminationRequest(), metadata=META)
    assert bye.status.code == Code.OK and "host@1@0@abc" not in service.sessions.sessions
    bad_group = await stub.Heartbeat(
        svc.HeartbeatRequest(group=pb.Resource(name="bad group"), client_type=pb.PUSH_CONSUMER)
    )
    assert bad_group.status.code == Code.ILLEGAL_CONSUMER_GROUP

    ack = await stub.AckMessage(
        svc.AckMessageRequest(entries=[svc.AckMessageEntry(message_id="m", receipt_handle="r")])
    )
    assert ack.status.code == Code.NOT_IMPLEMENTED and ack.entries[0].receipt_handle == "r"
    receive = stub.ReceiveMessage(
        svc.ReceiveMessageRequest(
            group=pb.Resource(name="G"),
            message_queue=pb.MessageQueue(topic=pb.Resource(name="T"), id=-1),
        )
    )
    replies = [r async for r in receive]
    assert len(replies) == 1 and replies[0].status.code == Code.NOT_IMPLEMENTED
    assert "POP" in replies[0].status.message
    assignment = await stub.QueryAssignment(
        svc.QueryAssignmentRequest(
            topic=pb.Resource(name="T"), group=pb.Resource(name="G"), endpoints=_endpoints(1)
        )
    )
    assert assignment.status.code == Code.OK
    assert [a.message_queue.id for a in assignment.assignments] == [-1]


def test_idle_sessions_expire_but_connected_ones_stay():
    from ledgermq.proxy.sessions import ClientSessions

    now = [0.0]
    sessions = ClientSessions(clock=lambda: now[0])
    sessions.touch("gone")
    live, _outbox = sessions.open_stream("live")
    now[0] = 500.0
    assert sessions.expire(120.0) == ["gone"]
    assert set(sessions.sessions) == {"live"} and live.connected
