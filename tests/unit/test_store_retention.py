"""Retention: expired CommitLog files go at deleteWhen or under disk pressure, and the
ConsumeQueues and index follow the CommitLog's new minimum (RocketMQ's CleanCommitLogService
and CleanConsumeQueueService). Real files in temp dirs, an injected clock and hour of day,
and FaultyDisk.usage_override for disk pressure; no sleeps except the periodic-task check."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from ledgermq.common.message import decode_records
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, SerializeType
from ledgermq.storage.disk import DiskUsage, FaultyDisk, OsDisk
from ledgermq.store.message_store import (
    GetMessageStatus,
    MessageStore,
    MessageToStore,
    StoreConfig,
    _local_hour,
    delete_hours,
)

HOUR = 3_600_000
CL_SIZE = 4096
T0 = 1_699_920_000_000  # a midnight (UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Hour:
    """The hour of day deleteWhen sees, set by the test independently of the clock."""

    def __init__(self, h: int = 3) -> None:
        self.h = h

    def __call__(self, _now_ms: int) -> int:
        return self.h


class ShrinkingDisk(FaultyDisk):
    """Usage falls by `per_file` points with every CommitLog file removed."""

    per_file = 0.0

    def remove(self, path: str) -> None:
        super().remove(path)
        u = self.usage_override
        if u is not None and "commitlog" in path:
            used = int(u.used - self.per_file)
            self.usage_override = DiskUsage(u.total, used, u.total - used)


def usage(pct: int) -> DiskUsage:
    return DiskUsage(total=100, used=pct, free=100 - pct)


def config(tmp_path, **kw) -> StoreConfig:
    base = dict(
        mapped_file_size_commitlog=CL_SIZE,
        mapped_file_size_consume_queue=4,  # units per CQ file
        max_hash_slot_num=16,
        max_index_num=12,
        store_host=("10.0.0.1", 10911),
        clean_interval_ms=0,  # tests drive clean_expired_files themselves
    )
    base.update(kw)
    return StoreConfig(str(tmp_path / "store"), **base)


async def open_store(tmp_path, disk, clock, hour, **kw) -> MessageStore:
    store = MessageStore(config(tmp_path, **kw), disk, clock=clock, hour_of=hour)
    await store.open()
    return store


def msg(i: int, topic="T", qid=0) -> MessageToStore:
    return MessageToStore(
        topic=topic,
        queue_id=qid,
        body=(f"body-{i}-".encode() * 40)[:300],
        properties={"KEYS": f"key{i}", "UNIQ_KEY": f"U{i}"},
        born_timestamp=1000 + i,
        born_host=("192.168.0.2", 5555),
    )


def bodies(store, topic="T", qid=0) -> list[bytes]:
    out: list[bytes] = []
    off = store.get_min_offset(topic, qid)
    while True:
        r = store.get_messages(topic, qid, off, 64, max_bytes=1 << 30)
        if r.status is not GetMessageStatus.FOUND:
            return out
        out.extend(m.body for m in decode_records(b"".join(r.messages), verify_crc=True))
        off = r.next_begin_offset


def cl_files(tmp_path) -> list[str]:
    return sorted(os.listdir(tmp_path / "store" / "commitlog"))


def cq_files(tmp_path, topic="T", qid=0) -> list[str]:
    return sorted(os.listdir(tmp_path / "store" / "consumequeue" / topic / str(qid)))


def index_files(tmp_path) -> list[str]:
    return sorted(os.listdir(tmp_path / "store" / "index"))


class Written:
    """Messages put one hour apart; remembers where each went."""

    def __init__(self) -> None:
        self.phy: list[int] = []
        self.ts: list[int] = []
        self.qo: list[int] = []

    def file_of(self, i: int) -> int:
        return self.phy[i] // CL_SIZE

    def first_in_file(self, f: int) -> int:
        return next(i for i, p in enumerate(self.phy) if p // CL_SIZE == f)

    def sealed_at(self, f: int) -> int:
        """Last write to file f: the put that rolled over to file f + 1."""
        return self.ts[self.first_in_file(f + 1)]


async def fill(store, clock, n: int, w: Written | None = None, topic="T") -> Written:
    w = w or Written()
    for _ in range(n):
        i = len(w.phy)
        r = store.put_message(msg(i, topic))
        assert r.ok, r.remark
        w.phy.append(r.commit_log_offset)
        w.ts.append(r.store_timestamp)
        w.qo.append(r.queue_offset)
        clock.now += HOUR
    await store.checkpoint()  # only durable files are deleted
    return w


# --- deleteWhen and expiry -----------------------------------------------------------------
def test_delete_when_parsing():
    assert delete_hours("04") == {4}
    assert delete_hours("04;05") == {4, 5}
    assert delete_hours("") == frozenset()
    for bad in ("4am", "24", "04;x"):
        with pytest.raises(ValueError, match="deleteWhen"):
            delete_hours(bad)
    with pytest.raises(ValueError, match="deleteWhen"):
        StoreConfig("/nonexistent", delete_when="25")
    noon = time.mktime((2024, 1, 1, 4, 30, 0, 0, 0, -1)) * 1000
    assert _local_hour(int(noon)) == 4


async def test_expired_files_go_only_at_delete_when(tmp_path):
    clock, hour = Clock(), Hour(3)
    disk = FaultyDisk(OsDisk(), usage_override=usage(10))
    store = await open_store(tmp_path, disk, clock, hour, file_reserved_time_hours=72)
    w = await fill(store, clock, 50)
    files = cl_files(tmp_path)
    assert len(files) >= 4
    # Files 0 and 1 expired, file 2 not yet.
    now = w.sealed_at(1) + 72 * HOUR
    due2 = w.sealed_at(2) + 72 * HOUR
    assert now < due2

    assert store.clean_expired_files(now) == 0  # 03:00, deleteWhen is "04"
    assert cl_files(tmp_path) == files
    hour.h = 4
    removed = store.clean_expired_files(now)
    assert cl_files(tmp_path) == files[2:]
    assert store.min_physical_offset == 2 * CL_SIZE
    assert removed >= 2  # plus ConsumeQueue and index files
    # Nothing else is due: the next round at the same time removes nothing.
    assert store.clean_expired_files(now) == 0
    assert store.clean_expired_files(due2 - 1) == 0
    # Exactly fileReservedTime after its last write, file 2 is due too.
    assert store.clean_expired_files(due2) >= 1
    assert cl_files(tmp_path) == files[3:]

    # `force` (an operator's request) ignores the hour but still only takes expired files.
    hour.h = 12
    assert store.clean_expired_files(due2, force=True) == 0
    store.clean_expired_files(w.sealed_at(3) + 72 * HOUR, force=True)
    assert cl_files(tmp_path) == files[4:]
    await store.close()


async def test_delete_when_with_several_hours(tmp_path):
    clock, hour = Clock(), Hour(5)
    disk = FaultyDisk(OsDisk(), usage_override=usage(10))
    store = await open_store(tmp_path, disk, clock, hour, delete_when="04;05")
    w = await fill(store, clock, 30)
    far = w.ts[-1] + 1000 * HOUR
    store.clean_expired_files(far)
    assert len(cl_files(tmp_path)) == 1  # everything expired, the active file stays
    await store.close()


async def test_usage_above_ratio_deletes_expired_files_at_any_hour(tmp_path):
    clock, hour = Clock(), Hour(12)
    disk = FaultyDisk(OsDisk(), usage_override=usage(80))
    store = await open_store(tmp_path, disk, clock, hour)
    w = await fill(store, clock, 50)
    files = cl_files(tmp_path)
    now = w.sealed_at(0) + 72 * HOUR  # only file 0 expired
    store.clean_expired_files(now)
    # 80% > diskMaxUsedSpaceRatio 75 but < 85: expired files go, unexpired ones stay.
    assert cl_files(tmp_path) == files[1:]
    disk.usage_override = usage(70)
    assert store.clean_expired_files(now + 10 * HOUR) == 0  # back below 75, at 12:00
    await store.close()


async def test_usage_above_forced_level_deletes_unexpired_files(tmp_path):
    clock, hour = Clock(), Hour(12)
    disk = FaultyDisk(OsDisk(), usage_override=usage(90))
    store = await open_store(tmp_path, disk, clock, hour, delete_file_batch_max=2)
    w = await fill(store, clock, 60)
    files = cl_files(tmp_path)
    assert len(files) >= 5
    now = w.ts[-1]  # nothing is expired
    # Above 85% (diskSpaceCleanForciblyRatio) the oldest go regardless, 2 per round.
    assert store.clean_expired_files(now) >= 2
    assert cl_files(tmp_path) == files[2:]
    while store.clean_expired_files(now):
        pass
    assert cl_files(tmp_path) == files[-1:]  # never the active file
    assert store.min_physical_offset == int(files[-1])
    # Still writable and readable.
    w = await fill(store, clock, 3, w)
    assert bodies(store)[-3:] == [msg(i).body for i in range(len(w.phy) - 3, len(w.phy))]
    await store.close()


async def test_forced_deletion_stops_when_usage_drops(tmp_path):
    clock, hour = Clock(), Hour(12)
    disk = ShrinkingDisk(OsDisk(), usage_override=usage(88))
    disk.per_file = 2  # 88 -> 86 -> 84: two files bring usage under 85
    store = await open_store(tmp_path, disk, clock, hour)
    w = await fill(store, clock, 60)
    files = cl_files(tmp_path)
    store.clean_expired_files(w.ts[-1])
    assert cl_files(tmp_path) == files[2:]
    await store.close()


async def test_active_file_is_never_deleted(tmp_path):
    clock, hour = Clock(), Hour(4)
    disk = FaultyDisk(OsDisk(), usage_override=usage(10))
    store = await open_store(tmp_path, disk, clock, hour, file_reserved_time_hours=0)
    await fill(store, clock, 5)
    disk.usage_override = usage(99)
    assert len(cl_files(tmp_path)) == 1
    assert store.clean_expired_files(clock.now + 10_000 * HOUR, force=True) == 0
    assert cl_files(tmp_path) == [f"{0:020d}"]
    assert bodies(store) == [msg(i).body for i in range(5)]
    await store.close()


async def test_unflushed_or_syncing_files_wait(tmp_path):
    clock, hour = Clock(), Hour(4)
    disk = FaultyDisk(OsDisk(), usage_override=usage(10))
    store = await open_store(tmp_path, disk, clock, hour)
    await fill(store, clock, 30)
    disk.usage_override = usage(99)
    first = store.commitlog.first_segment()
    store._in_flight[first] += 1  # an fsync thread is working on it
    assert store.clean_expired_files() == 0
    del store._in_flight[first]
    store.commitlog.flushed = store.min_physical_offset + 10  # not durable yet
    assert store.clean_expired_files() == 0
    await store.checkpoint()
    assert store.clean_expired_files() > 0
    await store.close()


# --- ConsumeQueue, index, reads ----------------------------------------------------------
async def test_consume_queue_and_index_follow_the_commitlog(tmp_path):
    clock, hour = Clock(), Hour(4)
    disk = FaultyDisk(OsDisk(), usage_override=usage(10))
    store = await open_store(tmp_path, disk, clock, hour)
    old = Written()
    for _ in range(6):  # a queue that only has messages in the oldest file
        r = store.put_message(msg(100, topic="OLD"))
        old.phy.append(r.commit_log_offset)
    w = await fill(store, clock, 50)
    assert all(p < CL_SIZE for p in old.phy)
    cq_before, idx_before = cq_files(tmp_path), index_files(tmp_path)
    old_cq_before = cq_files(tmp_path, "OLD")
    assert len(cq_before) > 5 and len(idx_before) > 3 and len(old_cq_before) == 2
    segs_before = {s.path: s for s in disk.segments}

    now = w.sealed_at(2) + 72 * HOUR  # files 0..2 expired
    store.clean_expired_files(now)
    phy_min = 3 * CL_SIZE
    assert store.min_physical_offset == phy_min
    first_live = next(i for i, p in enumerate(w.phy) if p >= phy_min)
    assert store.get_min_offset("T", 0) == w.qo[first_live]
    assert store.get_max_offset("T", 0) == len(w.phy)

    # ConsumeQueue files whose last unit points below the minimum are gone.
    remaining = cq_files(tmp_path)
    assert remaining == cq_before[first_live // 4 :]
    assert int(remaining[0]) // 20 <= store.get_min_offset("T", 0)
    # Index files wholly below the minimum are gone, the others stay.
    assert 0 < len(index_files(tmp_path)) < len(idx_before)
    # The OLD queue keeps its (only, last) file and its max offset, but serves nothing.
    assert cq_files(tmp_path, "OLD") == old_cq_before[-1:]
    assert store.get_min_offset("OLD", 0) == store.get_max_offset("OLD", 0) == 6
    r = store.get_messages("OLD", 0, 0, 10)
    assert r.status is GetMessageStatus.OFFSET_TOO_SMALL and r.next_begin_offset == 6
    assert store.get_messages("OLD", 0, 6, 10).status is GetMessageStatus.OFFSET_OVERFLOW_ONE

    # Removed segments were closed (mmap and descriptor released) before removal.
    gone = [p for p in segs_before if not os.path.exists(p)]
    assert len(gone) >= 3 + 2
    assert all(segs_before[p].closed for p in gone)

    # Pulls below the minimum are told where to go; from there everything is served.
    lo = store.get_min_offset("T", 0)
    r = store.get_messages("T", 0, 0, 10)
    assert r.status is GetMessageStatus.OFFSET_TOO_SMALL
    assert r.next_begin_offset == r.min_offset == lo
    assert bodies(store) == [msg(i).body for i in range(first_live, len(w.phy))]
    # Keys of removed messages are not found any more; the others are.
    assert store.query_by_key("T", "key0") == []
    assert [m.body for m in store.query_by_key("T", f"key{first_live}")] == [msg(first_live).body]
    await store.close()


async def test_restart_after_deletion_recovers_and_serves(tmp_path):
    clock, hour = Clock(), Hour(4)
    disk = FaultyDisk(OsDisk(), usage_override=usage(10))
    store = await open_store(tmp_path, disk, clock, hour)
    w = await fill(store, clock, 50)
    store.clean_expired_files(w.sealed_at(1) + 72 * HOUR)
    lo = store.get_min_offset("T", 0)
    expected = bodies(store)
    assert lo > 0 and expected
    await store.close()

    # Clean restart.
    store = await open_store(tmp_path, FaultyDisk(OsDisk(), usage_override=usage(10)), clock, hour)
    assert store.min_physical_offset == 2 * CL_SIZE
    assert store.get_min_offset("T", 0) == lo
    assert bodies(store) == expected
    w = await fill(store, clock, 2, w)
    expected += [msg(len(w.phy) - 2).body, msg(len(w.phy) - 1).body]
    await store.crash_stop()

    # Crash restart without a checkpoint: rebuilt from the first remaining file.
    os.remove(tmp_path / "store" / "checkpoint")
    store = await open_store(tmp_path, FaultyDisk(OsDisk(), usage_override=usage(10)), clock, hour)
    assert store.recovered_from == 2 * CL_SIZE
    assert store.get_min_offset("T", 0) == lo
    assert bodies(store) == expected
    r = store.get_messages("T", 0, 0, 5)
    assert r.status is GetMessageStatus.OFFSET_TOO_SMALL and r.next_begin_offset == lo
    await store.close()


async def test_restart_with_commitlog_files_gone_before_consume_queues(tmp_path):
    """A crash after CommitLog files went but before the ConsumeQueues were cleaned: the
    min offset comes from the first unit still in the log, and the leftovers go later."""
    clock, hour = Clock(), Hour(12)
    disk = FaultyDisk(OsDisk(), usage_override=usage(10))
    store = await open_store(tmp_path, disk, clock, hour)
    w = await fill(store, clock, 50)
    await store.close()
    cq_before = cq_files(tmp_path)
    for name in cl_files(tmp_path)[:2]:
        os.remove(tmp_path / "store" / "commitlog" / name)

    store = await open_store(tmp_path, FaultyDisk(OsDisk(), usage_override=usage(10)), clock, hour)
    first_live = next(i for i, p in enumerate(w.phy) if p >= 2 * CL_SIZE)
    assert store.get_min_offset("T", 0) == w.qo[first_live]
    assert bodies(store) == [msg(i).body for i in range(first_live, len(w.phy))]
    assert cq_files(tmp_path) == cq_before  # not yet: hour 12, nothing to delete
    assert store.clean_expired_files(clock.now) > 0  # but the logics follow the minimum
    assert cq_files(tmp_path) == cq_before[first_live // 4 :]
    assert store.get_min_offset("T", 0) == w.qo[first_live]
    await store.close()


async def test_periodic_cleanup_task(tmp_path):
    clock, hour = Clock(), Hour(12)
    disk = FaultyDisk(OsDisk(), usage_override=usage(10))
    store = await open_store(tmp_path, disk, clock, hour, clean_interval_ms=5)
    await fill(store, clock, 30)
    assert len(cl_files(tmp_path)) > 1
    disk.usage_override = usage(95)
    for _ in range(400):
        if len(cl_files(tmp_path)) == 1:
            break
        await asyncio.sleep(0.005)
    assert len(cl_files(tmp_path)) == 1
    await store.close()
    assert not any(t.get_name() == "store-clean" and not t.done() for t in asyncio.all_tasks())


# --- broker wiring ---------------------------------------------------------------------
async def test_broker_passes_retention_settings_and_min_offset_moves(tmp_path, caplog):
    from ledgermq.broker.broker import Broker
    from ledgermq.broker.config import BrokerConfig

    cfg = BrokerConfig.from_properties(
        {
            "brokerName": "broker-a",
            "brokerIP1": "127.0.0.1",
            "listenPort": "0",
            "storePathRootDir": str(tmp_path / "store"),
            "mappedFileSizeCommitLog": str(CL_SIZE),
            "fileReservedTime": "48",
            "deleteWhen": "03;04",
            "diskMaxUsedSpaceRatio": "80",
        }
    )
    broker = Broker(cfg, host="127.0.0.1")
    assert "not supported yet" not in caplog.text
    sc = broker.store.store.config
    assert (sc.file_reserved_time_hours, sc.delete_when, sc.disk_max_used_space_ratio) == (
        48,
        "03;04",
        80,
    )
    await broker.start()
    client = RemotingClient()
    try:
        store = broker.store.store
        for i in range(40):
            assert store.put_message(msg(i, topic="RetT")).ok
        await store.checkpoint()
        assert store.clean_expired_files(store._clock() + 1000 * HOUR, force=True) > 0

        async def min_offset() -> int:
            cmd = RemotingCommand(
                code=RequestCode.GET_MIN_OFFSET,
                ext_fields={"topic": "RetT", "queueId": "0"},
                serialize_type=SerializeType.JSON,
            )
            r = await client.invoke(broker.address, cmd, 5)
            return int(r.ext_fields["offset"])

        lo = await min_offset()
        assert lo == store.get_min_offset("RetT", 0) > 0
    finally:
        await client.close()
        await broker.stop()


def test_bad_delete_when_is_a_config_error():
    from ledgermq.broker.config import BrokerConfig
    from ledgermq.common.config import ConfigError

    with pytest.raises(ConfigError, match="deleteWhen"):
        BrokerConfig.from_properties({"brokerName": "b", "deleteWhen": "4am"})
