"""SlaveSync over real sockets: a slave broker copies its master's metadata."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ledgermq.broker.broker import Broker
from ledgermq.broker.config import BrokerConfig
from ledgermq.broker.slave_sync import SlaveSync
from ledgermq.broker.topics import TRACE_TOPIC
from ledgermq.common.message import encode_properties
from ledgermq.common.route_data import TopicConfig
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.connection import Dispatcher, RemotingConnection
from ledgermq.remoting.server import RemotingServer
from tests.integration.test_broker import wait_until
from tests.procs import free_port

pytestmark = pytest.mark.timeout(60)


def make_config(root: Path, **props: str) -> BrokerConfig:
    base = {
        "brokerName": "broker-a",
        "brokerIP1": "127.0.0.1",
        "listenPort": "0",
        "storePathRootDir": str(root / "store"),
        "mappedFileSizeCommitLog": str(1 << 20),
        "messageDelayLevel": "1s 2s",
    }
    base.update(props)
    return BrokerConfig.from_properties(base)


class Cluster:
    """A master and a slave of the same brokerName, each with its own store directory;
    no NameServer: the slave is told its master's address directly."""

    def __init__(self, tmp_path: Path) -> None:
        self.master = Broker(make_config(tmp_path / "m"), host="127.0.0.1")
        # The slave enables the trace topic and the master does not: a local-only
        # system topic, which a sync must keep.
        self.slave = Broker(
            make_config(tmp_path / "s", brokerRole="SLAVE", brokerId="1", traceTopicEnable="true"),
            host="127.0.0.1",
        )
        self.client = RemotingClient()

    async def call(
        self, code: int, ext: dict[str, Any] | None = None, body: bytes = b""
    ) -> RemotingCommand:
        cmd = RemotingCommand(
            code=code, ext_fields={k: str(v) for k, v in (ext or {}).items()}, body=body
        )
        reply = await self.client.invoke(self.master.address, cmd, 5)
        assert reply.code == ResponseCode.SUCCESS, reply.remark
        return reply

    async def create_topic(self, topic: str, queues: int, perm: int = 6) -> None:
        await self.call(
            RequestCode.UPDATE_AND_CREATE_TOPIC,
            {
                "topic": topic,
                "defaultTopic": "TBW102",
                "readQueueNums": queues,
                "writeQueueNums": queues,
                "perm": perm,
                "topicFilterType": "SINGLE_TAG",
            },
        )

    async def commit(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        await self.call(
            RequestCode.UPDATE_CONSUMER_OFFSET,
            {"consumerGroup": group, "topic": topic, "queueId": queue_id, "commitOffset": offset},
        )

    async def send_delayed(self, topic: str, body: bytes, level: int) -> None:
        await self.call(
            RequestCode.SEND_MESSAGE,
            {
                "producerGroup": "PG",
                "topic": topic,
                "defaultTopic": "TBW102",
                "defaultTopicQueueNums": 4,
                "queueId": 0,
                "sysFlag": 0,
                "bornTimestamp": 1700000000000,
                "flag": 0,
                "properties": encode_properties({"DELAY": str(level), "UNIQ_KEY": body.hex()}),
                "reconsumeTimes": 0,
            },
            body,
        )


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path)
    await c.master.start()
    await c.slave.start()
    try:
        yield c
    finally:
        await c.client.close()
        await c.slave.stop()
        await c.master.stop()


def snapshot(broker: Broker) -> dict[str, Any]:
    return {
        "topics": broker.topic_config.to_json(),
        "offsets": broker.consumer_offsets.to_json(),
        "delay": broker.schedule.to_json(),
        "groups": broker.subscription_groups.to_json(),
    }


def on_disk(broker: Broker, name: str) -> dict[str, Any]:
    return json.loads((broker.config.config_dir / name).read_text())


