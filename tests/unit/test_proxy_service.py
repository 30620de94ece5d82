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

    # consumption
    popped: list = []  # noqa: RUF012 - set per test
    orderly = False

    async def is_orderly_group(self, group, topic):
        return self.orderly

    async def pop(self, req):
        self.pops = [*getattr(self, "pops", []), req]
        return list(self.popped)

    async def ack(self, group, topic, handle):
        self.acked = [*getattr(self, "acked", []), handle]

    async def change_invisible(self, group, topic, handle, invisible_ms):
        return handle.renewed(handle.info.pop_time + 1, invisible_ms, handle.info.revive_qid)

    async def forward_to_dlq(self, group, topic, handle, message_id):
        self.dlq = [*getattr(self, "dlq", []), (handle, message_id)]


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
        svc.AckMessageRequest(
            group=pb.Resource(name="G"),
            topic=pb.Resource(name="T"),
            entries=[svc.AckMessageEntry(message_id="m", receipt_handle="r")],
        )
    )
    assert ack.status.code == Code.INVALID_RECEIPT_HANDLE and ack.entries[0].receipt_handle == "r"
    assert "8 or 9" in ack.entries[0].status.message
    receive = stub.ReceiveMessage(
        svc.ReceiveMessageRequest(
            group=pb.Resource(name="G"),
            message_queue=pb.MessageQueue(topic=pb.Resource(name="T"), id=-1),
        )
    )
    replies = [r async for r in receive]
    assert len(replies) == 1 and replies[0].status.code == Code.ILLEGAL_INVISIBLE_TIME
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


def _popped(offset=7, reconsume=0, pop_time=1_000):
    from ledgermq.common.pop_handle import ExtraInfo
    from ledgermq.proxy.backend import PoppedMessage
    from ledgermq.proxy.receipt import ReceiptHandle

    msg = MessageExt(
        topic="T",
        body=b"payload",
        properties={"UNIQ_KEY": f"ID{offset}", "TAGS": "a", "__SHARDINGKEY": "g1"},
        queue_id=2,
        queue_offset=offset,
        commit_log_offset=4096,
        reconsume_times=reconsume,
        born_host=("127.0.0.1", 1),
        store_host=("127.0.0.1", 2),
    )
    handle = ReceiptHandle(ExtraInfo(offset, pop_time, 30_000, 3, "0", "broker-a", 2, offset), 4096)
    return PoppedMessage(msg, handle)


def _receive_request(**kw):
    from google.protobuf.duration_pb2 import Duration

    req = svc.ReceiveMessageRequest(
        group=pb.Resource(name="G"),
        message_queue=pb.MessageQueue(
            topic=pb.Resource(name="T"), id=3, broker=pb.Broker(name="broker-a")
        ),
        batch_size=8,
        long_polling_timeout=Duration(seconds=5),
        **kw,
    )
    return req


async def test_receive_streams_status_timestamp_then_messages(proxy):
    import hashlib

    from google.protobuf.duration_pb2 import Duration

    stub, backend, _, _ = proxy
    backend.popped = [_popped(7), _popped(8, reconsume=2)]
    backend.orderly = True
    req = _receive_request(invisible_duration=Duration(seconds=15), attempt_id="att-1")
    replies = [r async for r in stub.ReceiveMessage(req, metadata=META, timeout=30)]
    kinds = [r.WhichOneof("content") for r in replies]
    assert kinds == ["status", "delivery_timestamp", "message", "message"]
    assert replies[0].status.code == Code.OK
    (pop,) = backend.pops
    assert (pop.broker_name, pop.invisible_ms, pop.poll_ms, pop.batch_size) == (
        "broker-a",
        15_000,
        5_000,
        8,
    )
    assert pop.order and pop.attempt_id == "att-1"
    sp = replies[3].message.system_properties
    assert sp.receipt_handle == "8 1000 30000 3 0 broker-a 2 8 4096"
    assert sp.delivery_attempt == 3 and sp.message_group == "g1" and sp.message_id == "ID8"
    assert sp.body_digest.type == pb.MD5
    assert sp.body_digest.checksum == hashlib.md5(b"payload").hexdigest().upper()
    assert sp.body_encoding == pb.IDENTITY and sp.queue_offset == 8


async def test_receive_without_messages_is_one_not_found_status(proxy):
    from google.protobuf.duration_pb2 import Duration

    stub, backend, _, _ = proxy
    backend.popped = []
    req = _receive_request(invisible_duration=Duration(seconds=15))
    replies = [r async for r in stub.ReceiveMessage(req, metadata=META, timeout=30)]
    assert [r.status.code for r in replies] == [Code.MESSAGE_NOT_FOUND]


async def test_push_receive_is_renewed_and_ack_uses_the_newest_handle(proxy):
    stub, backend, service, _ = proxy
    backend.popped = [_popped(7, pop_time=int(__import__("time").time() * 1000) - 25_000)]
    req = _receive_request(auto_renew=True)
    replies = [r async for r in stub.ReceiveMessage(req, metadata=META, timeout=30)]
    handle = replies[2].message.system_properties.receipt_handle
    assert backend.pops[-1].invisible_ms == ProxyConfig().default_invisible_time_mills
    assert len(service.renewer) == 1
    assert await service.renewer.renew_due() == 1  # 5 s left, inside renewAhead (10 s)
    ack = await stub.AckMessage(
        svc.AckMessageRequest(
            group=pb.Resource(name="G"),
            topic=pb.Resource(name="T"),
            entries=[svc.AckMessageEntry(message_id="ID7", receipt_handle=handle)],
        ),
        metadata=META,
    )
    assert ack.status.code == Code.OK and ack.entries[0].receipt_handle == handle
    (acked,) = backend.acked
    assert acked.encode() != handle and acked.info.invisible_time == 60_000
    assert len(service.renewer) == 0


async def test_change_invisible_returns_a_new_handle_and_dlq_forwards(proxy):
    from google.protobuf.duration_pb2 import Duration

    stub, backend, _, _ = proxy
    handle = _popped(7).handle.encode()
    changed = await stub.ChangeInvisibleDuration(
        svc.ChangeInvisibleDurationRequest(
            group=pb.Resource(name="G"),
            topic=pb.Resource(name="T"),
            receipt_handle=handle,
            invisible_duration=Duration(seconds=12),
            message_id="ID7",
        ),
        metadata=META,
    )
    assert changed.status.code == Code.OK
    assert changed.receipt_handle and changed.receipt_handle != handle
    assert changed.receipt_handle.split(" ")[2] == "12000"
    fwd = await stub.ForwardMessageToDeadLetterQueue(
        svc.ForwardMessageToDeadLetterQueueRequest(
            group=pb.Resource(name="G"),
            topic=pb.Resource(name="T"),
            receipt_handle=changed.receipt_handle,
            message_id="ID7",
            delivery_attempt=17,
            max_delivery_attempts=16,
        ),
        metadata=META,
    )
    assert fwd.status.code == Code.OK and backend.dlq[0][1] == "ID7"
    bad = await stub.ChangeInvisibleDuration(
        svc.ChangeInvisibleDurationRequest(
            group=pb.Resource(name="G"),
            topic=pb.Resource(name="T"),
            receipt_handle="garbage",
            invisible_duration=Duration(seconds=12),
        ),
        metadata=META,
    )
    assert bad.status.code == Code.INVALID_RECEIPT_HANDLE and "receipt handle" in bad.status.message
