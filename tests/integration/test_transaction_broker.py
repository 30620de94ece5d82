"""Transactional messages on an in-process broker, driven over real sockets like a
remoting producer would: half message, END_TRANSACTION, check-back, parking."""

from __future__ import annotations

import json

import pytest

from ledgermq.broker.topics import TRANS_CHECK_MAX_TIME_TOPIC, TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC
from ledgermq.broker.transaction.records import TRANS_CONSUMER_GROUP
from ledgermq.common.message import decode_record, decode_records, parse_offset_msg_id
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.connection import Dispatcher
from tests.integration.test_broker import Harness, wait_until

pytestmark = pytest.mark.timeout(60)

TOPIC = "TxTopic"
PG = "TxGroup"
COMMIT, ROLLBACK, UNKNOWN = 8, 12, 0
# checks never start on their own in these tests unless a test asks for short periods
IDLE = {"transactionCheckInterval": "3600000"}
FAST = {"transactionCheckInterval": "100", "transactionTimeOut": "200"}


@pytest.fixture
async def tx(tmp_path):
    harness = Harness(tmp_path, **IDLE)
    await harness.start()
    yield harness
    await harness.close()


async def send_half(h: Harness, body: bytes, *, queue_id=1, group=PG, born=None, **props):
    reply = await h.send(
        TOPIC,
        body,
        props={"TRAN_MSG": "true", "PGROUP": group, "TAGS": "t1", **props},
        queue_id=queue_id,
        a=group,
        f=4,
        g=born if born is not None else h.broker.clock_ms(),
    )
    assert reply.code == ResponseCode.SUCCESS, reply.remark
    return reply


def end_header(reply, state, *, group=PG, from_check=False, **overrides):
    _, _, phy = parse_offset_msg_id(reply.ext_fields["msgId"])
    fields = {
        "producerGroup": group,
        "tranStateTableOffset": reply.ext_fields["queueOffset"],
        "commitLogOffset": phy,
        "commitOrRollback": state,
        "msgId": reply.ext_fields.get("transactionId", "x"),
        "fromTransactionCheck": "true" if from_check else "false",
    }
    fields.update(overrides)
    return {k: str(v) for k, v in fields.items()}


async def end(h: Harness, reply, state, **kw):
    """END_TRANSACTION as Java sends it: oneway. Returns once the broker handled it
    (a request-reply on the same connection is answered after it)."""
    conn = await h.client.connection(h.addr)
    conn.oneway(
        RemotingCommand(code=RequestCode.END_TRANSACTION, ext_fields=end_header(reply, state, **kw))
    )
    await h.call(RequestCode.CHECK_CLIENT_CONFIG)


async def visible(h: Harness, topic=TOPIC, queue_id=1):
    r = await h.pull(topic, queue_id, 0, suspend_ms=0)
    return decode_records(r.body) if r.code == ResponseCode.SUCCESS else []


async def test_half_message_is_hidden_until_commit_then_visible_once(tx):
    reply = await send_half(tx, b"order-1")
    # the reply names the producer's queue and the transaction id, not the half queue
    assert reply.ext_fields["queueId"] == "1"
    assert reply.ext_fields["transactionId"] == "U" + b"order-1".hex()[:16]
    assert await visible(tx) == []
    halves = await visible(tx, TRANS_HALF_TOPIC, 0)
    assert [m.body for m in halves] == [b"order-1"]
    assert halves[0].properties["REAL_TOPIC"] == TOPIC
    assert halves[0].properties["REAL_QID"] == "1"
    assert halves[0].sys_flag & 0xC == 0

    await end(tx, reply, COMMIT)
    await end(tx, reply, COMMIT)  # a repeated commit (a retry, a late check answer)
    msgs = await visible(tx)
    assert [m.body for m in msgs] == [b"order-1"]
    m = msgs[0]
    assert m.sys_flag & 0xC == 8
    assert m.properties["TRAN_MSG"] == "true"  # kept, as upstream keeps it
    assert "REAL_TOPIC" not in m.properties
    assert m.properties["PGROUP"] == PG and m.tags == "t1"
    assert m.prepared_transaction_offset == halves[0].commit_log_offset
    ops = await visible(tx, TRANS_OP_HALF_TOPIC, 0)
    assert [(o.body, o.tags) for o in ops] == [(reply.ext_fields["queueOffset"].encode(), "d")]


