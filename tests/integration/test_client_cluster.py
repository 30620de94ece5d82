"""Client library against in-process NameServer + Broker(s) on loopback."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import pytest

from ledgermq.client.admin import AdminClient
from ledgermq.client.errors import MQClientError
from ledgermq.client.lite_pull_consumer import LitePullConsumer
from ledgermq.client.message import (
    ConsumeResult,
    Message,
    MessageQueue,
    OrderlyResult,
    SendResult,
    SendStatus,
)
from ledgermq.client.producer import Producer, select_by_hash
from ledgermq.client.push_consumer import PushConsumer

try:
    from tests.cluster import InProcessCluster, running
except ImportError as exc:  # pragma: no cover - servers are written concurrently
    pytest.skip(f"in-process servers not available: {exc}", allow_module_level=True)

FAST_DELAYS = " ".join(["1s"] * 18)


async def wait_until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


class Cluster(InProcessCluster):
    def __init__(self, tmp_path, n_brokers: int = 1) -> None:
        super().__init__(tmp_path, n_brokers, message_delay_level=FAST_DELAYS)


@pytest.fixture
async def cluster(tmp_path):
    async with running(Cluster(tmp_path)) as c:
        yield c


@pytest.fixture
async def cluster2(tmp_path):
    async with running(Cluster(tmp_path, n_brokers=2)) as c:
        yield c


async def make_topic(cluster: Cluster, topic: str, queues: int = 4) -> None:
    admin = cluster.track(AdminClient(cluster.ns))
    await admin.start()
    await admin.create_topic(
        topic, cluster="DefaultCluster", read_queue_nums=queues, write_queue_nums=queues
    )

    async def routed() -> bool:
        try:
            route = await admin.topic_route(topic)
        except Exception:
            return False
        return len(route.queue_datas) == len(cluster.brokers)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await routed():
        assert loop.time() < deadline, "topic never reached the NameServer"
        await asyncio.sleep(0.05)


async def started_producer(cluster: Cluster, group: str = "pg") -> Producer:
    p = cluster.track(Producer(group, cluster.ns))
    await p.start()
    return p


def seq_of(m) -> int:
    return int(m.body.decode().split(":")[1])


# --- produce + push consume -------------------------------------------------------------
async def test_produce_then_push_consume_every_message_exactly_once(cluster):
    await make_topic(cluster, "T1", 4)
    producer = await started_producer(cluster)
    n = 200
    results = []
    for i in range(n):
        r = await producer.send(Message("T1", f"m:{i}".encode(), tags="A", keys=f"k{i}"))
        results.append(r)
    assert all(r.status == SendStatus.SEND_OK for r in results)
    assert len({r.message_queue.queue_id for r in results}) == 4
    assert len({r.msg_id for r in results}) == n

    seen: list[int] = []
    consumer = cluster.track(
        PushConsumer(
            "cg1",
            cluster.ns,
            consume_from_where="CONSUME_FROM_FIRST_OFFSET",
            instance=cluster.instance(),
        )
    )
    consumer.subscribe("T1", "A || B")

    def listener(msgs):
        for m in msgs:
            assert m.topic == "T1" and m.tags == "A"
            seen.append(seq_of(m))
        return ConsumeResult.SUCCESS

    consumer.register_listener(listener)
    await consumer.start()
    await wait_until(lambda: len(seen) >= n, what="all messages consumed")
    assert sorted(seen) == list(range(n))
    # Offsets are committed to the broker: on shutdown every queue is at its end.
    await consumer.shutdown()
    admin = cluster.track(AdminClient(cluster.ns))
    await admin.start()
    stats = await admin.consume_stats("cg1", "T1")
    assert stats.diff_total == 0
    assert sum(o.consumer_offset for o in stats.offset_table.values()) == n


async def test_tag_filter_skips_other_tags_and_commits_past_them(cluster):
    await make_topic(cluster, "TF", 1)
    producer = await started_producer(cluster)
    for i in range(20):
        await producer.send(Message("TF", f"m:{i}".encode(), tags="A" if i % 2 else "B"))
    seen: list[int] = []
    consumer = cluster.track(
        PushConsumer(
            "cgf",
            cluster.ns,
            consume_from_where="CONSUME_FROM_FIRST_OFFSET",
            instance=cluster.instance(),
        )
    )
    consumer.subscribe("TF", "A")
    consumer.register_listener(
        lambda msgs: seen.extend(seq_of(m) for m in msgs) or ConsumeResult.SUCCESS
    )
    await consumer.start()
    await wait_until(lambda: len(seen) >= 10)
    assert sorted(seen) == list(range(1, 20, 2))


async def test_send_variants_batch_async_oneway_compressed_delay(cluster):
    await make_topic(cluster, "T2", 2)
    producer = await started_producer(cluster)
    batch = [Message("T2", f"m:{i}".encode(), keys=[f"b{i}"]) for i in range(10)]
    r = await producer.send_batch(batch)
    assert r.status == SendStatus.SEND_OK and len(r.msg_id.split(",")) == 10
    tasks = [producer.send_async(Message("T2", f"m:{i}".encode())) for i in range(10, 60)]
    done = await asyncio.gather(*tasks)
    assert all(x.status == SendStatus.SEND_OK for x in done)
    big = b"m:60:" + b"x" * 10000
    r_big = await producer.send(Message("T2", big))
    await producer.send_oneway(Message("T2", b"m:61"))
    await producer.send(Message("T2", b"m:62", delay_level=1))

    got: dict[int, bytes] = {}
    consumer = cluster.track(
        PushConsumer(
            "cg2",
            cluster.ns,
            consume_from_where="CONSUME_FROM_FIRST_OFFSET",
            instance=cluster.instance(),
            consume_batch_size=4,
        )
    )
    consumer.subscribe("T2")

    async def listener(msgs):
        assert len(msgs) <= 4
        for m in msgs:
            got[seq_of(m)] = m.body
        return ConsumeResult.SUCCESS

    consumer.register_listener(listener)
    await consumer.start()
    await wait_until(lambda: len(got) >= 63, what="63 messages")
    assert sorted(got) == list(range(63))
    assert got[60] == big
    assert r_big.offset_msg_id


async def test_unknown_topic_is_auto_created_through_tbw102(cluster):
    producer = await started_producer(cluster)
    r = await producer.send(Message("AutoTopic", b"m:0"))
    assert r.status == SendStatus.SEND_OK
    admin = cluster.track(AdminClient(cluster.ns))
    await admin.start()

    async def exists() -> bool:
        return "AutoTopic" in await admin.topic_list()

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await exists():
        assert loop.time() < deadline
        await asyncio.sleep(0.05)


# --- ordered ------------------------------------------------------------------------------
async def test_orderly_consumption_keeps_per_key_order(cluster):
    await make_topic(cluster, "TO", 4)
    producer = await started_producer(cluster)
    orders = 6
    per = 25
    for s in range(per):
        for o in range(orders):
            await producer.send(
                Message("TO", f"o{o}:{s}".encode()), selector=select_by_hash(), arg=f"order-{o}"
            )
    seen: dict[str, list[int]] = collections.defaultdict(list)
    fail_once = {"o1:5", "o3:0"}

    async def listener(msgs):
        assert len(msgs) == 1
        m = msgs[0]
        key, s = m.body.decode().split(":")
        if m.body.decode() in fail_once:
            fail_once.discard(m.body.decode())
            return OrderlyResult.SUSPEND
        seen[key].append(int(s))
        return OrderlyResult.SUCCESS

    consumer = cluster.track(
        PushConsumer(
            "cgo",
            cluster.ns,
            consume_from_where="CONSUME_FROM_FIRST_OFFSET",
            instance=cluster.instance(),
            suspend_current_queue_time=0.05,
        )
    )
    consumer.subscribe("TO")
    consumer.register_listener(listener, orderly=True)
    await consumer.start()
    await wait_until(lambda: sum(len(v) for v in seen.values()) >= orders * per, 30)
    for o in range(orders):
        assert seen[f"o{o}"] == list(range(per)), o
    assert all(w.pq.locked for w in consumer.workers.values())


# --- retry --------------------------------------------------------------------------------
async def test_reconsume_later_goes_through_retry_topic_then_succeeds(cluster):
    await make_topic(cluster, "TR", 2)
    producer = await started_producer(cluster)
    for i in range(10):
        await producer.send(Message("TR", f"m:{i}".encode(), tags="X"))
    first: set[int] = set()
    done: dict[int, int] = {}

    def listener(msgs):
        m = msgs[0]
        s = seq_of(m)
        assert m.topic == "TR"
        if s % 2 == 0 and s not in first:
            first.add(s)
            return ConsumeResult.RECONSUME_LATER
        if s % 3 == 0 and m.reconsume_times == 0:
            raise RuntimeError("listener failure counts as RECONSUME_LATER")
        done[s] = m.reconsume_times
        return ConsumeResult.SUCCESS

    consumer = cluster.track(
        PushConsumer(
            "cgr",
            cluster.ns,
            consume_from_where="CONSUME_FROM_FIRST_OFFSET",
            instance=cluster.instance(),
        )
    )
    consumer.subscribe("TR", "X")
    consumer.register_listener(listener)
    await consumer.start()
    await wait_until(lambda: len(done) >= 10, 40, "retried messages")
    assert sorted(done) == list(range(10))
    for s, times in done.items():
        assert times == (1 if s % 2 == 0 or s % 3 == 0 else 0), (s, times)


# --- rebalance ------------------------------------------------------------------------------
async def test_rebalance_when_a_consumer_joins_and_leaves(cluster):
    await make_topic(cluster, "TB", 8)
    producer = await started_producer(cluster)
    seen: collections.Counter[int] = collections.Counter()

    def listener(msgs):
        seen.update(seq_of(m) for m in msgs)
        return ConsumeResult.SUCCESS

    def consumer(name: str) -> PushConsumer:
        c = cluster.track(
            PushConsumer(
                "cgb",
                cluster.ns,
                consume_from_where="CONSUME_FROM_FIRST_OFFSET",
                instance=cluster.instance(),
                persist_interval=0.2,
            )
        )
        c.subscribe("TB")
        c.register_listener(listener)
        return c

    def topic_queues(c: PushConsumer) -> set[MessageQueue]:
        return {mq for mq in c.assigned_queues() if mq.topic == "TB"}

    a = consumer("a")
    await a.start()
    await wait_until(lambda: len(topic_queues(a)) == 8, what="a owns all queues")
    sent = 0

    async def produce(k: int) -> None:
        nonlocal sent
        for _ in range(k):
            await producer.send(Message("TB", f"m:{sent}".encode()))
            sent += 1

    await produce(80)
    b = consumer("b")
    await b.start()
    await wait_until(
        lambda: len(topic_queues(a)) == 4 and len(topic_queues(b)) == 4, what="split 4/4"
    )
    assert not topic_queues(a) & topic_queues(b)
    await produce(80)
    await wait_until(lambda: len(seen) >= sent, what="all consumed while split")
    await b.shutdown()
    await wait_until(lambda: len(topic_queues(a)) == 8, what="a takes over")
    await produce(80)
    await wait_until(lambda: len(seen) >= sent, what="all consumed after leave")
    assert set(seen) == set(range(sent))


# --- broadcasting --------------------------------------------------------------------------
async def test_broadcasting_delivers_to_every_consumer(cluster, tmp_path):
    await make_topic(cluster, "TC", 2)
    producer = await started_producer(cluster)
    got: list[set[int]] = [set(), set()]
    consumers = []
    for i in range(2):
        c = cluster.track(
            PushConsumer(
                "cgc",
                cluster.ns,
                message_model="BROADCASTING",
                consume_from_where="CONSUME_FROM_FIRST_OFFSET",
                offsets_path=tmp_path / f"bc{i}" / "offsets.json",
                instance=cluster.instance(),
            )
        )
        c.subscribe("TC")
        c.register_listener(
            lambda msgs, s=got[i]: s.update(seq_of(m) for m in msgs) or ConsumeResult.SUCCESS
        )
        consumers.append(c)
        await c.start()
    for i in range(30):
        await producer.send(Message("TC", f"m:{i}".encode()))
    await wait_until(lambda: all(len(s) == 30 for s in got), what="both got everything")
    await consumers[0].shutdown()
    assert (tmp_path / "bc0" / "offsets.json").exists()


# --- lite pull ----------------------------------------------------------------------------
async def test_lite_pull_poll_commit_and_seek(cluster):
    await make_topic(cluster, "TL", 2)
    producer = await started_producer(cluster)
    for i in range(40):
        await producer.send(Message("TL", f"m:{i}".encode()))
    lite = cluster.track(
        LitePullConsumer(
            "cgl",
            cluster.ns,
            consume_from_where="CONSUME_FROM_FIRST_OFFSET",
            auto_commit=False,
            instance=cluster.instance(),
        )
    )
    lite.subscribe("TL")
    await lite.start()
    seen: list[int] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(seen) < 40 and loop.time() < deadline:
        seen.extend(seq_of(m) for m in await lite.poll(1.0))
    assert sorted(seen) == list(range(40))
    await lite.commit()
    queues = sorted(mq for mq in lite.assignment() if mq.topic == "TL")
    total = 0
    for mq in queues:
        total += await lite.committed(mq)
    assert total == 40
    # Seek back to the start of one queue: its messages come again.
    mq = queues[0]
    await lite.seek(mq, 0)
    again: list[int] = []
    count0 = await lite.committed(mq)
    while len(again) < count0:
        batch = await lite.poll(5.0)
        assert batch, "nothing after seek"
        again.extend(seq_of(m) for m in batch)
    assert len(again) == count0


async def test_lite_pull_assign(cluster):
    await make_topic(cluster, "TLA", 2)
    producer = await started_producer(cluster)
    mq = MessageQueue("TLA", "broker-a", 1)
    for i in range(5):
        await producer.send(Message("TLA", f"m:{i}".encode()), queue=mq)
    lite = cluster.track(
        LitePullConsumer(
            "cgla",
            cluster.ns,
            consume_from_where="CONSUME_FROM_FIRST_OFFSET",
            instance=cluster.instance(),
        )
    )
    await lite.assign([mq])
    await lite.start()
    got: list[int] = []
    while len(got) < 5:
        batch = await lite.poll(5.0)
        assert batch
        assert all(m.queue_id == 1 for m in batch)
        got.extend(seq_of(m) for m in batch)
    assert got == list(range(5))


# --- admin ----------------------------------------------------------------------------------
async def test_admin_calls(cluster):
    admin = cluster.track(AdminClient(cluster.ns))
    await admin.start()
    info = await admin.cluster_info()
    assert "DefaultCluster" in info.cluster_addr_table
    broker_addr = info.masters("DefaultCluster")["broker-a"]
    assert broker_addr == cluster.brokers[0].address
    await make_topic(cluster, "TA", 3)
    assert "TA" in await admin.topic_list()
    route = await admin.topic_route("TA")
    assert route.queue_datas[0].write_queue_nums == 3

    producer = await started_producer(cluster)
    r = await producer.send(Message("TA", b"m:0", keys="order-7 other", tags="t"))
    stats = await admin.topic_stats("TA")
    assert sum(o.max_offset for o in stats.values()) == 1

    by_id = await admin.view_message(r.offset_msg_id)
    assert by_id.body == b"m:0" and by_id.properties["UNIQ_KEY"] == r.msg_id
    by_offset = await admin.query_message_by_queue_offset(r.message_queue, r.queue_offset)
    assert by_offset.msg_id == r.msg_id

    async def keyed():
        return await admin.query_message_by_key("TA", "order-7")

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    found = await keyed()
    while not found and loop.time() < deadline:
        await asyncio.sleep(0.05)
        found = await keyed()
    assert [m.body for m in found] == [b"m:0"]
    uniq = await admin.query_message_by_unique_key("TA", r.msg_id)
    assert uniq.body == b"m:0"

    runtime = await admin.broker_runtime_info(broker_addr)
    assert runtime
    cfg = await admin.broker_config(broker_addr)
    assert cfg.get("brokerName") == "broker-a"

    await admin.put_kv_config("ns1", "k", "v")
    assert await admin.get_kv_config("ns1", "k") == "v"
    assert await admin.get_kv_config("ns1", "missing") is None

    await admin.delete_topic("TA", cluster="DefaultCluster")
    assert "TA" not in await admin.topic_list()


# --- server -> client requests, failover ------------------------------------------------
async def test_reset_offset_by_time_makes_consumer_start_over(cluster):
    await make_topic(cluster, "TZ", 2)
    producer = await started_producer(cluster)
    for i in range(20):
        await producer.send(Message("TZ", f"m:{i}".encode()))
    seen: collections.Counter[int] = collections.Counter()
    consumer = cluster.track(
        PushConsumer(
            "cgz",
            cluster.ns,
            consume_from_where="CONSUME_FROM_FIRST_OFFSET",
            instance=cluster.instance(),
        )
    )
    consumer.subscribe("TZ")
    consumer.register_listener(
        lambda msgs: seen.update(seq_of(m) for m in msgs) or ConsumeResult.SUCCESS
    )
    await consumer.start()
    await wait_until(lambda: len(seen) == 20)
    admin = cluster.track(AdminClient(cluster.ns))
    await admin.start()
    # Wait until the consumer committed, so the reset is what brings messages back.
    await wait_until(lambda: all(v == 1 for v in seen.values()))
    table = await admin.reset_offset_by_time("cgz", "TZ", 0)
    assert set(table.values()) == {0}
    await wait_until(lambda: all(seen[i] >= 2 for i in range(20)), what="re-delivery")


async def test_running_info_and_consumer_status_handlers(cluster):
    from ledgermq.common import fastjson as jsonbody
    from ledgermq.remoting.codec import RemotingCommand

    await make_topic(cluster, "TI", 2)
    inst = cluster.instance()
    consumer = cluster.track(PushConsumer("cgi", cluster.ns, instance=inst))
    consumer.subscribe("TI", "a || b")
    consumer.register_listener(lambda msgs: ConsumeResult.SUCCESS)
    await consumer.start()
    await wait_until(lambda: len([q for q in consumer.assigned_queues() if q.topic == "TI"]) == 2)
    cmd = RemotingCommand(code=307, ext_fields={"consumerGroup": "cgi", "clientId": "x"})
    resp = inst._on_running_info(None, cmd)
    info = jsonbody.loads(resp.body)
    assert info["properties"]["PROP_CONSUME_TYPE"] == "CONSUME_PASSIVELY"
    assert {s["topic"] for s in info["subscriptionSet"]} == {"TI", "%RETRY%cgi"}
    assert all(isinstance(k, MessageQueue) for k in info["mqTable"])
    status = inst._on_consumer_status(
        None, RemotingCommand(code=221, ext_fields={"group": "cgi", "topic": "TI"})
    )
    assert len(jsonbody.loads(status.body)["messageQueueTable"]) == 2
    admin = cluster.track(AdminClient(cluster.ns))
    await admin.start()
    conns = await admin.consumer_connection("cgi")
    assert conns


async def test_namesrv_failover_skips_a_dead_address(cluster):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    await make_topic(cluster, "TN", 1)
    producer = cluster.track(Producer("pgn", f"{dead};{cluster.ns}"))
    await producer.start()
    r = await producer.send(Message("TN", b"m:0"))
    assert r.status == SendStatus.SEND_OK


async def test_retry_on_another_broker_when_one_is_down(cluster2):
    await make_topic(cluster2, "TD", 2)
    producer = await started_producer(cluster2)
    queues = await producer.publish_queues("TD")
    assert {mq.broker_name for mq in queues} == {"broker-a", "broker-b"}
    await cluster2.brokers[1].stop()
    cluster2.brokers.pop()
    results = [await producer.send(Message("TD", f"m:{i}".encode())) for i in range(6)]
    assert {r.message_queue.broker_name for r in results} == {"broker-a"}


async def test_sync_producer_from_a_thread(cluster):
    from ledgermq.client import SyncProducer

    await make_topic(cluster, "TS", 1)

    def script() -> list[SendResult]:
        with SyncProducer("pgs", cluster.ns) as p:
            return [p.send(Message("TS", f"m:{i}".encode())) for i in range(5)]

    results = await asyncio.to_thread(script)
    assert [r.queue_offset for r in results] == list(range(5))


async def test_shared_registry_instance_serves_producer_and_consumer(cluster):
    from ledgermq.client import ClientRegistry

    await make_topic(cluster, "TG", 1)
    reg = ClientRegistry()
    p = cluster.track(Producer("pgg", cluster.ns, registry=reg))
    c = cluster.track(
        PushConsumer(
            "cgg", cluster.ns, registry=reg, consume_from_where="CONSUME_FROM_FIRST_OFFSET"
        )
    )
    got: list[int] = []
    c.subscribe("TG")
    c.register_listener(lambda msgs: got.extend(seq_of(m) for m in msgs) or ConsumeResult.SUCCESS)
    await p.start()
    await c.start()
    assert p.instance is c.instance
    await p.send(Message("TG", b"m:0"))
    await wait_until(lambda: got == [0])
    await p.shutdown()
    assert not c.instance._closed


async def test_orderly_rebalance_moves_locks_to_the_new_member(cluster):
    await make_topic(cluster, "TOR", 4)
    producer = await started_producer(cluster)
    seen: dict[str, list[int]] = collections.defaultdict(list)

    def listener(msgs):
        key, s = msgs[0].body.decode().split(":")
        seen[key].append(int(s))
        return OrderlyResult.SUCCESS

    def member() -> PushConsumer:
        c = cluster.track(
            PushConsumer(
                "cgor",
                cluster.ns,
                consume_from_where="CONSUME_FROM_FIRST_OFFSET",
                instance=cluster.instance(),
            )
        )
        c.subscribe("TOR")
        c.register_listener(listener, orderly=True)
        return c

    def owned(c: PushConsumer) -> set[MessageQueue]:
        return {mq for mq in c.assigned_queues() if mq.topic == "TOR"}

    a = member()
    await a.start()
    await wait_until(lambda: len(owned(a)) == 4)
    for s in range(10):
        for o in range(4):
            await producer.send(
                Message("TOR", f"o{o}:{s}".encode()), selector=select_by_hash(), arg=f"k{o}"
            )
    await wait_until(lambda: sum(map(len, seen.values())) >= 40)
    b = member()
    await b.start()
    await wait_until(lambda: len(owned(a)) == 2 and len(owned(b)) == 2, 15, "2/2 split")
    for s in range(10, 20):
        for o in range(4):
            await producer.send(
                Message("TOR", f"o{o}:{s}".encode()), selector=select_by_hash(), arg=f"k{o}"
            )
    await wait_until(lambda: sum(map(len, seen.values())) >= 80, 15)
    for o in range(4):
        assert seen[f"o{o}"] == list(range(20))


async def test_producer_follows_route_changes_after_refresh(cluster):
    # Regression: the producer cached a topic's queues forever, so a topic that grew
    # (or was auto-created from TBW102) kept its first queue list.
    await make_topic(cluster, "Grow", queues=2)
    p = await started_producer(cluster)
    used = {(await p.send(Message("Grow", b"x"))).message_queue.queue_id for _ in range(8)}
    assert used == {0, 1}

    admin = cluster.track(AdminClient(cluster.ns))
    await admin.start()
    await admin.create_topic(
        "Grow", cluster="DefaultCluster", read_queue_nums=8, write_queue_nums=8
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (await admin.topic_route("Grow")).queue_datas[0].write_queue_nums != 8:
        assert loop.time() < deadline, "the NameServer never saw 8 queues"
        await asyncio.sleep(0.05)

    await p.instance.refresh_all_routes()  # what the 30 s route timer runs
    used = {(await p.send(Message("Grow", b"y"))).message_queue.queue_id for _ in range(16)}
    assert used == set(range(8))


# --- auto-batching (Java's autoBatch) -----------------------------------------------------
async def test_auto_batch_sends_arrive_as_separate_messages_each_with_its_own_result(cluster):
    await make_topic(cluster, "TAB", 4)
    producer = cluster.track(
        Producer("pab", cluster.ns, auto_batch=True, batch_max_bytes=1024 * 1024)
    )
    await producer.start()
    n = 300
    results = await asyncio.gather(
        *(
            producer.send(Message("TAB", f"m:{i}".encode(), tags="A", keys=f"key{i}"))
            for i in range(n)
        )
    )
    assert all(r.status == SendStatus.SEND_OK for r in results)
    assert len({r.msg_id for r in results}) == n
    assert len({r.offset_msg_id for r in results}) == n
    # one iteration's sends went out together, as one request to one queue (single
    # sends would rotate over all four), and took consecutive offsets there
    by_queue: dict[int, list[int]] = collections.defaultdict(list)
    for r in results:
        by_queue[r.message_queue.queue_id].append(r.queue_offset)
    offsets = sorted(o for q in by_queue.values() for o in q)
    assert len(offsets) == n
    for queue_offsets in by_queue.values():
        assert sorted(queue_offsets) == list(range(len(queue_offsets)))
    assert len(by_queue) == 1

    # every message is stored on its own: its body, tag, key and id come back
    admin = cluster.track(AdminClient(cluster.ns))
    await admin.start()
    for i in (0, 137, n - 1):
        found = await admin.query_message_by_key("TAB", f"key{i}")
        assert [m.body for m in found] == [f"m:{i}".encode()]
        assert found[0].properties["UNIQ_KEY"] == results[i].msg_id
        by_id = await admin.view_message(results[i].offset_msg_id)
        assert by_id.body == f"m:{i}".encode() and by_id.tags == "A"
        assert by_id.queue_offset == results[i].queue_offset
    seen: list[int] = []
    consumer = cluster.track(
        PushConsumer(
            "cgab", cluster.ns, consume_from_where="CONSUME_FROM_FIRST_OFFSET",
            instance=cluster.instance(),
        )
    )  # fmt: skip
    consumer.subscribe("TAB", "A")
    consumer.register_listener(
        lambda msgs: seen.extend(seq_of(m) for m in msgs) or ConsumeResult.SUCCESS
    )
    await consumer.start()
    await wait_until(lambda: len(seen) >= n, what="all auto-batched messages consumed")
    assert sorted(seen) == list(range(n))


async def test_auto_batch_leaves_delayed_compressed_and_ordered_sends_correct(cluster):
    await make_topic(cluster, "TAB2", 2)
    producer = cluster.track(Producer("pab2", cluster.ns, auto_batch=True, compress_over=4096))
    await producer.start()
    queue = (await producer.publish_queues("TAB2"))[1]
    big = b"m:0:" + b"y" * 10_000
    delayed, compressed, *ordered = await asyncio.gather(
        producer.send(Message("TAB2", b"m:1", delay_level=1)),
        producer.send(Message("TAB2", big)),
        *(producer.send(Message("TAB2", f"m:{i}".encode()), queue=queue) for i in range(2, 12)),
    )
    # the ordered sends named their queue: one batch there, in call order
    assert [r.message_queue for r in ordered] == [queue] * 10
    assert [r.queue_offset for r in ordered] == list(
        range(ordered[0].queue_offset, ordered[0].queue_offset + 10)
    )
    got: dict[int, bytes] = {}
    consumer = cluster.track(
        PushConsumer(
            "cgab2", cluster.ns, consume_from_where="CONSUME_FROM_FIRST_OFFSET",
            instance=cluster.instance(),
        )
    )  # fmt: skip
    consumer.subscribe("TAB2")
    consumer.register_listener(
        lambda msgs: [got.__setitem__(seq_of(m), m.body) for m in msgs] and ConsumeResult.SUCCESS
    )
    await consumer.start()
    await wait_until(lambda: len(got) >= 12, what="12 messages, the delayed one included")
    assert got[0] == big and got[1] == b"m:1"
    assert delayed.status == compressed.status == SendStatus.SEND_OK


async def test_auto_batch_refused_batch_fails_each_of_its_senders(cluster):
    producer = cluster.track(Producer("pab3", cluster.ns, auto_batch=True, retry_times=0))
    await producer.start()
    queue = MessageQueue("NoSuchTopicAB", cluster.brokers[0].config.broker_name, 0)
    cluster.brokers[0].config.auto_create_topic_enable = False
    outcomes = await asyncio.gather(
        *(producer.send(Message("NoSuchTopicAB", b"m:0"), queue=queue) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(o, Exception) for o in outcomes), outcomes
    assert len({type(o) for o in outcomes}) == 1


async def test_auto_batch_send_whose_deadline_passed_while_held_times_out(cluster):
    await make_topic(cluster, "TAB3", 1)
    producer = cluster.track(Producer("pab4", cluster.ns, auto_batch=True))
    await producer.start()
    with pytest.raises(MQClientError, match="timed out"):
        await producer.send(Message("TAB3", b"m:0"), timeout=1e-9)
    # the accumulator is not stuck: the next send goes through
    assert (await producer.send(Message("TAB3", b"m:1"))).status == SendStatus.SEND_OK
