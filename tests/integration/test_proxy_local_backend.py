"""LocalBackend (proxy local mode): sends to this broker skip remoting, with the same
queues, stored properties and statuses as ClusterBackend's remoting sends."""

from __future__ import annotations

import asyncio

import pytest

from ledgermq.broker import topics as t
from ledgermq.broker.broker import Broker
from ledgermq.client.admin import AdminClient
from ledgermq.common.message import (
    MessageExt,
    MessageQueue,
    decode_records,
    parse_offset_msg_id,
)
from ledgermq.proxy.backend import ClusterBackend
from ledgermq.proxy.config import ProxyConfig
from ledgermq.proxy.local_backend import LocalBackend
from ledgermq.proxy.message_codec import SendLimits, queue_for_group, to_outgoing
from ledgermq.proxy.protocol import definition_pb2 as pb
from ledgermq.proxy.status import Code, ProxyError
from tests.cluster import InProcessCluster

LIMITS = SendLimits(max_body_size=4 * 1024 * 1024, delay_levels_ms=[1000, 5000])


def message(topic: str, i: int, **system: object) -> pb.Message:
    sp = pb.SystemProperties(
        message_id=f"01AABBCCDDEEFF0000{i:016X}", body_encoding=pb.IDENTITY, **system
    )
    return pb.Message(
        topic=pb.Resource(name=topic),
        body=f"body-{i}".encode(),
        user_properties={"color": "red"},
        system_properties=sp,
    )


@pytest.fixture
async def cluster(tmp_path):
    c = InProcessCluster(tmp_path, 2)
    await c.start()
    admin = AdminClient(c.ns)
    await admin.start()
    try:
        # Local (on broker-a, where the proxy runs) and Remote (only on broker-b).
        for topic, broker in (("Local", c.brokers[0]), ("Remote", c.brokers[1])):
            await admin.create_topic(
                topic, broker_addr=broker.address, read_queue_nums=4, write_queue_nums=4
            )
        for broker in c.brokers:
            await broker.register_now()
        yield c, admin
    finally:
        await admin.shutdown()
        await c.stop()


async def backends(c: InProcessCluster) -> tuple[LocalBackend, ClusterBackend]:
    config = ProxyConfig(namesrv_addr=c.ns)
    local = LocalBackend(config, c.brokers[0])
    remote = ClusterBackend(config)
    await local.start()
    await remote.start()
    return local, remote


def stored(c: InProcessCluster, mq: MessageQueue, offset: int) -> MessageExt:
    """The message at `offset` of `mq`, read from its broker's store."""
    broker = next(b for b in c.brokers if b.config.broker_name == mq.broker_name)
    got = broker.store.get(mq.topic, mq.queue_id, offset, 1, 1 << 30, None)
    (msg,) = [m for raw in got.records for m in decode_records(raw)]
    return msg


async def test_local_sends_land_in_the_chosen_queue_with_the_remoting_properties(cluster):
    c, _ = cluster
    local, remote = await backends(c)
    try:
        sent = []
        for i in range(8):
            out = to_outgoing(message("Local", i, tag="TagA", keys=["k1", "k2"]), LIMITS, 0)
            sent.append((out, await local.send(out)))
        assert local.local_sends == 8, "every send to this broker skipped remoting"
        queues = {outcome.queue.queue_id for _, outcome in sent}
        assert queues == {0, 1, 2, 3}, "round robin over the write queues"
        for out, outcome in sent:
            assert outcome.code == Code.OK and outcome.queue.broker_name == "broker-a"
            m = stored(c, outcome.queue, outcome.queue_offset)
            assert m.body == out.body and m.queue_id == outcome.queue.queue_id
            assert m.properties["UNIQ_KEY"] == out.message_id
            assert m.properties["TAGS"] == "TagA" and m.properties["KEYS"] == "k1 k2"
            assert m.properties["color"] == "red"
            assert m.properties["CLUSTER"] == "DefaultCluster"
            assert m.offset_msg_id == outcome.offset_msg_id

        # The same message through remoting is stored with the same properties.
        out = to_outgoing(message("Local", 99, tag="TagA", keys=["k1", "k2"]), LIMITS, 0)
        via_remoting = await remote.send(out)
        r = stored(c, via_remoting.queue, via_remoting.queue_offset)
        out = to_outgoing(message("Local", 100, tag="TagA", keys=["k1", "k2"]), LIMITS, 0)
        via_local = await local.send(out)
        m = stored(c, via_local.queue, via_local.queue_offset)
        assert {k: v for k, v in m.properties.items() if k != "UNIQ_KEY"} == {
            k: v for k, v in r.properties.items() if k != "UNIQ_KEY"
        }
        assert m.sys_flag == r.sys_flag and m.flag == r.flag

        # FIFO: one group, one queue, as the remoting path picks it.
        group = [
            await local.send(to_outgoing(message("Local", 200 + i, message_group="g-7"), LIMITS, 0))
            for i in range(3)
        ]
        assert {o.queue.queue_id for o in group} == {queue_for_group("g-7", 4)}
        offsets = [o.queue_offset for o in group]
        assert offsets == sorted(offsets) and len(set(offsets)) == 3
    finally:
        await local.stop()
        await remote.stop()