async def test_rollback_never_shows_the_message(tx):
    reply = await send_half(tx, b"gone")
    await end(tx, reply, ROLLBACK)
    await end(tx, reply, COMMIT)  # too late: already settled
    assert await visible(tx) == []
    assert len(await visible(tx, TRANS_OP_HALF_TOPIC, 0)) == 1
    stats = await tx.broker.transactions.check_round()
    assert stats.checked == 0 and stats.skipped_settled == 1


async def test_bad_end_transaction_requests_change_nothing(tx):
    reply = await send_half(tx, b"kept")
    await end(tx, reply, COMMIT, group="OtherGroup")
    await end(tx, reply, COMMIT, tranStateTableOffset=99)
    await end(tx, reply, COMMIT, commitLogOffset=123456)  # no record there
    await end(tx, reply, UNKNOWN)
    # a normal message's offset cannot be committed through END_TRANSACTION
    plain = await tx.send("Plain", b"p")
    _, _, phy = parse_offset_msg_id(plain.ext_fields["msgId"])
    await end(tx, reply, COMMIT, commitLogOffset=phy, tranStateTableOffset=0)
    r = await tx.call(RequestCode.END_TRANSACTION, {"producerGroup": PG})  # not oneway
    assert r.code == ResponseCode.SYSTEM_ERROR and "tranStateTableOffset" in r.remark
    assert await visible(tx) == []
    assert await visible(tx, TRANS_OP_HALF_TOPIC, 0) == []
    # the half message is intact and still commits
    await end(tx, reply, COMMIT)
    assert [m.body for m in await visible(tx)] == [b"kept"]


async def test_reject_transaction_message(tmp_path):
    h = Harness(tmp_path, rejectTransactionMessage="true", **IDLE)
    await h.start()
    try:
        reply = await h.send(TOPIC, b"x", props={"TRAN_MSG": "true", "PGROUP": PG}, f=4)
        assert reply.code == ResponseCode.NO_PERMISSION
        assert "transaction message is forbidden" in reply.remark
        assert await visible(h, TRANS_HALF_TOPIC, 0) == []
        assert (await h.send(TOPIC, b"plain")).code == ResponseCode.SUCCESS
    finally:
        await h.close()


class FakeProducer:
    """A remoting producer of PG: heartbeats, then records CHECK_TRANSACTION_STATE and
    answers with `answer` (None: stay silent)."""

    def __init__(self, h: Harness, answer: int | None) -> None:
        self.h = h
        self.answer = answer
        self.checks: list[tuple[dict[str, str], object]] = []
        d = Dispatcher()
        d.register(RequestCode.CHECK_TRANSACTION_STATE, self._on_check)
        self.client = RemotingClient(d)

    async def register(self) -> None:
        body = json.dumps(
            {
                "clientID": "tx-client@1",
                "producerDataSet": [{"groupName": PG}],
                "consumerDataSet": [],
            }
        ).encode()
        r = await self.client.invoke(
            self.h.addr, RemotingCommand(code=RequestCode.HEART_BEAT, body=body)
        )
        assert r.code == 0

    def _on_check(self, conn, cmd):
        msg, _ = decode_record(cmd.body)
        self.checks.append((dict(cmd.ext_fields), msg))
        if self.answer is not None:
            ext = cmd.ext_fields
            conn.oneway(
                RemotingCommand(
                    code=RequestCode.END_TRANSACTION,
                    ext_fields={
                        "producerGroup": PG,
                        "tranStateTableOffset": ext["tranStateTableOffset"],
                        "commitLogOffset": ext["commitLogOffset"],
                        "commitOrRollback": str(self.answer),
                        "msgId": ext["msgId"],
                        "transactionId": ext["transactionId"],
                        "fromTransactionCheck": "true",
                    },
                )
            )
        return None


