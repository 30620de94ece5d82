import asyncio
import os
import shutil
import threading
import zlib

import pytest

from ledgermq.common.message import (
    MAGIC_BLANK,
    decode_record,
    decode_records,
    java_string_hash,
    peek_size_magic,
)
from ledgermq.storage.disk import DiskError, DiskUsage, FaultyDisk, OsDisk
from ledgermq.store.message_store import (
    _CKPT,
    _CKPT_MAGIC,
    SYNC_FLUSH,
    GetMessageStatus,
    MessageStore,
    MessageToStore,
    PutMessageStatus,
    StoreConfig,
)

CL_SIZE = 64 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


def config(tmp_path, **kw) -> StoreConfig:
    base = dict(
        mapped_file_size_commitlog=CL_SIZE,
        mapped_file_size_consume_queue=50,
        max_hash_slot_num=64,
        max_index_num=100,
        store_host=("10.0.0.1", 10911),
    )
    base.update(kw)
    return StoreConfig(str(tmp_path / "store"), **base)


async def open_store(tmp_path, disk=None, clock=None, **kw) -> tuple[MessageStore, FaultyDisk]:
    disk = disk or FaultyDisk(OsDisk())
    store = MessageStore(config(tmp_path, **kw), disk, clock=clock or Clock())
    await store.open()
    return store, disk


def msg(i: int, topic="T", qid=0, size=100, **props) -> MessageToStore:
    p = {"TAGS": "even" if i % 2 == 0 else "odd", "KEYS": f"key{i} common", "UNIQ_KEY": f"U{i}"}
    p.update(props)
    return MessageToStore(
        topic=topic,
        queue_id=qid,
        body=(f"body-{i}-".encode() * size)[:size],
        properties=p,
        born_timestamp=1000 + i,
        born_host=("192.168.0.2", 5555),
    )


def bodies(store, topic="T", qid=0, start=0) -> list[bytes]:
    out = []
    off = start
    while True:
        r = store.get_messages(topic, qid, off, 64, max_bytes=1 << 30)
        if r.status is not GetMessageStatus.FOUND:
            return out
        for m in decode_records(b"".join(r.messages), verify_crc=True):
            out.append(m.body)
        off = r.next_begin_offset


async def test_put_get_and_statuses(tmp_path):
    store, _ = await open_store(tmp_path)
    arrived = []
    store.add_arrival_listener(lambda t, q, o, tc, p: arrived.append((t, q, o, tc)))
    for i in range(10):
        r = store.put_message(msg(i))
        assert r.status is PutMessageStatus.PUT_OK and r.queue_offset == i
        assert store.look_message(r.commit_log_offset).offset_msg_id == r.msg_id
    assert arrived[3] == ("T", 0, 3, java_string_hash("odd"))
    r = store.get_messages("T", 0, 0, 5)
    assert r.status is GetMessageStatus.FOUND and r.next_begin_offset == 5
    assert (r.min_offset, r.max_offset) == (0, 10)
    ms = decode_records(b"".join(r.messages), verify_crc=True)
    assert [m.queue_offset for m in ms] == [0, 1, 2, 3, 4]
    assert ms[0].store_host == ("10.0.0.1", 10911) and ms[0].born_host == ("192.168.0.2", 5555)
    assert ms[1].body == msg(1).body and ms[1].tags == "odd"

    even = java_string_hash("even")
    r = store.get_messages("T", 0, 0, 32, tag_filter=lambda tc: tc == even)
    assert [decode_record(x)[0].queue_offset for x in r.messages] == [0, 2, 4, 6, 8]
    assert r.next_begin_offset == 10
    r = store.get_messages("T", 0, 9, 32, tag_filter=lambda tc: tc == even)
    assert r.status is GetMessageStatus.NO_MATCHED_MESSAGE and r.next_begin_offset == 10
    one = len(store.get_messages("T", 0, 0, 1).messages[0])
    r = store.get_messages("T", 0, 0, 32, max_bytes=one * 2 + 1)
    assert r.message_count == 2 and r.next_begin_offset == 2

    assert store.get_messages("T", 0, 10, 32).status is GetMessageStatus.OFFSET_OVERFLOW_ONE
    r = store.get_messages("T", 0, 12, 32)
    assert r.status is GetMessageStatus.OFFSET_OVERFLOW_BADLY and r.next_begin_offset == 10
    r = store.get_messages("nope", 0, 0, 32)
    assert r.status is GetMessageStatus.NO_MATCHED_LOGIC_QUEUE
    assert store.get_max_offset("T", 0) == 10 and store.get_min_offset("T", 0) == 0
    assert store.topic_queues() == {"T": [0]}
    await store.close()


