"""Snapshot files (DLedger layout), their context, and the log store around them."""

from __future__ import annotations

import json
import zlib

import pytest

from ledgermq.dledger.core.types import (
    ConfState,
    Entry,
    HardState,
    Message,
    MsgType,
    Snapshot,
    SnapshotMeta,
)
from ledgermq.dledger.kv import KVStateMachine
from ledgermq.dledger.log_storage import RaftLogStorage
from ledgermq.dledger.protocol import decode_raft, encode_raft
from ledgermq.dledger.snapshot import (
    SnapshotError,
    SnapshotStore,
    decode_context,
    encode_context,
)
from ledgermq.dledger.store.entry_store import StoreError
from ledgermq.storage.disk import FaultyDisk, OsDisk

CONF = ConfState.of(["n0", "n1", "n2"], ["n3"])


def snap(index: int, term: int = 1, data: bytes = b"state") -> Snapshot:
    ctx = encode_context((term, 1234, 5678), {"n0": "127.0.0.1:1"})
    return Snapshot(SnapshotMeta(index, term, CONF, ctx), data)


def test_layout_keep_three_and_reload(tmp_path):
    disk = FaultyDisk(OsDisk())
    root = str(tmp_path / "dledger-n0")
    store = SnapshotStore(disk, root)
    assert store.open() is None
    for i in (10, 20, 30, 40):
        assert store.save(snap(i, data=b"d%d" % i))
    assert not store.save(snap(35))  # older than the newest: ignored
    names = sorted(p.name for p in (tmp_path / "dledger-n0" / "snapshot").iterdir())
    # DLedger's names: 0-based lastIncludedIndex; 3 kept; no tmp left behind
    assert names == ["snapshot_19", "snapshot_29", "snapshot_39"]
    meta = json.loads((tmp_path / "dledger-n0/snapshot/snapshot_39/snapshot_meta").read_bytes())
    assert meta["lastIncludedIndex"] == 39 and meta["lastIncludedTerm"] == 1
    assert meta["voters"] == ["n0", "n1", "n2"] and meta["learners"] == ["n3"]
    assert meta["crc32"] == zlib.crc32(b"d40") and meta["dataSize"] == 3
    assert (tmp_path / "dledger-n0/snapshot/snapshot_39/data").read_bytes() == b"d40"
    assert store.indexes() == [20, 30, 40]

    again = SnapshotStore(disk, root)
    loaded = again.open()
    assert loaded == snap(40, data=b"d40")
    assert again.newest_meta() == loaded.meta and again.indexes() == [20, 30, 40]


def test_damaged_newest_falls_back_to_an_older_one(tmp_path):
    root = str(tmp_path / "dledger-n0")
    store = SnapshotStore(OsDisk(), root)
    store.open()
    for i in (10, 20, 30):
        store.save(snap(i, data=b"data-%d" % i))
    data = tmp_path / "dledger-n0/snapshot/snapshot_29/data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 1
    data.write_bytes(bytes(raw))
    # a stale tmp from a crash mid-write is removed
    (tmp_path / "dledger-n0/snapshot/tmp").mkdir()
    again = SnapshotStore(OsDisk(), root)
    assert again.open().meta.index == 20
    assert again.indexes() == [10, 20]
    assert not (tmp_path / "dledger-n0/snapshot/snapshot_29").exists()
    assert not (tmp_path / "dledger-n0/snapshot/tmp").exists()
    # a snapshot older than the log's compaction point cannot serve
    with pytest.raises(SnapshotError):
        SnapshotStore(OsDisk(), root).open(min_index=25)


def test_context_round_trip_and_in_raft_messages():
    ctx = encode_context((7, -5, 123456), {"n1": "h:1", "n0": "h:0"})
    assert decode_context(ctx) == ((7, -5, 123456), {"n0": "h:0", "n1": "h:1"})
    assert decode_context(b"") == (None, {})
    m = Message(
        MsgType.INSTALL_SNAPSHOT,
        "n0",
        "n1",
        3,
        snapshot=SnapshotMeta(9, 2, CONF, ctx),
        data=b"chunk",
        offset=4,
        done=True,
        checksum=99,
    )
    assert decode_raft(encode_raft(m), "n0", "n1") == m


