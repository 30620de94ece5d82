"""BROADCASTING consumers keep their progress in a local file, never on the broker, and
a restarted consumer resumes from that file without redelivering anything."""

from __future__ import annotations

import json

import pytest

from ledgermq.client.admin import AdminClient
from ledgermq.client.message import ConsumeResult, Message, MessageQueue
from ledgermq.client.push_consumer import PushConsumer
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from tests.cluster import running
from tests.integration.test_client_cluster import Cluster, make_topic, started_producer, wait_until

pytestmark = pytest.mark.timeout(120)

TOPIC = "TBcast"
GROUP = "cg_broadcast"
# Different counts per queue, so offsets written under the wrong queue would show.
FIRST = {0: 7, 1: 4}
SECOND = {0: 2, 1: 3}


@pytest.fixture
async def cluster(tmp_path):
    async with running(Cluster(tmp_path)) as c:
        yield c


def file_offsets(path) -> dict[tuple[str, str, int], int]:
    raw = json.loads(path.read_text())
    return {(e["topic"], e["brokerName"], e["queueId"]): e["offset"] for e in raw["offsetTable"]}


async def produce(cluster: Cluster, producer, counts: dict[int, int], start: int) -> list[int]:
    seqs = []
    seq = start
    for qid, n in counts.items():
        mq = MessageQueue(TOPIC, "broker-a", qid)
        for _ in range(n):
            await producer.send(Message(TOPIC, f"m:{seq}".encode()), queue=mq)
            seqs.append(seq)
            seq += 1
    return seqs


def broadcast_consumer(cluster: Cluster, path, seen: list[int]) -> PushConsumer:
    c = cluster.track(
        PushConsumer(
            GROUP,
            cluster.ns,
            message_model="BROADCASTING",
            # FIRST: without its file, a restarted consumer would start over at 0.
            consume_from_where="CONSUME_FROM_FIRST_OFFSET",
            offsets_path=path,
            instance=cluster.instance(),
        )
    )
    c.subscribe(TOPIC)

    def listener(msgs):
        seen.extend(int(m.body.decode().split(":")[1]) for m in msgs)
        return ConsumeResult.SUCCESS

    c.register_listener(listener)
    return c


async def broker_offset(addr: str, qid: int) -> RemotingCommand:
    client = RemotingClient()
    try:
        return await client.invoke(
            addr,
            RemotingCommand(
                code=RequestCode.QUERY_CONSUMER_OFFSET,
                ext_fields={
                    "consumerGroup": GROUP,
                    "topic": TOPIC,
                    "queueId": str(qid),
                    # Without this the broker answers 0 for a queue that starts at 0,
                    # committed or not; with it, only a committed offset is found.
                    "setZeroIfNotFound": "false",
                },
            ),
            timeout=5,
        )
    finally:
        await client.close()


async def test_broadcast_offsets_are_local_only_and_survive_a_restart(cluster, tmp_path):
    await make_topic(cluster, TOPIC, 2)
    broker = cluster.brokers[0]
    producer = await started_producer(cluster)
    first = await produce(cluster, producer, FIRST, 0)
    path = tmp_path / "bcast" / "offsets.json"

    seen: list[int] = []
    consumer = broadcast_consumer(cluster, path, seen)
    await consumer.start()
    await wait_until(lambda: len(seen) >= len(first), what="first batch consumed")
    await consumer.shutdown()
    assert sorted(seen) == first

    # 1. Progress is in the local file: next offset per queue = messages consumed there.
    stored = file_offsets(path)
    assert {k: v for k, v in stored.items() if k[0] == TOPIC} == {
        (TOPIC, "broker-a", q): n for q, n in FIRST.items()
    }

    # 2. Nothing was committed to the broker: not by UPDATE_CONSUMER_OFFSET, not
    # piggy-backed on pulls.
    for qid in FIRST:
        reply = await broker_offset(broker.address, qid)
        assert reply.code == ResponseCode.QUERY_NOT_FOUND, (qid, reply.code, reply.ext_fields)
    broker._flush_offsets()
    assert GROUP not in json.dumps(broker.consumer_offsets.to_json())
    admin = cluster.track(AdminClient(cluster.ns))
    await admin.start()
    stats = await admin.consume_stats(GROUP, TOPIC)
    assert all(w.consumer_offset <= 0 for w in stats.offset_table.values()), stats.offset_table

    # 3. A restarted consumer (same group, same file) resumes where the file says.
    second = await produce(cluster, producer, SECOND, len(first))
    seen2: list[int] = []
    again = broadcast_consumer(cluster, path, seen2)
    await again.start()
    ends = {q: FIRST[q] + SECOND[q] for q in FIRST}
    # Offsets only reach the end once everything before them in the queue was consumed,
    # so once they do, any redelivery of the first batch would be in seen2 already.
    await wait_until(
        lambda: all(
            again.offset_store.get(MessageQueue(TOPIC, "broker-a", q)) == end
            for q, end in ends.items()
        ),
        what="restarted consumer reached the end of both queues",
    )
    assert sorted(seen2) == second, "redelivered (or lost) after restart"
    await again.shutdown()
    assert {k: v for k, v in file_offsets(path).items() if k[0] == TOPIC} == {
        (TOPIC, "broker-a", q): n for q, n in ends.items()
    }
    for qid in FIRST:
        reply = await broker_offset(broker.address, qid)
        assert reply.code == ResponseCode.QUERY_NOT_FOUND