async def test_delay_and_transaction_sends_take_the_broker_paths(cluster):
    c, _ = cluster
    local, remote = await backends(c)
    try:
        # 3 s from "now" (0): level 2 (5 s) of LIMITS; the broker's level 2 is 5 s too.
        delayed = to_outgoing(message("Local", 1, delivery_timestamp={"seconds": 3}), LIMITS, 0)
        assert delayed.delay_level == 2
        outcome = await local.send(delayed)
        assert outcome.code == Code.OK
        held = stored(c, MessageQueue(t.SCHEDULE_TOPIC, "broker-a", 1), 0)
        assert held.properties["REAL_TOPIC"] == "Local"

        tx = to_outgoing(message("Local", 2, message_type=pb.TRANSACTION), LIMITS, 0)
        outcome = await local.send(tx)
        assert outcome.code == Code.OK and outcome.transaction_id
        half = stored(c, MessageQueue(t.TRANS_HALF_TOPIC, "broker-a", 0), 0)
        assert half.properties["REAL_TOPIC"] == "Local"
        assert half.properties["REAL_QID"] == str(outcome.queue.queue_id)
        assert half.properties["UNIQ_KEY"] == tx.message_id
        assert local.local_sends == 2
    finally:
        await local.stop()
        await remote.stop()


async def test_a_queue_on_another_broker_goes_over_remoting(cluster):
    c, _ = cluster
    local, remote = await backends(c)
    try:
        out = to_outgoing(message("Remote", 1), LIMITS, 0)
        outcome = await local.send(out)
        assert local.local_sends == 0
        assert outcome.code == Code.OK and outcome.queue.broker_name == "broker-b"
        m = stored(c, outcome.queue, outcome.queue_offset)
        assert m.properties["UNIQ_KEY"] == out.message_id
    finally:
        await local.stop()
        await remote.stop()


async def _both_fail(local: LocalBackend, remote: ClusterBackend) -> tuple[ProxyError, ProxyError]:
    errors = []
    for i, backend in enumerate((local, remote)):
        with pytest.raises(ProxyError) as info:
            await backend.send(to_outgoing(message("Local", 500 + i), LIMITS, 0))
        errors.append(info.value)
    return errors[0], errors[1]


async def test_a_slave_refuses_with_the_remoting_status(cluster, monkeypatch):
    c, _ = cluster
    local, remote = await backends(c)
    try:
        await local.route("Local")
        await remote.route("Local")
        monkeypatch.setattr(Broker, "is_slave", property(lambda self: True))
        mine, theirs = await _both_fail(local, remote)
        assert mine.code == theirs.code == Code.INTERNAL_SERVER_ERROR
        assert "slave" in mine.message and mine.message == theirs.message
    finally:
        await local.stop()
        await remote.stop()


async def test_a_non_writable_broker_refuses_with_the_remoting_status(cluster):
    c, _ = cluster
    local, remote = await backends(c)
    try:
        await local.route("Local")
        await remote.route("Local")
        c.brokers[0].config.broker_permission = t.PERM_READ
        mine, theirs = await _both_fail(local, remote)
        assert mine.code == theirs.code == Code.FORBIDDEN
        assert mine.message == theirs.message
    finally:
        await local.stop()
        await remote.stop()


async def test_a_store_that_refuses_the_put_gives_the_remoting_status(cluster, monkeypatch):
    """A put the store refuses (e.g. the disk is full) maps like the remoting reply."""
    c, _ = cluster
    local, remote = await backends(c)
    try:
        await local.route("Local")
        await remote.route("Local")
        port = c.brokers[0].store
        real_put = type(port).put

        def refuse(self, msg):
            outcome = real_put(self, msg)
            outcome.status, outcome.remark = "SERVICE_NOT_AVAILABLE", "disk full"
            return outcome

        monkeypatch.setattr(type(port), "put", refuse)
        monkeypatch.setattr(
            type(port), "put_group", lambda self, msgs: [refuse(self, m) for m in msgs]
        )
        mine, theirs = await _both_fail(local, remote)
        assert mine.code == theirs.code == Code.INTERNAL_SERVER_ERROR
        assert "disk full" in mine.message and mine.message == theirs.message
    finally:
        await local.stop()
        await remote.stop()


async def test_concurrent_sends_are_answered_each(cluster):
    c, _ = cluster
    local, remote = await backends(c)
    try:
        outs = [to_outgoing(message("Local", 700 + i), LIMITS, 0) for i in range(20)]
        outcomes = await asyncio.gather(*(local.send(out) for out in outs))
        assert local.local_sends == 20
        positions = {(o.queue.queue_id, o.queue_offset) for o in outcomes}
        assert len(positions) == 20, "each send has its own queue offset"
        for out, outcome in zip(outs, outcomes, strict=True):
            assert outcome.code == Code.OK
            assert stored(c, outcome.queue, outcome.queue_offset).properties["UNIQ_KEY"] == (
                out.message_id
            )
    finally:
        await local.stop()
        await remote.stop()


async def test_sync_flush_sends_wait_for_the_fsync_like_remoting_ones(tmp_path):
    c = InProcessCluster(tmp_path, 1, flush_disk_type="SYNC_FLUSH")
    await c.start()
    admin = AdminClient(c.ns)
    await admin.start()
    try:
        await admin.create_topic(
            "Local", broker_addr=c.broker.address, read_queue_nums=4, write_queue_nums=4
        )
        await c.broker.register_now()
        local, remote = await backends(c)
        try:
            out = to_outgoing(message("Local", 1), LIMITS, 0)
            outcome = await local.send(out)
            assert local.local_sends == 1 and outcome.code == Code.OK
            assert stored(c, outcome.queue, outcome.queue_offset).properties["UNIQ_KEY"] == (
                out.message_id
            )
            # answered once durable: the commit log is flushed past this message's start
            start = parse_offset_msg_id(outcome.offset_msg_id)[2]
            assert c.broker.store.store.flushed_physical_offset > start
        finally:
            await local.stop()
            await remote.stop()
    finally:
        await admin.shutdown()
        await c.stop()