async def test_rejects_bad_messages(tmp_path):
    store, _ = await open_store(tmp_path, max_message_size=1000)
    big = MessageToStore("T", 0, b"x" * 1001)
    assert store.put_message(big).status is PutMessageStatus.MESSAGE_ILLEGAL
    props = MessageToStore("T", 0, b"x", properties={"k": "v" * 40_000})
    assert store.put_message(props).status is PutMessageStatus.PROPERTIES_SIZE_EXCEEDED
    for topic in ("", "../x", "a/b"):
        r = store.put_message(MessageToStore(topic, 0, b"x"))
        assert r.status is PutMessageStatus.MESSAGE_ILLEGAL
    assert store.max_physical_offset == 0
    assert store.put_message(msg(0)).status is PutMessageStatus.PUT_OK
    await store.close()


async def test_rollover_commitlog_and_consume_queue(tmp_path):
    store, _ = await open_store(tmp_path)
    n = 400
    sizes = set()
    for i in range(n):
        r = store.put_message(msg(i, qid=i % 2, size=300 + (i * 37) % 700))
        assert r.ok
        start = r.commit_log_offset
        # never spans two files
        assert start // CL_SIZE == (start + r.wrote_bytes - 1) // CL_SIZE
        sizes.add(r.wrote_bytes)
    cl_dir = tmp_path / "store" / "commitlog"
    files = sorted(os.listdir(cl_dir))
    assert len(files) > 3 and all(len(f) == 20 for f in files)
    assert files[1] == f"{CL_SIZE:020d}"
    # every full file ends with a blank record covering the rest
    for f in files[:-1]:
        data = (cl_dir / f).read_bytes()
        pos = 0
        while True:
            size, magic = peek_size_magic(data, pos)
            if magic == MAGIC_BLANK:
                assert pos + size == CL_SIZE
                break
            pos += size
    cq_dir = tmp_path / "store" / "consumequeue" / "T" / "0"
    assert sorted(os.listdir(cq_dir))[:2] == [f"{0:020d}", f"{50 * 20:020d}"]
    expect0 = [msg(i, size=300 + (i * 37) % 700).body for i in range(0, n, 2)]
    assert bodies(store, qid=0) == expect0
    assert store.get_max_offset("T", 1) == n // 2
    await store.close()
    store2, _ = await open_store(tmp_path)
    assert bodies(store2, qid=0) == expect0
    assert store2.put_message(msg(0, qid=1)).queue_offset == n // 2
    await store2.close()


