"""Broker groups on DLedger: three brokers elect a master through the replicated log.

In-process (one event loop, real sockets and files): a NameServer and three brokers with
enableDLegerCommitLog=true, the Python client producing and consuming through failovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable

import pytest

from ledgermq.broker.broker import Broker
from ledgermq.broker.config import BrokerConfig
from ledgermq.client.admin import AdminClient
from ledgermq.client.lite_pull_consumer import LitePullConsumer
from ledgermq.client.message import Message, SendStatus
from ledgermq.client.producer import Producer
from ledgermq.common.config import ConfigError
from ledgermq.common.message import decode_record
from ledgermq.namesrv.config import NamesrvConfig
from ledgermq.namesrv.server import NameServer
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from tests.procs import free_port

pytestmark = pytest.mark.timeout(90)

HOST = "127.0.0.1"
GROUP = "RaftNode00"
IDS = ("n0", "n1", "n2")


async def wait_until(cond: Callable[[], object], timeout: float = 15.0, what: str = "") -> object:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}")
        await asyncio.sleep(0.02)


class Group:
    """A NameServer and one DLedger broker group of three."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.namesrv: NameServer | None = None
        self.peers = ";".join(f"{i}-{HOST}:{free_port()}" for i in IDS)
        self.brokers: dict[str, Broker] = {}
        self.clients: list = []

    @property
    def ns(self) -> str:
        assert self.namesrv is not None
        return f"{HOST}:{self.namesrv.port}"

    def config(self, self_id: str) -> BrokerConfig:
        return BrokerConfig(
            broker_name=GROUP,
            listen_port=0,
            namesrv_addr=self.ns,
            store_path_root_dir=str(self.tmp_path / self_id),
            broker_ip1=HOST,
            mapped_file_size_commit_log=1 << 20,
            enable_d_leger_commit_log=True,
            d_leger_group=GROUP,
            d_leger_peers=self.peers,
            d_leger_self_id=self_id,
            preferred_leader_id="n0",
        )

    async def start(self) -> Group:
        self.namesrv = NameServer(NamesrvConfig(user_home=str(self.tmp_path / "ns")), host=HOST)
        await self.namesrv.start()
        for i in IDS:
            await self.start_broker(i)
        return self

    async def start_broker(self, self_id: str) -> Broker:
        broker = Broker(self.config(self_id), host=HOST, register_period_floor_ms=500)
        await broker.start()
        self.brokers[self_id] = broker
        return broker

    async def master(self, timeout: float = 15.0, exclude: str | None = None) -> str:
        """The writable master; the preferred leader n0 while it runs (the group hands
        leadership to it soon after any other member won an election)."""

        def find() -> str | None:
            masters = [
                i
                for i, b in self.brokers.items()
                if i != exclude and b.broker_id == 0 and not b.is_slave
            ]
            if len(masters) != 1:
                return None
            if "n0" in self.brokers and exclude != "n0" and masters[0] != "n0":
                return None
            return masters[0]

        return await wait_until(find, timeout, "one writable master")  # type: ignore[return-value]

    def track(self, client):
        self.clients.append(client)
        return client

    async def stop(self) -> None:
        for c in reversed(self.clients):
            with contextlib.suppress(Exception):
                await c.shutdown()
        for b in self.brokers.values():
            await b.stop()
        if self.namesrv is not None:
            await self.namesrv.stop()


@pytest.fixture
async def group(tmp_path):
    g = Group(tmp_path)
    try:
        yield await g.start()
    finally:
        await g.stop()


async def create_topic(group: Group, topic: str, queues: int = 4) -> None:
    # every member learns the topic (the new master after a failover must route it)
    admin = group.track(AdminClient(group.ns))
    await admin.start()
    for broker in group.brokers.values():
        await admin.create_topic(
            topic, broker_addr=broker.address, read_queue_nums=queues, write_queue_nums=queues
        )

    async def routed() -> bool:
        try:
            route = await admin.topic_route(topic)
        except Exception:
            return False
        return any(0 in b.broker_addrs for b in route.broker_datas)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not await routed():
        assert loop.time() < deadline, "topic never reached the NameServer"
        await asyncio.sleep(0.05)