async def test_unknown_is_checked_back_and_the_answer_applied(tmp_path):
    h = Harness(tmp_path, **FAST)
    await h.start()
    producer = FakeProducer(h, COMMIT)
    try:
        await producer.register()
        reply = await send_half(h, b"pending")
        await end(h, reply, UNKNOWN)
        await wait_until(lambda: producer.checks, timeout=10)
        await wait_until(lambda: h.broker.transactions.progress.settled, timeout=10)
        ext, msg = producer.checks[0]
        # the question carries the copy's offsets and the message as the producer sent it
        assert int(ext["tranStateTableOffset"]) > int(reply.ext_fields["queueOffset"])
        assert ext["transactionId"] == ext["msgId"] == reply.ext_fields["transactionId"]
        assert ext["topic"] == TRANS_HALF_TOPIC and ext["bname"] == "broker-a"
        assert msg.topic == TOPIC and msg.queue_id == 1 and msg.body == b"pending"
        assert msg.properties["TRANSACTION_CHECK_TIMES"] == "1"
        assert msg.commit_log_offset == int(ext["commitLogOffset"])
        msgs = await visible(h)
        assert [m.body for m in msgs] == [b"pending"]
        # settled: later rounds ask nobody again, and the original's late commit is a no-op
        # (the round's own count: a oneway check could still be on its way to us)
        assert (await h.broker.transactions.check_round()).checked == 0
        await end(h, reply, COMMIT)
        assert len(producer.checks) == 1
        assert [m.body for m in await visible(h)] == [b"pending"]
        assert h.broker.consumer_offsets.query(TRANS_CONSUMER_GROUP, TRANS_HALF_TOPIC, 0) >= 2
    finally:
        await producer.client.close()
        await h.close()


async def test_late_commit_of_the_original_settles_its_check_copies(tmp_path):
    h = Harness(tmp_path, **IDLE)
    await h.start()
    producer = FakeProducer(h, None)
    try:
        await producer.register()
        reply = await send_half(h, b"slow-local-tx", born=h.broker.clock_ms() - 10_000)
        svc = h.broker.transactions
        await svc.check_round()
        await wait_until(lambda: len(producer.checks) == 1)
        await end(h, reply, COMMIT)  # the producer finishes after the broker asked
        assert (await svc.check_round()).checked == 0
        assert (await svc.check_round()).checked == 0
        assert len(producer.checks) == 1
        assert [m.body for m in await visible(h)] == [b"slow-local-tx"]
        ops = await visible(h, TRANS_OP_HALF_TOPIC, 0)
        copy_offset = producer.checks[0][0]["tranStateTableOffset"]
        assert ops[0].body == f"{reply.ext_fields['queueOffset']},{copy_offset}".encode()
    finally:
        await producer.client.close()
        await h.close()


async def test_checked_too_often_is_parked(tmp_path):
    h = Harness(tmp_path, transactionCheckMax="2", **FAST)
    await h.start()
    producer = FakeProducer(h, UNKNOWN)
    try:
        await producer.register()
        await send_half(h, b"undecided")
        await wait_until(lambda: h.broker.topic_config.get(TRANS_CHECK_MAX_TIME_TOPIC), timeout=10)
        await wait_until(lambda: h.broker.store.max_offset(TRANS_CHECK_MAX_TIME_TOPIC, 0) == 1)
        parked = await visible(h, TRANS_CHECK_MAX_TIME_TOPIC, 0)
        assert [m.body for m in parked] == [b"undecided"]
        assert parked[0].properties["TRANSACTION_CHECK_TIMES"] == "2"
        assert [e["tranStateTableOffset"] for e, _ in producer.checks] == ["1", "2"]
        rounds = h.broker.transactions.rounds
        await wait_until(lambda: h.broker.transactions.rounds >= rounds + 2)
        assert len(producer.checks) == 2 and await visible(h) == []
    finally:
        await producer.client.close()
        await h.close()


async def test_pending_transaction_survives_restart(tmp_path):
    h = Harness(tmp_path, **IDLE)
    await h.start()
    try:
        settled = await send_half(h, b"settled", born=h.broker.clock_ms() - 10_000)
        pending = await send_half(h, b"pending", born=h.broker.clock_ms() - 10_000)
        await end(h, settled, COMMIT)
        await h.restart()
        # after the restart the op record is read back: only the pending one is asked about
        producer = FakeProducer(h, COMMIT)
        await producer.register()
        stats = await h.broker.transactions.check_round()
        assert stats.checked == 1 and stats.skipped_settled == 1
        await wait_until(lambda: len(producer.checks) == 1)
        assert producer.checks[0][1].body == b"pending"
        await wait_until(lambda: h.broker.store.max_offset(TOPIC, 1) == 2)
        assert sorted(m.body for m in await visible(h)) == [b"pending", b"settled"]
        assert pending.ext_fields["queueOffset"] == "1"
        await producer.client.close()
    finally:
        await h.close()