async def test_offset_by_time_and_queries(tmp_path):
    clock = Clock()
    store, _ = await open_store(tmp_path, clock=clock, max_index_num=40)
    t0 = clock.now
    for i in range(30):
        clock.now = t0 + i * 10_000
        assert store.put_message(msg(i, topic="Q")).ok
    assert store.get_offset_by_time("Q", 0, t0 + 55_000) == 6
    assert store.get_offset_by_time("Q", 0, t0 + 50_000) == 5
    assert store.get_offset_by_time("Q", 0, t0 + 55_000, "UPPER") == 5
    assert store.get_offset_by_time("Q", 0, t0 + 50_000, "UPPER") == 5
    assert store.get_offset_by_time("Q", 0, t0 - 1) == 0
    assert store.get_offset_by_time("Q", 0, t0 + 10**9) == 30
    assert store.get_offset_by_time("Q", 0, t0 - 1, "UPPER") == 0

    hits = store.query_by_key("Q", "key7")
    assert [m.queue_offset for m in hits] == [7]
    assert len(store.query_by_key("Q", "common", max_num=100)) == 30
    assert len(store.query_by_key("Q", "common", max_num=4)) == 4
    window = store.query_by_key("Q", "common", 100, t0 + 100_000, t0 + 150_000)
    assert sorted(m.queue_offset for m in window) == [10, 11, 12, 13, 14, 15]
    assert [m.body for m in store.query_by_unique_key("Q", "U12")] == [msg(12).body]
    assert store.query_by_key("other", "key7") == []
    # 90 entries for 30 messages, 39 per file: several index files
    assert len(os.listdir(tmp_path / "store" / "index")) >= 2
    await store.close()
    store2, _ = await open_store(tmp_path, clock=clock, max_index_num=40)
    assert [m.queue_offset for m in store2.query_by_key("Q", "key29")] == [29]
    assert len(store2.query_by_key("Q", "common", max_num=100)) == 30
    await store2.close()


async def test_batch_put(tmp_path):
    store, disk = await open_store(tmp_path)
    store.put_message(msg(0))
    writes = disk.write_calls
    r = store.put_messages([msg(i) for i in range(1, 6)])
    assert r.ok and r.queue_offsets == [1, 2, 3, 4, 5] and r.queue_offset == 1
    assert r.msg_id == ",".join(r.msg_ids) and len(r.msg_ids) == 5
    # 1 append, 5 CQ units, 3 keys per message x 1 slot, and the 15 index entries in one
    assert disk.write_calls - writes == 1 + 5 + 5 * 3 + 1
    assert bodies(store) == [msg(i).body for i in range(6)]
    await store.close()


async def test_clean_restart_and_delete_topic(tmp_path):
    store, _ = await open_store(tmp_path)
    for i in range(20):
        store.put_message(msg(i, topic="A" if i % 2 else "B", qid=i % 3))
    await store.close()
    assert not os.path.exists(tmp_path / "store" / "abort")
    store, _ = await open_store(tmp_path)
    assert not store.abnormal_shutdown
    assert store.recovered_from == store.max_physical_offset  # nothing re-scanned
    assert store.topic_queues() == {"A": [0, 1, 2], "B": [0, 1, 2]}
    store.delete_topic("A")
    assert store.topic_queues() == {"B": [0, 1, 2]}
    assert store.get_messages("A", 0, 0, 1).status is GetMessageStatus.NO_MATCHED_LOGIC_QUEUE
    assert store.put_message(msg(0, topic="A")).queue_offset == 0
    await store.close()


async def test_sync_flush_crash_keeps_acked_and_cuts_torn_tail(tmp_path):
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    store, _ = await open_store(tmp_path, disk=disk, flush_disk_type=SYNC_FLUSH)
    acked = []
    for i in range(30):
        r = await store.put_message_async(msg(i, size=500))
        assert r.status is PutMessageStatus.PUT_OK
        acked.append(msg(i, size=500).body)
    for i in range(30, 40):  # stored, never fsynced
        assert store.put_message(msg(i, size=500, WAIT="false")).ok
    await store.crash_stop()
    disk.crash(tear_last=200)  # the newest write survives in part: a torn record

    store2, _ = await open_store(tmp_path, disk=FaultyDisk(OsDisk()), flush_disk_type=SYNC_FLUSH)
    assert store2.abnormal_shutdown
    got = bodies(store2)
    assert 30 <= len(got) < 40  # the unsynced tail is gone
    assert got[:30] == acked
    assert got == [msg(i, size=500).body for i in range(len(got))]
    assert store2.get_max_offset("T", 0) == len(got)
    r = await store2.put_message_async(msg(99))
    assert r.ok and r.queue_offset == len(got)
    assert store2.query_by_key("T", "key99")[0].queue_offset == len(got)
    await store2.close()


