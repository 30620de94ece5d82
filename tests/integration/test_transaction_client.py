"""TransactionProducer against an in-process NameServer + Broker over real sockets."""

from __future__ import annotations

import pytest

from ledgermq.broker.topics import TRANS_OP_HALF_TOPIC
from ledgermq.client.message import Message, MessageExt
from ledgermq.client.transaction import LocalTransactionState, TransactionProducer
from ledgermq.common.message import decode_records
from tests.integration.test_client_cluster import make_topic, wait_until

try:
    from tests.cluster import InProcessCluster, running
except ImportError as exc:  # pragma: no cover
    pytest.skip(f"in-process servers not available: {exc}", allow_module_level=True)

pytestmark = pytest.mark.timeout(60)

TOPIC = "TxClientTopic"
COMMIT = LocalTransactionState.COMMIT_MESSAGE
ROLLBACK = LocalTransactionState.ROLLBACK_MESSAGE
UNKNOW = LocalTransactionState.UNKNOW


@pytest.fixture
async def cluster(tmp_path):
    fast_checks = {"transaction_check_interval": 100, "transaction_time_out": 300}
    async with running(InProcessCluster(tmp_path, **fast_checks)) as c:
        await make_topic(c, TOPIC, queues=2)
        yield c


def stored(cluster, topic: str = TOPIC) -> list[MessageExt]:
    out: list[MessageExt] = []
    store = cluster.broker.store
    for qid in range(2 if topic == TOPIC else 1):
        got = store.get(topic, qid, 0, 64, 1 << 30, None)
        out.extend(m for raw in got.records for m in decode_records(raw))
    return out


async def producer_of(cluster, group: str, listener=None) -> TransactionProducer:
    p = cluster.track(TransactionProducer(group, cluster.ns, check_listener=listener))
    await p.start()
    return p


async def test_commit_is_visible_exactly_once(cluster):
    seen: list[tuple[Message, object]] = []

    def run_local(msg: Message, arg: object) -> LocalTransactionState:
        # the half message is stored before the local transaction runs
        assert not stored(cluster)
        seen.append((msg, arg))
        return COMMIT

    p = await producer_of(cluster, "tx-commit")
    result = await p.send_message_in_transaction(
        Message(TOPIC, b"paid", tags="t", keys="order-7"), run_local, "ctx"
    )
    assert result.local_state is COMMIT
    assert seen[0][1] == "ctx"
    assert seen[0][0].properties["UNIQ_KEY"] == result.transaction_id == result.send_result.msg_id
    await wait_until(lambda: len(stored(cluster)) == 1, what="the commit")
    [m] = stored(cluster)
    assert m.body == b"paid" and m.tags == "t" and m.keys == ["order-7"]
    assert m.queue_id == result.send_result.message_queue.queue_id
    assert m.properties["UNIQ_KEY"] == result.transaction_id
    # nothing left to check: rounds pass after the message would have been due for a
    # check (300 ms after its birth) and nobody asks, nothing is added
    due_at = m.born_timestamp + 300
    await wait_until(lambda: cluster.broker.clock_ms() > due_at, what="the check time")
    rounds = cluster.broker.transactions.rounds
    await wait_until(lambda: cluster.broker.transactions.rounds >= rounds + 3)
    assert len(stored(cluster)) == 1 and cluster.broker.transactions.checks_sent == 0


async def test_rollback_is_never_visible(cluster):
    p = await producer_of(cluster, "tx-rollback")
    result = await p.send_message_in_transaction(Message(TOPIC, b"x"), lambda m, a: ROLLBACK)
    assert result.local_state is ROLLBACK
    await wait_until(lambda: len(stored(cluster, TRANS_OP_HALF_TOPIC)) == 1, what="op record")
    rounds = cluster.broker.transactions.rounds
    await wait_until(lambda: cluster.broker.transactions.rounds >= rounds + 3)
    assert stored(cluster) == []


@pytest.mark.parametrize("answer", [COMMIT, ROLLBACK])
async def test_unknown_is_settled_by_the_check_listener(cluster, answer):
    asked: list[MessageExt] = []

    async def check(msg: MessageExt) -> LocalTransactionState:
        asked.append(msg)
        return answer

    p = await producer_of(cluster, "tx-unknown", check)
    result = await p.send_message_in_transaction(Message(TOPIC, b"later"), lambda m, a: UNKNOW)
    assert result.local_state is UNKNOW
    await wait_until(lambda: asked, what="the broker's check")
    await wait_until(lambda: len(stored(cluster, TRANS_OP_HALF_TOPIC)) == 1, what="op record")
    assert asked[0].topic == TOPIC and asked[0].body == b"later"
    assert asked[0].properties["UNIQ_KEY"] == result.transaction_id
    expected = [b"later"] if answer is COMMIT else []
    assert [m.body for m in stored(cluster)] == expected
    checks = cluster.broker.transactions.checks_sent
    rounds = cluster.broker.transactions.rounds
    await wait_until(lambda: cluster.broker.transactions.rounds >= rounds + 3)
    assert cluster.broker.transactions.checks_sent == checks
    assert [m.body for m in stored(cluster)] == expected


async def test_failing_local_transaction_is_left_to_the_check(cluster):
    def explode(msg: Message, arg: object) -> LocalTransactionState:
        raise RuntimeError("database down")

    p = await producer_of(cluster, "tx-fail", lambda msg: COMMIT)
    body = b"y" * 5000  # compressed on the wire: the listener sees the plain body
    result = await p.send_message_in_transaction(Message(TOPIC, body), explode)
    assert result.local_state is UNKNOW
    await wait_until(lambda: len(stored(cluster)) == 1, what="commit after the check")
    assert stored(cluster)[0].properties["UNIQ_KEY"] == result.transaction_id


async def test_check_goes_to_the_producer_of_the_right_group(cluster):
    """Two transactional producers share one client instance; each answers only for
    its own group's half messages."""
    inst = cluster.instance()
    a_asked: list[bytes] = []
    b_asked: list[bytes] = []
    a = cluster.track(
        TransactionProducer(
            "tx-a",
            cluster.ns,
            instance=inst,
            check_listener=lambda m: a_asked.append(m.body) or COMMIT,
        )
    )
    b = cluster.track(
        TransactionProducer(
            "tx-b",
            cluster.ns,
            instance=inst,
            check_listener=lambda m: b_asked.append(m.body) or ROLLBACK,
        )
    )
    await a.start()
    await b.start()
    await a.send_message_in_transaction(Message(TOPIC, b"from-a"), lambda m, x: UNKNOW)
    await b.send_message_in_transaction(Message(TOPIC, b"from-b"), lambda m, x: UNKNOW)
    await wait_until(lambda: len(stored(cluster, TRANS_OP_HALF_TOPIC)) == 2, what="two op records")
    assert a_asked == [b"from-a"] and b_asked == [b"from-b"]
    assert [m.body for m in stored(cluster)] == [b"from-a"]