def queue_units(broker: Broker, topic: str) -> dict[int, list[tuple[int, int]]]:
    store = broker.store.store
    out: dict[int, list[tuple[int, int]]] = {}
    for qid in range(4):
        cq = store._cq(topic, qid, False)
        if cq is None:
            continue
        out[qid] = [(phy, size) for _, phy, size, _ in cq.iter_units(0, cq.max_offset)]
    return out


async def test_group_elects_one_master_and_registers_roles(group):
    master = await group.master()
    assert group.brokers[master].broker_id == 0
    slaves = {i: b.broker_id for i, b in group.brokers.items() if i != master}
    # a follower registers as brokerId = its number + 1 (n0 -> 1, n1 -> 2, n2 -> 3)
    assert slaves == {i: int(i[1:]) + 1 for i in slaves}
    admin = group.track(AdminClient(group.ns))
    await admin.start()

    async def roles() -> dict[int, str]:
        info = await admin.cluster_info()
        data = info.broker_addr_table.get(GROUP)
        return dict(data.broker_addrs) if data is not None else {}

    expected = {b.broker_id: b.address for b in group.brokers.values()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while await roles() != expected:
        assert loop.time() < deadline, f"NameServer has {await roles()}, expected {expected}"
        await asyncio.sleep(0.05)


async def test_sends_are_acked_once_replicated_and_every_replica_serves_them(group):
    master = await group.master()
    await create_topic(group, "T1")
    producer = group.track(Producer("pg", group.ns))
    await producer.start()
    sent = []
    for k in range(60):
        r = await producer.send(Message("T1", b"m%d" % k, tags="a"))
        assert r.status is SendStatus.SEND_OK
        sent.append(r)
    # offsetMsgId carries the physical offset: the entry's pos + 48 on every replica
    leader_store = group.brokers[master].dledger_member.storage.store
    for r in sent[:5]:
        phy = int(r.offset_msg_id[-16:], 16)
        assert struct.unpack_from(">q", leader_store.read_data(phy, 36), 28)[0] == phy
    # the followers dispatch the same committed records into the same queue units
    want = queue_units(group.brokers[master], "T1")
    assert sum(len(u) for u in want.values()) == 60
    await wait_until(
        lambda: all(queue_units(b, "T1") == want for b in group.brokers.values()),
        what="followers' ConsumeQueues to match the master's",
    )
    for b in group.brokers.values():
        for units in want.values():
            for phy, size in units[:3]:
                rec = b.store.read_record(phy)
                assert rec is not None and len(rec) == size
        # and index the same keys (written once per applied batch)
        await wait_until(
            lambda b=b: b.store.query_by_unique_key("T1", sent[7].msg_id), what="index"
        )
        assert len(b.store.query_by_unique_key("T1", sent[7].msg_id)) == 1
    # a consumer reads them from the master
    consumer = group.track(LitePullConsumer("cg", group.ns))
    consumer.subscribe("T1", "*")
    await consumer.start()
    got: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(got) < 60 and loop.time() < deadline:
        got += [m.body for m in await consumer.poll(1.0)]
    assert sorted(got) == sorted(b"m%d" % k for k in range(60))


async def test_a_slave_refuses_sends(group):
    master = await group.master()
    await create_topic(group, "T2")
    slave = next(b for i, b in group.brokers.items() if i != master)
    assert slave.is_slave
    client = RemotingClient()
    try:
        reply = await client.invoke(
            slave.address,
            RemotingCommand(
                code=RequestCode.SEND_MESSAGE,
                ext_fields={
                    "producerGroup": "pg2",
                    "topic": "T2",
                    "defaultTopic": "TBW102",
                    "defaultTopicQueueNums": "4",
                    "queueId": "0",
                    "sysFlag": "0",
                    "bornTimestamp": "0",
                    "flag": "0",
                    "properties": "",
                },
                body=b"nope",
            ),
        )
    finally:
        await client.close()
    assert reply.code == ResponseCode.SERVICE_NOT_AVAILABLE
    assert "slave" in (reply.remark or "")


async def test_master_failover_keeps_every_acknowledged_message(group):
    old = await group.master()
    await create_topic(group, "T3")
    producer = group.track(Producer("pg3", group.ns, retry_times=4, send_timeout=3.0))
    await producer.start()
    acked: list[bytes] = []

    async def send(body: bytes) -> None:
        for _ in range(40):
            try:
                r = await producer.send(Message("T3", body))
            except Exception:
                await asyncio.sleep(0.1)
                continue
            if r.status is SendStatus.SEND_OK:
                acked.append(body)
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{body!r} was never acknowledged")

    for k in range(40):
        await send(b"before-%d" % k)
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    await group.brokers.pop(old).stop()
    new = await group.master(exclude=old)
    assert new != old
    elected_after = loop.time() - killed_at
    for k in range(40):
        await send(b"after-%d" % k)
    # every acknowledged message can be consumed from the new master
    consumer = group.track(LitePullConsumer("cg3", group.ns))
    consumer.subscribe("T3", "*")
    await consumer.start()
    got: list[bytes] = []
    deadline = loop.time() + 30
    while not set(acked) <= set(got) and loop.time() < deadline:
        got += [m.body for m in await consumer.poll(1.0)]
    assert set(acked) <= set(got), f"lost: {sorted(set(acked) - set(got))[:5]}"
    assert elected_after < 5, elected_after
    # the old master comes back as a follower and catches up
    back = await group.start_broker(old)
    assert back.is_slave  # it rejoins as a follower (later the group may hand it back
    # the leadership: n0 is the preferred leader)
    want = queue_units(group.brokers[new], "T3")
    await wait_until(lambda: queue_units(back, "T3") == want, what="the old master to catch up")


def test_dledger_config_is_checked():
    base = dict(broker_name="b", enable_d_leger_commit_log=True, d_leger_group="g")
    with pytest.raises(ConfigError, match="dLegerPeers"):
        BrokerConfig(**base, d_leger_peers="garbage", d_leger_self_id="n0").validate()
    with pytest.raises(ConfigError, match="dLegerSelfId"):
        BrokerConfig(**base, d_leger_peers="n0-127.0.0.1:1", d_leger_self_id="n7").validate()
    with pytest.raises(ConfigError, match="preferredLeaderId"):
        BrokerConfig(
            **base, d_leger_peers="n0-127.0.0.1:1", d_leger_self_id="n0", preferred_leader_id="x"
        ).validate()
    ok = BrokerConfig(**base, d_leger_peers="n0-h:1;n1-h:2;n12-h:3", d_leger_self_id="n12")
    ok.validate()
    assert ok.dledger_slave_id() == 13


async def test_admin_shows_each_group_term_leader_commit_and_match_indexes(group):
    from tests.cluster import run_cli

    master = await group.master()
    await create_topic(group, "T4")
    producer = group.track(Producer("pg4", group.ns))
    await producer.start()
    for k in range(10):
        assert (await producer.send(Message("T4", b"x%d" % k))).status is SendStatus.SEND_OK
    leader = group.brokers[master].dledger_member
    # wait until every member holds the leader's whole log (the match indexes settle)
    await wait_until(
        lambda: (
            all(
                b.dledger_member.storage.store.last_index == leader.storage.store.last_index
                for b in group.brokers.values()
            )
            and set(leader.metadata()["matchIndex"].values()) == {leader.storage.store.last_index}
        )
    )
    r = await run_cli("admin", "dledgerStatus", "-n", group.ns, "--json", timeout=60)
    (status,) = r.json()
    assert status["group"] == GROUP and status["brokerName"] == GROUP
    assert status["leaderId"] == master
    assert status["term"] == leader.node.term
    assert status["commitIndex"] >= leader.storage.store.last_index - 1
    members = {m["selfId"]: m for m in status["members"]}
    assert set(members) == set(IDS)
    assert members[master]["brokerId"] == 0 and members[master]["role"] == "leader"
    for i, m in members.items():
        assert m["matchIndex"] == leader.storage.store.last_index, (i, m)
        assert m["brokerId"] == group.brokers[i].broker_id
    # the plain table, and clusterList with the current roles
    r = await run_cli("admin", "dledgerStatus", "-n", group.ns, timeout=60)
    assert r.rc == 0 and f"leader {master}" in r.out, r
    r = await run_cli("admin", "clusterList", "-n", group.ns, "--json", timeout=60)
    rows = r.json()
    assert {row["brokerId"]: row["addr"] for row in rows} == {
        b.broker_id: b.address for b in group.brokers.values()
    }


async def test_committed_consumer_offsets_survive_a_failover_exactly(group):
    # RocketMQ's slaves copy offsets every 10 s; here a commit is acknowledged once the
    # group's log holds it, so the next master knows every acknowledged commit
    old = await group.master()
    await create_topic(group, "T5")
    client = RemotingClient()
    try:
        committed = {0: 3, 1: 4, 2: 5, 3: 6}
        for qid, offset in committed.items():
            reply = await client.invoke(
                group.brokers[old].address,
                RemotingCommand(
                    code=RequestCode.UPDATE_CONSUMER_OFFSET,
                    ext_fields={
                        "consumerGroup": "cg5",
                        "topic": "T5",
                        "queueId": str(qid),
                        "commitOffset": str(offset),
                    },
                ),
            )
            assert reply.code == ResponseCode.SUCCESS, reply.remark
        await group.brokers.pop(old).stop()  # at once: no time for any periodic copy
        new = await group.master(exclude=old)
        offsets = group.brokers[new].consumer_offsets
        assert {q: offsets.query("cg5", "T5", q) for q in committed} == committed
        # and the new master takes commits the same way
        reply = await client.invoke(
            group.brokers[new].address,
            RemotingCommand(
                code=RequestCode.UPDATE_CONSUMER_OFFSET,
                ext_fields={
                    "consumerGroup": "cg5",
                    "topic": "T5",
                    "queueId": "0",
                    "commitOffset": "9",
                },
            ),
        )
        assert reply.code == ResponseCode.SUCCESS
        follower = next(b for i, b in group.brokers.items() if i != new)
        await wait_until(lambda: follower.consumer_offsets.query("cg5", "T5", 0) == 9)
    finally:
        await client.close()


async def test_a_deposed_leaders_dispatch_facts_never_describe_another_record(group):
    # A leader remembers what it proposed at each offset to skip decoding on apply. If
    # it is deposed, the next leader's record may take that offset; the member must then
    # dispatch the record it applies, not the one it once proposed there (found by the
    # SIGSTOP test: the old master's ConsumeQueue pointed at the wrong messages).
    from ledgermq.store.dledger_commitlog import _Dispatch
    from ledgermq.store.message_store import MessageToStore

    master = await group.master()
    await create_topic(group, "T6")
    follower = next(b for i, b in group.brokers.items() if i != master)
    fstore = follower.store.store
    phy = group.brokers[master].dledger_member.log_end_pos() + 48
    stale_cq = fstore._cq("T6", 3, True)
    fstore._proposed[phy] = _Dispatch(
        stale_cq, 999, 10, 0, MessageToStore("T6", 3, b"gone"), 0, b"the deposed proposal"
    )
    producer = group.track(Producer("pg6", group.ns))
    await producer.start()
    from ledgermq.client.message import MessageQueue

    r = await producer.send(Message("T6", b"real"), queue=MessageQueue("T6", GROUP, 1))
    assert r.status is SendStatus.SEND_OK and int(r.offset_msg_id[-16:], 16) == phy
    await wait_until(lambda: fstore.get_max_offset("T6", 1) == 1, what="the follower's unit")
    assert fstore.get_max_offset("T6", 3) == 0  # nothing dispatched from the stale facts
    got = fstore.get_messages("T6", 1, 0, 1)
    assert got.messages and b"real" in got.messages[0]


async def test_pipelined_sends_are_not_acknowledged_without_a_majority(group):
    # sends that arrive in one read are stored as one group (put_group): each must still
    # wait for the group's log, not be answered SEND_OK at once (found by the fault tests)
    from ledgermq.client.message import MessageQueue

    master = await group.master()
    await create_topic(group, "T7")
    producer = group.track(Producer("pg7", group.ns, retry_times=0, send_timeout=6.0))
    await producer.start()
    assert (await producer.send(Message("T7", b"warm"))).status is SendStatus.SEND_OK
    for i in [i for i in group.brokers if i != master]:
        await group.brokers.pop(i).stop()
    results = await asyncio.gather(
        *(
            producer.send(Message("T7", b"p%d" % k), queue=MessageQueue("T7", GROUP, k % 4))
            for k in range(8)
        ),
        return_exceptions=True,
    )
    acked = [
        r for r in results if not isinstance(r, BaseException) and r.status is SendStatus.SEND_OK
    ]
    assert not acked, f"{len(acked)} sends acknowledged with no majority to hold them"


async def test_a_record_not_yet_committed_cannot_be_viewed_by_its_offset(group):
    # consumers only see committed records (ConsumeQueues are built from them); looking
    # a record up by offset (VIEW_MESSAGE_BY_ID, the offsetMsgId) must not show one that
    # sits in the leader's log without a majority and that a new leader may replace
    from ledgermq.client.errors import MQClientError
    from ledgermq.client.message import MessageQueue
    from ledgermq.common.message import offset_msg_id, parse_offset_msg_id

    master = await group.master()
    await create_topic(group, "T7v")
    producer = group.track(Producer("pg7v", group.ns, retry_times=0, send_timeout=2.0))
    await producer.start()
    committed = await producer.send(Message("T7v", b"committed"))
    assert committed.status is SendStatus.SEND_OK
    admin = group.track(AdminClient(group.ns))
    await admin.start()
    assert (await admin.view_message(committed.offset_msg_id)).body == b"committed"

    for i in [i for i in group.brokers if i != master]:
        await group.brokers.pop(i).stop()
    with contextlib.suppress(Exception):
        await producer.send(Message("T7v", b"pending"), queue=MessageQueue("T7v", GROUP, 0))
    member = group.brokers[master].dledger_member
    store = member.storage.store
    pending = store.get(store.last_index)
    assert pending.index > member.applied - 1, "the lone leader committed an entry"
    phy = pending.pos + 48  # the record is the body of the entry whose header is at pos
    assert group.brokers[master].store.read_record(phy) is None
    ip, port, _ = parse_offset_msg_id(committed.offset_msg_id)
    with pytest.raises(MQClientError):
        await admin.view_message(offset_msg_id((ip, port), phy))
    # the committed one is still there
    assert (await admin.view_message(committed.offset_msg_id)).body == b"committed"


async def test_slave_reads_when_enabled(group):
    # slaveReadEnable: a consumer far behind is sent to a slave (whichBrokerWhenConsumeSlowly),
    # and a slave serves pulls from its committed queues; without it a slave sends the
    # consumer back to the master (PULL_RETRY_IMMEDIATELY)
    from ledgermq.client.message import MessageQueue

    master = await group.master()
    await create_topic(group, "T8")
    producer = group.track(Producer("pg8", group.ns))
    await producer.start()
    for k in range(10):
        r = await producer.send(Message("T8", b"s%d" % k), queue=MessageQueue("T8", GROUP, 0))
        assert r.status is SendStatus.SEND_OK
    for b in group.brokers.values():
        b.config.slave_read_enable = True
        b.config.access_message_in_memory_max_ratio = 0  # every consumer counts as behind
    slave = next(b for i, b in group.brokers.items() if i != master)
    await wait_until(lambda: slave.store.max_offset("T8", 0) == 10, what="the slave's queue")

    client = RemotingClient()

    async def pull(broker: Broker):
        return await client.invoke(
            broker.address,
            RemotingCommand(
                code=RequestCode.PULL_MESSAGE,
                ext_fields={
                    "consumerGroup": "cg8",
                    "topic": "T8",
                    "queueId": "0",
                    "queueOffset": "0",
                    "maxMsgNums": "32",
                    "sysFlag": "0",
                    "commitOffset": "-1",
                    "suspendTimeoutMillis": "0",
                    "subVersion": "0",
                    "subscription": "*",
                },
            ),
        )

    try:
        from_master = await pull(group.brokers[master])
        assert from_master.code == ResponseCode.SUCCESS
        assert from_master.ext_fields["suggestWhichBrokerId"] == "1"
        from_slave = await pull(slave)
        assert from_slave.code == ResponseCode.SUCCESS
        assert from_slave.body == from_master.body  # the same committed records
        slave.config.slave_read_enable = False
        refused = await pull(slave)
        assert refused.code == ResponseCode.PULL_RETRY_IMMEDIATELY
        assert refused.ext_fields["suggestWhichBrokerId"] == "0"
        group.brokers[master].config.access_message_in_memory_max_ratio = 40
        assert (await pull(group.brokers[master])).ext_fields["suggestWhichBrokerId"] == "0"
    finally:
        await client.close()


async def test_topics_and_delay_progress_reach_every_member_through_the_log(group):
    # (the slaves copy only subscription groups from the master in a DLedger group, so
    # these can only have come through the log)
    master = await group.master()
    admin = group.track(AdminClient(group.ns))
    await admin.start()
    await admin.create_topic(
        "T9", broker_addr=group.brokers[master].address, read_queue_nums=3, write_queue_nums=3
    )
    followers = [b for i, b in group.brokers.items() if i != master]
    want = group.brokers[master].topic_config.get("T9")
    assert want is not None and want.write_queue_nums == 3
    await wait_until(
        lambda: all(b.topic_config.get("T9") == want for b in followers), what="T9 everywhere"
    )
    # a delayed message (level 1: 1 s): the master's delivery progress reaches the others
    producer = group.track(Producer("pg9", group.ns))
    await producer.start()
    r = await producer.send(Message("T9", b"later", delay_level=1))
    assert r.status is SendStatus.SEND_OK
    schedule = group.brokers[master].schedule
    await wait_until(lambda: schedule.offsets.get(1, 0) >= 1, timeout=15, what="delivery")
    await wait_until(
        lambda: all(b.schedule.offsets.get(1, 0) == schedule.offsets[1] for b in followers),
        what="the delay progress on every member",
    )
    # and after a failover the new master knows both
    await group.brokers.pop(master).stop()
    new = await group.master(exclude=master)
    assert group.brokers[new].topic_config.get("T9") == want
    assert group.brokers[new].schedule.offsets.get(1, 0) >= 1


async def test_due_delayed_messages_are_delivered_one_replication_round_per_batch(group):
    # each delivered message must be held by a majority before the schedule offset moves
    # past it; waiting for each on its own made delivery one replication round per
    # message. The re-puts of one batch are log entries in order: the last one's round
    # covers them all.
    master = await group.master()
    await create_topic(group, "T9b")
    broker = group.brokers[master]
    schedule = broker.schedule
    await schedule.stop()  # let them all become due before delivery starts
    producer = group.track(Producer("pg9b", group.ns))
    await producer.start()
    results = await asyncio.gather(
        *(producer.send(Message("T9b", b"d%d" % k, delay_level=1)) for k in range(40))
    )
    assert all(r.status is SendStatus.SEND_OK for r in results)
    port = schedule._store
    rounds = 0
    wait_durable = port.wait_durable

    async def counted(outcome):
        nonlocal rounds
        rounds += 1
        return await wait_durable(outcome)

    port.wait_durable = counted
    real_clock = schedule._clock_ms
    schedule._clock_ms = lambda: real_clock() + 2_000  # level 1 is 1 s: all of them due
    before = schedule.delivered
    schedule.start()
    await wait_until(lambda: schedule.offsets.get(1, 0) >= 40, what="delivery of all 40")
    assert schedule.delivered - before == 40
    assert rounds == 2, f"{rounds} replication waits for 40 messages in batches of 32"
    delivered = sum(len(units) for units in queue_units(broker, "T9b").values())
    assert delivered == 40


async def test_a_restarted_member_resumes_after_what_it_had_applied(group):
    # ConsumeQueues, index and metadata are checkpointed with the applied index; a
    # restart must not decode and dispatch the whole log again (hours for a big one)
    master = await group.master()
    await create_topic(group, "T10")
    producer = group.track(Producer("pg10", group.ns))
    await producer.start()
    for k in range(30):
        assert (await producer.send(Message("T10", b"r%d" % k))).status is SendStatus.SEND_OK
    follower_id = next(i for i in group.brokers if i != master)
    follower = group.brokers[follower_id]
    want = queue_units(group.brokers[master], "T10")
    await wait_until(lambda: queue_units(follower, "T10") == want, what="the follower's queues")
    applied = follower.dledger_member.applied
    max_offset = follower.store.store.max_physical_offset
    assert max_offset > 0
    await group.brokers.pop(follower_id).stop()  # a clean stop checkpoints
    back = await group.start_broker(follower_id)
    store = back.store.store
    assert store.applied_index() >= applied - 1
    assert back.dledger_member.applied >= applied  # resumed, not replayed from 0
    assert store.replayed == 0
    assert queue_units(back, "T10") == want
    # what it applied before the restart is readable by offset, and counts in its max
    # offset, though none of it was applied again
    log_end = back.dledger_member.storage.store.write_pos
    assert max_offset <= store.max_physical_offset <= log_end
    first_phy = min(phy for units in want.values() for phy, _ in units)
    record = store.read_record(first_phy)
    assert record is not None and decode_record(record)[0].body == b"r0"
    # and it goes on applying what comes next
    for k in range(5):
        assert (await producer.send(Message("T10", b"n%d" % k))).status is SendStatus.SEND_OK
    want = queue_units(group.brokers[master], "T10")
    await wait_until(lambda: queue_units(back, "T10") == want, what="the new messages")


async def test_master_services_survive_losing_and_regaining_leadership_at_once(group):
    # the last term's stop of the delay, transaction and revive services ran after the
    # new term had started them, and stopped the new ones (nothing revived or checked)
    master_id = await group.master()
    b = group.brokers[master_id]
    term = b.dledger_member.node.term
    b._become_slave("a test flap")
    await b._become_master(term)
    if b._schedule_stopping is not None:
        await b._schedule_stopping
    if b.pop._stopping is not None:
        await b.pop._stopping
    assert b.schedule._tasks and not any(t.done() for t in b.schedule._tasks)
    assert b.transactions._task is not None and not b.transactions._task.done()
    assert b.pop.revive.running and len(b.pop.revive._queues) == b.pop.revive_queue_num


async def test_a_deposed_masters_service_progress_is_dropped(group):
    # a reviver or checker round ending after its broker lost leadership must not write
    # its floors locally (that node, master again, would skip records the log lost)
    master_id = await group.master()
    slave = next(b for i, b in group.brokers.items() if i != master_id)
    before = slave.consumer_offsets.query("CID_RMQ_SYS_TRANS", "T", 0)
    assert slave.commit_master_progress("CID_RMQ_SYS_TRANS", "T", 0, 99) is None
    assert slave.consumer_offsets.query("CID_RMQ_SYS_TRANS", "T", 0) == before
    master = group.brokers[master_id]
    committed = master.commit_master_progress("CID_RMQ_SYS_TRANS", "T", 0, 99, wait=True)
    assert committed is not None
    await committed
    assert master.consumer_offsets.query("CID_RMQ_SYS_TRANS", "T", 0) == 99


async def test_master_services_stop_even_when_woken_as_they_are_cancelled(group):
    # Python 3.11's wait_for can swallow a cancellation that races with a wake-up: the
    # services must still end (a stuck stop would wedge the next role change)
    master_id = await group.master()
    b = group.brokers[master_id]
    b.transactions.wake()
    for level in range(len(b.schedule.levels_ms)):
        b.schedule.notify_arrival(level)
    b.pop.revive.notify()
    await asyncio.wait_for(b._stop_master_services(), 5)
    await asyncio.wait_for(b.pop.revive.stop(), 5)
    assert not b.schedule._tasks and b.transactions._task is None and not b.pop.revive.running