async def test_bit_flip_cuts_log_at_last_good_record(tmp_path):
    disk = FaultyDisk(OsDisk())
    store, _ = await open_store(tmp_path, disk=disk)
    offsets = [store.put_message(msg(i)).commit_log_offset for i in range(20)]
    await store.flush()
    await store.crash_stop()  # checkpoint is still the one written at open (offset 0)
    path = str(tmp_path / "store" / "commitlog" / f"{0:020d}")
    disk.flip_bit(path, offsets[15] + 100, 3)  # inside message 15's body

    store2, _ = await open_store(tmp_path)
    assert store2.max_physical_offset == offsets[15]
    assert bodies(store2) == [msg(i).body for i in range(15)]
    assert store2.get_max_offset("T", 0) == 15
    assert store2.query_by_key("T", "key17") == []
    assert store2.put_message(msg(15)).queue_offset == 15
    assert store2.query_by_key("T", "key15")[0].body == msg(15).body
    await store2.close()


async def test_recovery_without_checkpoint_rebuilds_consume_queues(tmp_path):
    store, _ = await open_store(tmp_path)
    for i in range(300):
        store.put_message(msg(i, qid=i % 4))
    await store.close()
    root = tmp_path / "store"
    os.remove(root / "checkpoint")
    shutil.rmtree(root / "consumequeue")
    store, _ = await open_store(tmp_path)
    assert store.recovered_from == 0
    assert [store.get_max_offset("T", q) for q in range(4)] == [75] * 4
    assert bodies(store, qid=3) == [msg(i).body for i in range(3, 300, 4)]
    await store.close()


async def test_group_commit_shares_fsyncs(tmp_path):
    disk = FaultyDisk(OsDisk())
    store, _ = await open_store(tmp_path, disk=disk, flush_disk_type=SYNC_FLUSH)
    before = disk.sync_calls
    results = await asyncio.gather(*(store.put_message_async(msg(i)) for i in range(100)))
    assert all(r.status is PutMessageStatus.PUT_OK for r in results)
    assert store.flushed_physical_offset >= results[-1].end_offset
    assert disk.sync_calls - before <= 3  # one or two group commits, not 100 fsyncs

    # While one fsync is in flight, new writes queue up and share the next one.
    gate, entered = threading.Event(), threading.Event()

    def hold(path):
        entered.set()
        gate.wait(5)

    disk.on_sync = hold
    first = asyncio.ensure_future(store.put_message_async(msg(0)))
    await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
    disk.on_sync = None
    rest = [asyncio.ensure_future(store.put_message_async(msg(i))) for i in range(50)]
    await asyncio.sleep(0)
    before = disk.sync_calls
    gate.set()
    done = await asyncio.gather(first, *rest)
    assert all(r.ok for r in done)
    assert disk.sync_calls - before <= 1
    await store.close()


async def test_flush_timeout(tmp_path):
    disk = FaultyDisk(OsDisk())
    store, _ = await open_store(
        tmp_path, disk=disk, flush_disk_type=SYNC_FLUSH, sync_flush_timeout_ms=50
    )
    gate = threading.Event()
    disk.on_sync = lambda path: gate.wait(5)
    r = await store.put_message_async(msg(0))
    assert r.status is PutMessageStatus.FLUSH_DISK_TIMEOUT and r.queue_offset == 0
    disk.on_sync = None
    gate.set()
    await store.close()


