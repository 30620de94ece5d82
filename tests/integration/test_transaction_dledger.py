"""Transactions in a DLedger broker group: half messages, op records and the checker's
progress travel in the replicated log, so a new master carries on after a failover."""

from __future__ import annotations

import dataclasses

import pytest

from ledgermq.broker.config import BrokerConfig
from ledgermq.client.instance import ClientInstance
from ledgermq.client.message import Message, MessageExt
from ledgermq.client.transaction import LocalTransactionState, TransactionProducer
from ledgermq.common.message import decode_records
from tests.integration.test_dledger_broker import Group, create_topic, wait_until

pytestmark = pytest.mark.timeout(120)

TOPIC = "TxRaft"


class FastCheckGroup(Group):
    def config(self, self_id: str) -> BrokerConfig:
        return dataclasses.replace(
            super().config(self_id), transaction_check_interval=100, transaction_time_out=300
        )


@pytest.fixture
async def group(tmp_path):
    g = FastCheckGroup(tmp_path)
    try:
        yield await g.start()
    finally:
        await g.stop()


def bodies(broker, topic: str = TOPIC) -> list[bytes]:
    out: list[bytes] = []
    for qid in range(4):
        got = broker.store.get(topic, qid, 0, 64, 1 << 30, None)
        out += [m.body for raw in got.records for m in decode_records(raw)]
    return out


async def test_a_pending_transaction_is_settled_by_the_next_master(group):
    old = await group.master()
    await create_topic(group, TOPIC)
    answer = LocalTransactionState.UNKNOW
    asked: list[MessageExt] = []

    def check(msg: MessageExt) -> LocalTransactionState:
        asked.append(msg)
        return answer

    inst = ClientInstance(group.ns, route_interval=0.5, heartbeat_interval=0.5)
    producer = group.track(
        TransactionProducer("tx-raft", group.ns, instance=inst, check_listener=check)
    )
    await producer.start()
    result = await producer.send_message_in_transaction(
        Message(TOPIC, b"survivor"), lambda m, a: LocalTransactionState.UNKNOW
    )
    assert result.local_state is LocalTransactionState.UNKNOW
    await wait_until(lambda: asked, what="a check from the first master")
    assert not any(bodies(b) for b in group.brokers.values())

    await group.brokers.pop(old).stop()
    new = await group.master(exclude=old)
    answer = LocalTransactionState.COMMIT_MESSAGE
    await wait_until(
        lambda: bodies(group.brokers[new]) == [b"survivor"],
        timeout=30,
        what="the new master to commit after its own check",
    )
    # the commit reached every member through the log, once
    for broker in group.brokers.values():
        await wait_until(lambda b=broker: bodies(b) == [b"survivor"], what="replication")
    master = group.brokers[new].transactions
    rounds = master.rounds
    await wait_until(lambda: master.rounds >= rounds + 3, what="more check rounds")
    assert all(bodies(b) == [b"survivor"] for b in group.brokers.values())
    assert all(m.properties["UNIQ_KEY"] == result.transaction_id for m in asked)
    # followers neither check nor keep checker state
    assert all(b.transactions.progress is None for i, b in group.brokers.items() if i != new)