def test_kv_snapshot_restore_is_exact():
    a = KVStateMachine()
    for i in range(100):
        a.data[b"k%d" % i] = b"v" * i
    b = KVStateMachine()
    b.data[b"stale"] = b"x"
    b.restore(a.snapshot())
    assert b.data == a.data
    b.restore(b"")
    assert b.data == {}


def open_log(tmp_path, name="n1") -> tuple[RaftLogStorage, object]:
    s = RaftLogStorage(
        OsDisk(), str(tmp_path), name, data_file_size=1 << 12, index_file_size=32 * 64
    )
    return s, s.open()


def fill(s: RaftLogStorage, n: int, start: int = 1, term: int = 1) -> None:
    s.append([Entry(i, term, b"entry-%05d" % i) for i in range(start, start + n)])
    s.sync()


def test_compaction_and_reopen_from_snapshot(tmp_path):
    s, view = open_log(tmp_path)
    fill(s, 200)
    meta = SnapshotMeta(150, 1, CONF, encode_context(s.boundary(150), {}))
    assert s.save_snapshot_files(Snapshot(meta, b"sm@150"))
    assert s.compact(150)
    assert (view.first_index(), view.last_index(), view.term(150)) == (151, 200, 1)
    assert view.snapshot_meta() == meta and view.snapshot().data == b"sm@150"
    s.save_hard_state(HardState(1, "n0", 200))
    s.close()
    s, view = open_log(tmp_path)
    assert (view.first_index(), view.last_index()) == (151, 200)
    assert view.snapshot_meta() == meta and view.hard_state().commit == 200
    assert view.entries(151, 152)[0].data == b"entry-00151"
    s.close()
    # without the snapshot the compacted log cannot be opened
    import shutil

    shutil.rmtree(tmp_path / "dledger-n1" / "snapshot")
    with pytest.raises(StoreError):
        open_log(tmp_path)


def test_installed_snapshot_continues_the_log_at_identical_pos(tmp_path):
    leader, _ = open_log(tmp_path, "n0")
    fill(leader, 120)
    meta = SnapshotMeta(100, 1, CONF, encode_context(leader.boundary(100), {}))
    follower, fview = open_log(tmp_path, "n1")
    fill(follower, 10)
    fill(follower, 5, start=11, term=0 + 1)  # its log ends at 15, far behind
    follower.save_snapshot_files(Snapshot(meta, b"sm"))
    follower.install_snapshot(Snapshot(meta, b"sm"))
    assert (fview.first_index(), fview.last_index(), fview.term(100)) == (101, 100, 1)
    rest = [Entry(i, 1, b"entry-%05d" % i) for i in range(101, 121)]
    follower.append(rest)
    follower.sync()
    for i in range(100, 120):
        a, b = leader.store.get(i), follower.store.get(i)
        assert (a.pos, a.chain_crc, a.body) == (b.pos, b.chain_crc, b.body)
    leader.close()
    follower.close()


def test_log_cut_below_the_snapshot_restarts_after_it(tmp_path):
    leader, _ = open_log(tmp_path, "n0")
    fill(leader, 60)
    meta = SnapshotMeta(50, 1, CONF, encode_context(leader.boundary(50), {}))
    leader.close()
    # a follower stored the snapshot files, then crashed before resetting its log
    s, _ = open_log(tmp_path, "n1")
    fill(s, 20)
    s.save_snapshot_files(Snapshot(meta, b"sm"))
    s.close()
    s, view = open_log(tmp_path, "n1")
    assert (view.first_index(), view.last_index(), view.term(50)) == (51, 50, 1)
    assert s.store.write_pos == decode_context(meta.context)[0][2]
    s.close()
