"""The index file's batch writer against a one-entry-at-a-time reference of the layout."""

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgermq.storage.disk import FaultyDisk, OsDisk
from ledgermq.store.index_file import IndexFile, IndexService, build_key

SLOTS, ENTRIES = 7, 64  # few slots: chains through shared slots are the common case


def reference_bytes(entries, slot_num=SLOTS, index_num=ENTRIES) -> bytes:
    """The file RocketMQ's layout prescribes after indexing `entries` one by one (CRC32
    key hash: see key_hash), written independently of the store's code."""
    size = 40 + slot_num * 4 + index_num * 20
    buf = bytearray(size)
    begin_ts = begin_phy = 0
    slot_count = 0
    count = 1
    for key, phy, ts in entries[: index_num - 1]:
        kh = zlib.crc32(key.encode()) & 0x7FFFFFFF
        slot_at = 40 + (kh % slot_num) * 4
        prev = struct.unpack_from(">i", buf, slot_at)[0]
        if prev <= 0 or prev >= count:
            prev = 0
            slot_count += 1
        if count == 1:
            begin_ts, begin_phy = ts, phy
        diff = min(max(0, (ts - begin_ts) // 1000), 0x7FFFFFFF)
        struct.pack_into(">iqii", buf, 40 + slot_num * 4 + count * 20, kh, phy, diff, prev)
        struct.pack_into(">i", buf, slot_at, count)
        count += 1
    _, last_phy, last_ts = entries[min(len(entries), index_num - 1) - 1]
    struct.pack_into(">qqqqii", buf, 0, begin_ts, last_ts, begin_phy, last_phy, slot_count, count)
    return bytes(buf)


def written_bytes(tmp_path, entries, batch_sizes, faulty: bool) -> bytes:
    disk = FaultyDisk(OsDisk()) if faulty else OsDisk()
    svc = IndexService(disk, str(tmp_path / ("faulty" if faulty else "os")), SLOTS, ENTRIES)
    svc.load()
    done = 0
    for n in batch_sizes:
        svc.put_many(entries[done : done + n])
        done += n
    svc.put_many(entries[done:])
    assert len(svc.files) >= 1
    f = svc.files[0]
    f.write_header()
    return f.segment.read(0, IndexFile.file_size(SLOTS, ENTRIES))


entries_strategy = st.lists(
    st.tuples(
        st.sampled_from([build_key("T", k) for k in ("a", "b", "c", "UNIQ1", "UNIQ2", "k#x")]),
        st.integers(0, 1 << 40),
        st.integers(1_700_000_000_000, 1_700_000_900_000),
    ),
    min_size=1,
    max_size=ENTRIES - 1,  # one file: the reference models a single file
)


@settings(max_examples=60, deadline=None)
@given(entries=entries_strategy, cuts=st.lists(st.integers(1, 20), max_size=5))
def test_batches_write_the_same_bytes_as_one_at_a_time(tmp_path_factory, entries, cuts):
    # Keys repeat inside one batch: a later entry's chain must point at the earlier one
    # written in the same pass over the slot table.
    tmp = tmp_path_factory.mktemp("idx")
    want = reference_bytes(entries)
    assert written_bytes(tmp, entries, cuts, faulty=False) == want
    # the simulated disk takes the generic path (read, then write, per slot)
    assert written_bytes(tmp, entries, cuts, faulty=True) == want


def test_a_key_finds_every_entry_newest_first(tmp_path):
    svc = IndexService(OsDisk(), str(tmp_path / "index"), SLOTS, ENTRIES)
    svc.load()
    ts = 1_700_000_000_000
    entries = [
        (build_key("T", "dup" if i % 3 == 0 else f"k{i}"), 1000 + i, ts + i) for i in range(30)
    ]
    svc.put_many(entries[:10])
    svc.put_many(entries[10:])
    want = [1000 + i for i in reversed(range(30)) if i % 3 == 0]
    assert svc.files[0].select(build_key("T", "dup"), 100, ts - 5000, ts + 5000) == want


@pytest.mark.parametrize("faulty", [False, True])
def test_swap_values_reads_the_earlier_write_of_a_repeated_position(tmp_path, faulty):
    disk = FaultyDisk(OsDisk()) if faulty else OsDisk()
    layout = struct.Struct(">i")
    seg = disk.open_segment(str(tmp_path / "seg"), 64, reserve=32)
    seg.write_struct(8, layout, 5)
    # positions inside and (40) outside the mapped reserve, one listed twice
    assert seg.swap_values(layout, [8, 12, 8, 40], [1, 2, 3, 4]) == [5, 0, 1, 0]
    assert [seg.read_struct(p, layout)[0] for p in (8, 12, 40)] == [3, 2, 4]