async def test_sync_once_copies_topics_offsets_delay_offsets_and_groups(cluster: Cluster) -> None:
    m, s = cluster.master, cluster.slave
    await cluster.create_topic("SyncT", 4)
    group = {"groupName": "SyncG", "retryMaxTimes": 3, "consumeBroadcastEnable": False}
    await cluster.call(
        RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body=json.dumps(group).encode()
    )
    await cluster.commit("SyncG", "SyncT", 0, 5)
    await cluster.commit("SyncG", "SyncT", 2, 9)
    await cluster.send_delayed("Later", b"d1", level=1)
    # Delivery advances level 1's progress on the master (1 s delay).
    await wait_until(lambda: m.schedule.offsets.get(1) == 1, timeout=10)
    # State only the slave has: a user topic the master does not know (gone after the
    # sync, as in RocketMQ) and an offset the master does not know (kept: putAll).
    s.topic_config.update(TopicConfig("SlaveOnlyT", 1, 1))
    s.consumer_offsets.commit("LocalG", "LocalT", 0, 3)
    s.consumer_offsets.commit("SyncG", "SyncT", 1, 77)  # overwritten by the master's entry

    sync = SlaveSync(s)
    await sync.sync_once(m.address)

    assert sync.rounds == 1
    # Topics: the master's table and version, plus the slave's local system topic.
    assert s.topic_config.data_version == m.topic_config.data_version
    for name, cfg in m.topic_config.table.items():
        assert s.topic_config.get(name) == cfg, name
    assert s.topic_config.get("SyncT").read_queue_nums == 4
    assert s.topic_config.get("SlaveOnlyT") is None
    assert TRACE_TOPIC in s.topic_config.table and TRACE_TOPIC not in m.topic_config.table
    # Offsets: the master's entry replaces ours whole; entries only we have stay.
    assert s.consumer_offsets.offsets_of("SyncG", "SyncT") == {0: 5, 2: 9}
    assert s.consumer_offsets.query("LocalG", "LocalT", 0) == 3
    assert s.consumer_offsets.data_version == m.consumer_offsets.data_version
    # Delay offsets and subscription groups: exactly the master's.
    assert s.schedule.offsets == m.schedule.offsets == {1: 1}
    assert s.schedule.data_version == m.schedule.data_version
    assert s.subscription_groups.table == m.subscription_groups.table
    assert s.subscription_groups.get("SyncG").retry_max_times == 3
    assert s.subscription_groups.data_version == m.subscription_groups.data_version

    # Persisted at once, not only in memory.
    assert on_disk(s, "topics.json") == s.topic_config.to_json()
    assert on_disk(s, "consumerOffset.json") == s.consumer_offsets.to_json()
    assert on_disk(s, "delayOffset.json") == s.schedule.to_json()
    assert on_disk(s, "subscriptionGroup.json") == s.subscription_groups.to_json()

    # Later changes on the master (an update, a deletion) reach the slave on the next round.
    await cluster.create_topic("SyncT", 8, perm=4)
    await cluster.call(RequestCode.DELETE_SUBSCRIPTIONGROUP, {"groupName": "SyncG"})
    await cluster.commit("SyncG", "SyncT", 0, 6)
    await sync.sync_once(m.address)
    assert s.topic_config.get("SyncT") == m.topic_config.get("SyncT")
    assert s.topic_config.get("SyncT").perm == 4
    assert s.subscription_groups.get("SyncG") is None
    assert s.consumer_offsets.query("SyncG", "SyncT", 0) == 6
    assert on_disk(s, "subscriptionGroup.json") == s.subscription_groups.to_json()


async def test_unreachable_master_leaves_state_alone_and_does_not_raise(
    cluster: Cluster,
) -> None:
    s = cluster.slave
    s.consumer_offsets.commit("G", "T", 0, 4)
    before = snapshot(s)
    sync = SlaveSync(s, timeout_s=1.0)
    await sync.sync_once(f"127.0.0.1:{free_port()}")
    await sync.sync_once(f"127.0.0.1:{free_port()}")  # the streak logs once, still no raise
    assert snapshot(s) == before
    assert sync.rounds == 0


async def test_bad_replies_leave_state_alone(cluster: Cluster) -> None:
    """A peer that answers every code, but with junk: not JSON, a JSON non-object, a
    wrapper without its table, an error code."""
    s = cluster.slave
    replies = {
        RequestCode.GET_ALL_TOPIC_CONFIG: (ResponseCode.SUCCESS, b"{not json"),
        RequestCode.GET_ALL_CONSUMER_OFFSET: (ResponseCode.SUCCESS, b"[1, 2]"),
        RequestCode.GET_ALL_DELAY_OFFSET: (ResponseCode.SUCCESS, b'{"dataVersion": {}}'),
        RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG: (ResponseCode.SYSTEM_ERROR, b""),
    }
    asked: list[int] = []

    def answer(conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        asked.append(cmd.code)
        code, body = replies[RequestCode(cmd.code)]
        return cmd.make_response(code, "junk", body=body)

    dispatcher = Dispatcher()
    for code in replies:
        dispatcher.register(code, answer)
    server = RemotingServer(dispatcher, "127.0.0.1", 0, name="junk-master")
    await server.start()
    try:
        before = snapshot(s)
        sync = SlaveSync(s)
        await sync.sync_once(f"127.0.0.1:{server.port}")
        assert snapshot(s) == before
        # One bad part does not stop the others from being asked.
        assert sorted(asked) == sorted(int(c) for c in replies)
    finally:
        await server.stop()


async def test_run_skips_without_a_master_then_syncs(cluster: Cluster) -> None:
    m, s = cluster.master, cluster.slave
    await cluster.create_topic("LoopT", 2)
    master: list[str | None] = [None]
    polls = 0

    def master_addr() -> str | None:
        nonlocal polls
        polls += 1
        return master[0]

    sync = SlaveSync(s)
    task = asyncio.get_running_loop().create_task(sync.run(master_addr, interval_s=0.01))
    try:
        await wait_until(lambda: polls >= 3, timeout=10)
        assert sync.rounds == 0 and s.topic_config.get("LoopT") is None
        master[0] = m.address
        await wait_until(lambda: s.topic_config.get("LoopT") is not None, timeout=10)
        assert s.topic_config.get("LoopT") == m.topic_config.get("LoopT")
        # Its own address is never a master to copy from.
        master[0] = s.address
        rounds = sync.rounds
        polls_then = polls
        await wait_until(lambda: polls >= polls_then + 3, timeout=10)
        assert sync.rounds == rounds
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