async def test_disk_full_keeps_data_and_recovers(tmp_path):
    disk = FaultyDisk(OsDisk())
    store, _ = await open_store(tmp_path, disk=disk)
    for i in range(5):
        assert store.put_message(msg(i)).ok
    end = store.max_physical_offset
    disk.space_left = 50  # the next record is torn after 50 bytes
    r = store.put_message(msg(5))
    assert r.status is PutMessageStatus.DISK_FULL and "disk full" in r.remark
    assert store.max_physical_offset == end
    assert bodies(store) == [msg(i).body for i in range(5)]
    # the torn bytes were cut back: the file holds zeros after the last good record
    raw = (tmp_path / "store" / "commitlog" / f"{0:020d}").read_bytes()
    assert raw[end : end + 64] == b"\x00" * 64
    disk.space_left = 0
    assert store.put_messages([msg(5), msg(6)]).status is PutMessageStatus.DISK_FULL
    disk.space_left = None  # space freed
    r = store.put_message(msg(5))
    assert r.ok and r.queue_offset == 5
    assert bodies(store) == [msg(i).body for i in range(6)]

    # Above diskMaxUsedSpaceRatio (75) only cleanup would start; writes go on until the
    # warning level (90), as in RocketMQ.
    disk.usage_override = DiskUsage(total=100, used=80, free=20)
    store._last_space_check = -(10**18)  # force the periodic check now
    assert store.put_message(msg(6)).ok
    disk.usage_override = DiskUsage(total=100, used=91, free=9)
    store._last_space_check = -(10**18)
    r = store.put_message(msg(7))
    assert r.status is PutMessageStatus.DISK_FULL and "diskSpaceWarningLevelRatio" in r.remark
    disk.usage_override = None
    assert store.put_message(msg(7)).ok
    await store.crash_stop()
    store2, _ = await open_store(tmp_path)
    assert bodies(store2) == [msg(i).body for i in range(8)]
    await store2.close()


async def test_disk_full_on_consume_queue_rolls_back(tmp_path):
    disk = FaultyDisk(OsDisk())
    store, _ = await open_store(tmp_path, disk=disk)
    assert store.put_message(msg(0)).ok
    end = store.max_physical_offset
    record = len(store.read_record(0))
    disk.space_left = record + 5  # commitlog write fits, the CQ unit is torn
    r = store.put_message(msg(1))
    assert r.status is PutMessageStatus.DISK_FULL
    assert store.max_physical_offset == end and store.get_max_offset("T", 0) == 1
    disk.space_left = None
    assert store.put_message(msg(1)).queue_offset == 1
    assert bodies(store) == [msg(0).body, msg(1).body]
    await store.close()


@pytest.mark.parametrize("flush", ["ASYNC_FLUSH", "SYNC_FLUSH"])
async def test_wait_durable_covers_record(tmp_path, flush):
    disk = FaultyDisk(OsDisk())
    store, _ = await open_store(tmp_path, disk=disk, flush_disk_type=flush)
    r = store.put_message(msg(0))
    r2 = await store.wait_durable(r)
    assert r2.ok and store.flushed_physical_offset >= r.end_offset
    await store.close()


async def test_long_topic_and_ipv6_born_host(tmp_path):
    store, _ = await open_store(tmp_path, store_host=("fe80::1", 10911))
    topic = "L" * 200
    m = msg(0, topic=topic)
    m.born_host = ("2001:db8::7", 42)
    r = store.put_message(m)
    assert r.ok and len(r.msg_id) == 56
    got = decode_record(store.read_record(r.commit_log_offset), verify_crc=True)[0]
    assert got.topic == topic and got.born_host == ("2001:db8::7", 42)
    assert got.store_host == ("fe80::1", 10911) and got.offset_msg_id == r.msg_id
    assert store.get_store_timestamp(topic, 0, 0) == got.store_timestamp
    await store.close()


def test_os_disk_primitives(tmp_path):
    disk = OsDisk()
    p = str(tmp_path / "f")
    assert disk.read_file(p) is None
    disk.replace_file(p, b"one")
    disk.replace_file(p, b"two")
    assert disk.read_file(p) == b"two" and os.listdir(tmp_path) == ["f"]
    assert disk.listdir(str(tmp_path / "missing")) == []
    seg = disk.open_segment(str(tmp_path / "seg"), 8192)
    seg.write(0, b"a" * 8192)
    seg.sync()
    seg.truncate(100)
    assert seg.read(95, 10) == b"a" * 5 + b"\x00" * 5
    assert os.path.getsize(tmp_path / "seg") == 8192
    with pytest.raises(DiskError):
        seg.write(8190, b"xyz")
    seg.close()
    with pytest.raises(DiskError, match="expected 4096"):
        disk.open_segment(str(tmp_path / "seg"), 4096)
    assert disk.usage(str(tmp_path)).total > 0


def test_faulty_disk_crash_loses_only_unsynced(tmp_path):
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    seg = disk.open_segment(str(tmp_path / "seg"), 4096)
    seg.write(0, b"durable")
    seg.sync()
    seg.write(7, b"-volatile")
    seg.write(16, b"-torn-write")
    disk.crash(tear_last=5)
    raw = (tmp_path / "seg").read_bytes()
    assert raw[:27] == b"durable" + b"\x00" * 9 + b"-torn" + b"\x00" * 6


async def test_crash_recovery_scans_from_checkpoint_and_trims_consume_queue(tmp_path):
    store, _ = await open_store(tmp_path)
    offs = [store.put_message(msg(i, qid=i % 2)).commit_log_offset for i in range(40)]
    await store.checkpoint()
    ckpt = store.max_physical_offset
    for i in range(40, 60):
        offs.append(store.put_message(msg(i, qid=i % 2)).commit_log_offset)
    await store.checkpoint()  # CQ units for 40..59 are now on disk too
    await store.crash_stop()
    # Lose the CommitLog tail from message 50 on, as if those pages never reached disk,
    # and make the checkpoint older than the ConsumeQueues.
    path = tmp_path / "store" / "commitlog" / f"{0:020d}"
    with open(path, "r+b") as f:
        f.seek(offs[50])
        f.write(b"\x00" * (CL_SIZE - offs[50]))
    body = _CKPT.pack(_CKPT_MAGIC, ckpt, ckpt, 0)[:-4]
    (tmp_path / "store" / "checkpoint").write_bytes(body + zlib.crc32(body).to_bytes(4, "big"))

    store2, _ = await open_store(tmp_path)
    assert store2.recovered_from == ckpt
    assert store2.max_physical_offset == offs[50]
    assert [store2.get_max_offset("T", q) for q in (0, 1)] == [25, 25]
    assert bodies(store2, qid=1) == [msg(i).body for i in range(1, 50, 2)]
    assert store2.get_messages("T", 0, 25, 1).status is GetMessageStatus.OFFSET_OVERFLOW_ONE
    assert store2.put_message(msg(50, qid=0)).queue_offset == 25
    await store2.close()


async def test_put_group_stores_each_message_on_its_own_across_files(tmp_path):
    # Pipelined sends arrive together: one bad message must not sink the others, every
    # record must land whole in one file, and queue offsets stay dense per queue.
    store, _ = await open_store(tmp_path)
    group = [msg(i, qid=i % 2, size=3000) for i in range(60)]  # ~180 KiB: several files
    group[7] = MessageToStore(topic="bad/topic", queue_id=0, body=b"x")
    group[8] = msg(8, size=5 * 1024 * 1024)  # over maxMessageSize
    appends = []
    real_append = store.commitlog.append_at
    store.commitlog.append_at = lambda at, data: (appends.append(at), real_append(at, data))
    results = store.put_group(group)
    assert [r.status for r in results].count(PutMessageStatus.PUT_OK) == 58
    assert results[7].status is PutMessageStatus.MESSAGE_ILLEGAL
    assert results[8].status is PutMessageStatus.MESSAGE_ILLEGAL
    ok = [(i, r) for i, r in enumerate(results) if r.ok]
    for qid in (0, 1):
        offsets = [r.queue_offset for i, r in ok if i % 2 == qid]
        assert offsets == list(range(len(offsets)))
        expected = [group[i].body for i, _ in ok if i % 2 == qid]
        assert bodies(store, qid=qid) == expected
    for _, r in ok:
        record = store.read_record(r.commit_log_offset)
        assert record is not None and len(record) == r.wrote_bytes
        # a record never crosses a commit log file boundary
        assert (
            r.commit_log_offset // CL_SIZE == (r.commit_log_offset + r.wrote_bytes - 1) // CL_SIZE
        )
    # runs, not one append per message: one per commit log file the group touched
    files = {r.commit_log_offset // CL_SIZE for _, r in ok}
    assert len(appends) <= len(files) + 1 < 58
    await store.close()
