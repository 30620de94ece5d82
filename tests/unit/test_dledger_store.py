"""DLedger entry store: segmented files, follower appends, truncation, crash recovery."""

import os
import random
import struct

import pytest

from ledgermq.dledger.store import entry_store
from ledgermq.dledger.store.entry_codec import (
    HEADER_SIZE,
    MAGIC_NOOP,
    make_entry,
)
from ledgermq.dledger.store.entry_store import (
    AppendMismatchError,
    EntryNotFoundError,
    EntryStore,
    HardStateFile,
    StoreCorruptError,
    StoreError,
    StoreFullError,
)
from ledgermq.storage.disk import FaultyDisk, OsDisk

DFS = 1024  # data file size
IFS = 32 * 8  # 8 index entries per index file


def open_store(tmp_path, disk=None, self_id="n0", **kw):
    kw.setdefault("data_file_size", DFS)
    kw.setdefault("index_file_size", IFS)
    return EntryStore(disk or OsDisk(), str(tmp_path), self_id, **kw).open()


def body(i: int, rng: random.Random | None = None) -> bytes:
    n = rng.randint(0, 300) if rng else 10 + (i * 37) % 200
    return (f"e{i}:".encode() * (n // 3 + 1))[:n]


def check_log(store, bodies, terms=None):
    assert store.last_index == len(bodies) - 1
    prev_end = None
    for i, b in enumerate(bodies):
        e = store.get(i)
        assert e.index == i and e.body == b
        if terms:
            assert e.term == terms[i] and store.term_at(i) == terms[i]
        if prev_end is not None:
            off = prev_end % DFS
            want = prev_end if off + e.size <= DFS else prev_end - off + DFS
            assert e.pos == want
        prev_end = e.pos + e.size
    if bodies:
        assert store.write_pos == prev_end


def test_append_get_across_rollover_and_reopen(tmp_path):
    s = open_store(tmp_path)
    bodies = [body(i) for i in range(60)]
    got = [s.append(1 + i // 20, b) for i, b in enumerate(bodies)]
    assert [e.index for e in got] == list(range(60))
    assert s.last_term == 3
    terms = [1 + i // 20 for i in range(60)]
    check_log(s, bodies, terms)
    data = sorted(os.listdir(tmp_path / "dledger-n0" / "data"))
    assert len(data) > 3 and all(len(n) == 20 and int(n) % DFS == 0 for n in data)
    index = sorted(os.listdir(tmp_path / "dledger-n0" / "index"))
    assert [int(n) for n in index] == [k * IFS for k in range(len(index))]
    # A file that did not fit the next entry ends with blank padding.
    e = s.get(1)
    while s.get(e.index + 1).pos // DFS == e.pos // DFS:
        e = s.get(e.index + 1)
    end = (e.pos + e.size) % DFS
    if DFS - end >= 8:
        raw = (tmp_path / "dledger-n0" / "data" / f"{e.pos - e.pos % DFS:020d}").read_bytes()
        assert struct.unpack(">ii", raw[end : end + 8]) == (-1, DFS - end)
    s.sync()
    assert s.durable_index == 59
    s.close()
    s = open_store(tmp_path)
    check_log(s, bodies, terms)
    assert s.durable_index == 59 and s.last_term == 3
    with pytest.raises(EntryNotFoundError):
        s.get(60)
    with pytest.raises(EntryNotFoundError):
        s.get(-1)
    s.append(3, b"more")
    assert s.get(60).body == b"more"
    s.close()


def test_append_batch_matches_single_appends(tmp_path):
    a = open_store(tmp_path / "a")
    b = open_store(tmp_path / "b")
    bodies = [body(i) for i in range(40)]
    for x in bodies:
        a.append(2, x)
    b.append_batch(2, bodies[:17])
    b.append_batch(2, bodies[17:])
    for i in range(40):
        assert a.get(i) == b.get(i)
    a.close()
    b.close()
    assert _data_bytes(tmp_path / "a") == _data_bytes(tmp_path / "b")


@pytest.mark.parametrize("seed", range(6))
def test_append_bodies_writes_exactly_what_append_batch_writes(tmp_path, seed):
    # The hot path skips Entry objects and keeps CRCs unsigned; the files, the index and
    # what recovery reads back must not differ by a byte, whether a batch fits in one
    # file (fast path) or crosses into the next data or index file (general path).
    rng = random.Random(seed)
    a = open_store(tmp_path / "a")
    b = open_store(tmp_path / "b")
    n = 0
    for term in (1, 1, 2, 3, 3):
        for _ in range(rng.randint(1, 6)):
            batch = [body(n + k, rng) for k in range(rng.randint(1, 9))]
            kind = MAGIC_NOOP if rng.random() < 0.2 else 1
            a.append_batch(term, batch, magic=kind)
            b.append_bodies(term, batch, kind)
            n += len(batch)
            assert (b.last_index, b.last_term, b.write_pos) == (
                a.last_index,
                a.last_term,
                a.write_pos,
            )
    # the next entry's chainCrc continues from the fast path's last one
    assert a.append(4, b"after") == b.append(4, b"after")
    for s in (a, b):
        s.sync()
        s.close()
    assert _data_bytes(tmp_path / "a") == _data_bytes(tmp_path / "b")
    index_a, index_b = (
        {
            p: (r / "dledger-n0" / "index" / p).read_bytes()
            for p in os.listdir(r / "dledger-n0" / "index")
        }
        for r in (tmp_path / "a", tmp_path / "b")
    )
    assert index_a == index_b
    reopened = open_store(tmp_path / "b")
    assert reopened.last_index == n
    assert [reopened.get(i) for i in range(n + 1)] == [
        open_store(tmp_path / "a").get(i) for i in range(n + 1)
    ]


def test_append_bodies_refuses_what_append_batch_refuses(tmp_path):
    s = open_store(tmp_path)
    s.append_bodies(3, [b"x"])
    with pytest.raises(StoreError, match="below the last term"):
        s.append_bodies(2, [b"y"])
    with pytest.raises(StoreError, match="exceeds data file size"):
        s.append_bodies(3, [b"z" * DFS])
    assert s.last_index == 0


def _data_bytes(root, self_id="n0"):
    d = root / f"dledger-{self_id}" / "data"
    return {n: (d / n).read_bytes() for n in sorted(os.listdir(d))}


def test_follower_append_entry_checks_and_replicas_are_identical(tmp_path):
    leader = open_store(tmp_path, self_id="n0")
    follower = open_store(tmp_path, self_id="n1")
    rng = random.Random(7)
    for i in range(50):
        e = leader.append(1, body(i, rng), magic=MAGIC_NOOP if i == 0 else 1, channel=i % 3)
        assert follower.append_entry(e) == e
    for i in range(50):
        assert follower.get(i) == leader.get(i)
    nxt = leader.append(1, b"next")
    # wrong index
    with pytest.raises(AppendMismatchError, match="index"):
        follower.append_entry(leader.get(10))
    # wrong pos
    bad = make_entry(
        index=nxt.index,
        term=1,
        pos=nxt.pos + 1,
        body=nxt.body,
        prev_chain_crc=follower.last_chain_crc,
    )
    with pytest.raises(AppendMismatchError, match="pos"):
        follower.append_entry(bad)
    # a different history (chain does not continue ours)
    alien = make_entry(index=nxt.index, term=1, pos=nxt.pos, body=nxt.body, prev_chain_crc=12345)
    with pytest.raises(AppendMismatchError, match="chainCrc"):
        follower.append_entry(alien)
    # corrupted body
    forged = type(nxt)(
        nxt.index, nxt.term, nxt.pos, b"nexT", nxt.magic, 0, nxt.chain_crc, nxt.body_crc
    )
    with pytest.raises(AppendMismatchError, match="bodyCrc"):
        follower.append_entry(forged)
    # term going backwards
    leader2 = open_store(tmp_path, self_id="n2")
    assert follower.last_index == 49
    follower.append_entry(nxt)
    leader.close()
    follower.close()
    leader2.close()
    assert _data_bytes(tmp_path, "n0") == _data_bytes(tmp_path, "n1")


def test_term_must_not_decrease(tmp_path):
    s = open_store(tmp_path)
    s.append(3, b"a")
    with pytest.raises(StoreError):
        s.append(2, b"b")
    e = make_entry(index=1, term=2, pos=s.write_pos, body=b"b", prev_chain_crc=s.last_chain_crc)
    with pytest.raises(AppendMismatchError, match="term"):
        s.append_entry(e)
    s.close()


@pytest.mark.parametrize("cut", [0, 1, 7, 8, 13, 25, 29])
def test_truncate_suffix_then_append_again(tmp_path, cut):
    leader = open_store(tmp_path, self_id="n0")
    follower = open_store(tmp_path, self_id="n1")
    for i in range(30):
        e = leader.append(1, body(i))
        follower.append_entry(e)
    follower.sync()
    # The follower also got some entries of a deposed leader (term 2)...
    for i in range(30, 36):
        follower.append(2, b"stale" * i)
    follower.sync()
    # ...while the real leader (term 3) rewrote from `cut` on.
    leader.truncate_suffix(cut)
    assert leader.last_index == cut - 1 and leader.durable_index <= cut - 1
    new = leader.append_batch(3, [b"new-%d" % i * (i % 9 + 1) for i in range(cut, 40)])
    follower.truncate_suffix(cut)
    assert follower.last_index == cut - 1 and follower.durable_index == cut - 1
    follower.append_entries(new)
    follower.sync()
    leader.sync()
    for i in range(40):
        assert follower.get(i) == leader.get(i)
    leader.close()
    follower.close()
    f2 = open_store(tmp_path, self_id="n1")
    assert f2.last_index == 39 and f2.last_term == 3
    assert [f2.get(i).body for i in range(cut, 40)] == [e.body for e in new]
    f2.close()
    assert _data_bytes(tmp_path, "n0") == _data_bytes(tmp_path, "n1")


def test_truncate_suffix_is_crash_safe(tmp_path):
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    s = open_store(tmp_path, disk)
    for i in range(30):
        s.append(1, body(i))
    s.sync()
    s.truncate_suffix(10)
    disk.crash()
    s = open_store(tmp_path, disk)
    assert s.last_index == 9 and s.durable_index == 9
    s.append(2, b"x")
    s.close()


def _fill(store, n, term=1, start=0):
    return [store.append(term, body(start + i)).body for i in range(n)]


@pytest.mark.parametrize("tear", [0, 1, 8, 47, 48, 49, 60, 200, 5000])
def test_recovery_after_torn_write(tmp_path, tear):
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    s = open_store(tmp_path, disk)
    bodies = _fill(s, 30)
    s.sync()
    more = [body(100 + i) for i in range(6)]
    s.append_batch(1, more)  # one write per file: the last one gets torn
    disk.crash(tear_last=tear)
    s = open_store(tmp_path, disk)
    assert 29 <= s.last_index <= 35
    assert s.durable_index == s.last_index
    for i in range(30):
        assert s.get(i).body == bodies[i]
    for i in range(30, s.last_index + 1):
        assert s.get(i).body == more[i - 30]
    e = s.append(2, b"after")
    s.sync()
    s.close()
    s = open_store(tmp_path)
    assert s.get(e.index).body == b"after" and s.last_index == e.index
    s.close()


def test_lost_unsynced_data_and_index(tmp_path):
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    s = open_store(tmp_path, disk)
    bodies = _fill(s, 20)
    s.sync()
    _fill(s, 25, start=20)
    disk.crash()
    s = open_store(tmp_path, disk)
    assert s.last_index == 19
    assert [s.get(i).body for i in range(20)] == bodies
    s.close()


def test_bit_flip_in_unsynced_tail_is_cut(tmp_path):
    s = open_store(tmp_path)
    _fill(s, 20)
    s.sync()
    more = [s.append(1, body(i)) for i in range(20, 30)]
    s.close()  # no sync: entries 20..29 are not durable
    victim = more[4]
    path = tmp_path / "dledger-n0" / "data" / f"{victim.pos - victim.pos % DFS:020d}"
    FaultyDisk(OsDisk()).flip_bit(str(path), victim.pos % DFS + HEADER_SIZE + 1, 3)
    s = open_store(tmp_path)
    assert s.last_index == 23
    assert any("cut after entry 23" in n for n in s.recovery_notes)
    s.close()


def test_bit_flip_in_synced_entry_is_reported_not_cut(tmp_path):
    s = open_store(tmp_path)
    entries = [s.append(1, body(i)) for i in range(30)]
    s.sync()
    s.close()
    victim = entries[27]
    path = tmp_path / "dledger-n0" / "data" / f"{victim.pos - victim.pos % DFS:020d}"
    FaultyDisk(OsDisk()).flip_bit(str(path), victim.pos % DFS + 20, 0)  # its term field
    # A recovery that verifies the synced files refuses to cut acknowledged entries...
    with pytest.raises(StoreCorruptError, match="synced"):
        open_store(tmp_path, recover_files=1)
    # ...the default one starts at the last synced entry, and get() verifies every read.
    s = open_store(tmp_path)
    assert s.last_index == 29
    with pytest.raises(StoreCorruptError, match="does not match"):
        s.get(27)
    FaultyDisk(OsDisk()).flip_bit(str(path), victim.pos % DFS + 20, 0)
    assert s.get(27) == victim
    FaultyDisk(OsDisk()).flip_bit(str(path), victim.pos % DFS + HEADER_SIZE, 0)
    with pytest.raises(StoreCorruptError, match="bodyCrc"):
        s.get(27)
    s.close()


def test_damaged_padding_before_a_valid_next_file_is_repaired(tmp_path):
    s = open_store(tmp_path)
    entries = [s.append(1, b"x" * 400) for _ in range(6)]  # 448 bytes: 2 per file
    s.close()
    e = entries[1]
    path = tmp_path / "dledger-n0" / "data" / f"{0:020d}"
    end = e.pos + e.size
    assert struct.unpack(">ii", path.read_bytes()[end : end + 8]) == (-1, DFS - end)
    FaultyDisk(OsDisk()).flip_bit(str(path), end + 1, 1)
    s = open_store(tmp_path)
    assert s.last_index == 5
    assert any("repaired padding" in n for n in s.recovery_notes)
    s.close()


def test_missing_and_corrupt_index_files_are_rebuilt(tmp_path):
    s = open_store(tmp_path)
    bodies = _fill(s, 40)
    s.sync()
    s.close()
    idx = tmp_path / "dledger-n0" / "index"
    os.remove(idx / f"{IFS:020d}")  # entries 8..15
    os.remove(idx / f"{4 * IFS:020d}")  # entries 32..39 (the last file)
    with open(idx / f"{2 * IFS:020d}", "r+b") as f:  # entry 17: garbage
        f.seek(32)
        f.write(b"\xff" * 32)
    s = open_store(tmp_path)
    assert any("missing" in n for n in s.recovery_notes)
    assert [s.get(i).body for i in range(40)] == bodies
    s.close()


def test_missing_synced_data_file_is_an_error(tmp_path):
    s = open_store(tmp_path)
    _fill(s, 30)
    s.sync()
    last = s.get(29)
    s.close()
    os.remove(tmp_path / "dledger-n0" / "data" / f"{last.pos - last.pos % DFS:020d}")
    with pytest.raises(StoreCorruptError, match="missing"):
        open_store(tmp_path)


def test_disk_full_gives_clear_error_and_keeps_data(tmp_path):
    disk = FaultyDisk(OsDisk())
    s = open_store(tmp_path, disk)
    bodies = _fill(s, 10)
    s.sync()
    disk.space_left = 700
    with pytest.raises(StoreFullError, match="disk full") as info:
        for i in range(10, 100):
            bodies.append(body(i))
            s.append(1, bodies[-1])
    bodies.pop()
    assert "log still ends at" in str(info.value)
    assert s.last_index == len(bodies) - 1
    assert [s.get(i).body for i in range(len(bodies))] == bodies
    with pytest.raises(StoreFullError):
        s.append_batch(1, [b"y" * 500] * 3)
    assert s.last_index == len(bodies) - 1
    disk.space_left = None
    s.append(1, b"after")
    bodies.append(b"after")
    s.sync()
    s.close()
    s = open_store(tmp_path)
    assert [s.get(i).body for i in range(len(bodies))] == bodies
    s.close()


def test_disk_full_then_crash_keeps_synced(tmp_path):
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    s = open_store(tmp_path, disk)
    bodies = _fill(s, 12)
    s.sync()
    disk.space_left = 100
    with pytest.raises(StoreFullError):
        s.append(1, b"z" * 300)
    disk.crash(tear_last=50)
    disk.space_left = None
    s = open_store(tmp_path, disk)
    assert [s.get(i).body for i in range(12)] == bodies and s.last_index == 11
    s.close()


def test_sync_failure_stops_the_store(tmp_path):
    disk = FaultyDisk(OsDisk())
    s = open_store(tmp_path, disk)
    _fill(s, 3)
    disk.fail_sync = True
    with pytest.raises(StoreError, match="reopened"):
        s.sync()
    with pytest.raises(StoreError, match="reopen"):
        s.append(1, b"x")
    assert s.durable_index == -1
    s.close()


def test_reset_prefix(tmp_path):
    s = open_store(tmp_path)
    bodies = _fill(s, 50)
    files_before = len(os.listdir(tmp_path / "dledger-n0" / "data"))
    s.reset_prefix(30)
    assert s.begin_index == 30
    assert len(os.listdir(tmp_path / "dledger-n0" / "data")) < files_before
    with pytest.raises(EntryNotFoundError):
        s.get(29)
    assert s.get(30).body == bodies[30]
    with pytest.raises(StoreError):
        s.truncate_suffix(29)
    s.close()
    s = open_store(tmp_path)
    assert s.begin_index == 30 and s.last_index == 49
    assert [s.get(i).body for i in range(30, 50)] == bodies[30:]
    s.append(1, b"x")
    s.close()


def test_hard_state_atomic_write_and_reload(tmp_path):
    disk = FaultyDisk(OsDisk())
    s = open_store(tmp_path, disk)
    hs = HardStateFile.for_store(s).load()
    assert (hs.term, hs.vote, hs.commit_index) == (0, "", -1)
    hs.save(5, "n1", 17)
    text = (tmp_path / "dledger-n0" / "currterm").read_text()
    assert "currTerm=5" in text and "voteLeader=n1" in text
    assert not (tmp_path / "dledger-n0" / "currterm.tmp").exists()
    disk.space_left = 0
    with pytest.raises(Exception, match="ENOSPC"):
        hs.save(6, "n2")
    again = HardStateFile.for_store(s).load()
    assert (again.term, again.vote, again.commit_index) == (5, "n1", 17)
    s.close()


@pytest.mark.parametrize("lean", [False, True], ids=["full", "lean"])
@pytest.mark.parametrize("seed", range(int(os.environ.get("DLEDGER_STORE_SEEDS", "25"))))
def test_random_crashes_never_lose_synced_entries(tmp_path, seed, lean, monkeypatch):
    rng = random.Random(seed)
    if lean:
        # lean syncs (data only) that fall back to a full one every few entries
        monkeypatch.setattr(entry_store, "LAZY_CHECKPOINT_ENTRIES", rng.choice([3, 8, 1000]))
        monkeypatch.setattr(entry_store, "LAZY_CHECKPOINT_BYTES", rng.choice([500, 3000, 1 << 20]))
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    s = open_store(tmp_path, disk, recover_files=rng.choice([0, 1, 2, 3]))
    model: list[tuple[int, bytes]] = []
    durable = 0
    term = 1
    trace: list[str] = []  # printed by pytest on failure: what this seed did
    for step in range(60):
        op = rng.random()
        trace.append(f"{step}: op={op:.3f} last={s.last_index} durable={durable}")
        if op < 0.45:
            batch = [body(0, rng) for _ in range(rng.randint(1, 5))]
            s.append_batch(term, batch)
            model += [(term, b) for b in batch]
        elif op < 0.65:
            s.sync(full=not lean or rng.random() < 0.2)
            durable = len(model)
        elif op < 0.75 and len(model) > s.begin_index:
            cut = rng.randint(max(s.begin_index, len(model) - 6), len(model))
            s.truncate_suffix(cut)
            del model[cut:]
            durable = min(durable, cut)
            term += 1
        elif op < 0.8:
            disk.space_left = rng.randint(0, 900)
            batch = [body(0, rng) for _ in range(rng.randint(1, 4))]
            try:
                s.append_batch(term, batch)
                model += [(term, b) for b in batch]
            except StoreFullError:
                pass
            disk.space_left = None
        elif op < 0.83 and len(model) - 2 >= s.begin_index:
            new_begin = rng.randint(s.begin_index, len(model) - 2)
            if new_begin > s.begin_index:
                durable = len(model)  # reset_prefix syncs first
            s.reset_prefix(new_begin)
        elif op < 0.85:
            # InstallSnapshot beyond the log: everything local is discarded.
            new_begin = max(1, len(model) + rng.randint(0, 4))
            prev = (term, rng.getrandbits(31), s.write_pos + rng.randint(0, 3000))
            s.reset_prefix(new_begin, prev=prev)
            model = [(0, b"")] * new_begin
            durable = len(model)
        elif op < 0.89 and durable < len(model):
            # The OS wrote back the unsynced tail, then a bit rots in it before restart.
            lo, hi = s.boundary(durable - 1)[2], s.write_pos
            s.close()
            for seg in disk.segments:
                seg.unsynced.clear()
            disk.segments.clear()
            pos = rng.randrange(lo, hi)
            path = tmp_path / "dledger-n0" / "data" / f"{pos - pos % DFS:020d}"
            disk.flip_bit(str(path), pos % DFS, rng.randrange(8))
            s = open_store(tmp_path, disk, recover_files=rng.choice([0, 1, 2, 3]))
            assert durable - 1 <= s.last_index <= len(model) - 1
            del model[s.last_index + 1 :]
            durable = len(model)
        elif op < 0.93:
            disk.crash(tear_last=rng.choice([0, 1, 30, 48, 100, 10_000]))
            s = open_store(tmp_path, disk, recover_files=rng.choice([0, 1, 2, 3]))
            assert durable - 1 <= s.last_index <= len(model) - 1
            del model[s.last_index + 1 :]
            durable = len(model)
            if model:
                term = max(term, model[-1][0])
        live = range(s.begin_index, len(model))
        for i in rng.sample(live, min(3, len(live))):
            assert (s.get(i).term, s.get(i).body) == model[i]
    s.sync()
    s.close()
    s = open_store(tmp_path)
    b = s.begin_index
    assert [(s.get(i).term, s.get(i).body) for i in range(b, len(model))] == model[b:]
    # What is left is one verified chain.
    prev = s.get(b).chain_crc if b < len(model) else 0
    for i in range(b + 1, len(model)):
        e = s.get(i)
        assert e.verify(prev) is None
        prev = e.chain_crc
    s.close()


class _PowerCut(Exception):
    pass


def _crash_at_sync(disk, k):
    count = [0]

    def hook(path):
        count[0] += 1
        if count[0] == k:
            raise _PowerCut(path)

    disk.on_sync = hook
    return count


@pytest.mark.parametrize("k", range(1, 9))
def test_power_cut_at_every_fsync_of_truncate_and_sync(tmp_path, k):
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    s = open_store(tmp_path, disk)
    old = [s.append(1, body(i)) for i in range(30)]
    s.sync()
    count = _crash_at_sync(disk, k)
    synced = False
    try:
        s.truncate_suffix(12)
        s.append_batch(2, [b"n%d" % i for i in range(12, 20)])
        s.sync()
        synced = True
    except _PowerCut:
        pass
    else:
        assert count[0] < k
    disk.on_sync = None
    disk.crash(tear_last=20)
    s = open_store(tmp_path, disk, recover_files=k % 2)
    assert s.last_index >= 11
    if synced:
        assert s.last_index == 19 and s.get(19).body == b"n19"
    # Entries 0..11 were never in question; what follows is one of the two histories.
    for i in range(12):
        assert s.get(i) == old[i]
    if s.last_index >= 12:
        was_old = s.get(12).term == 1
        for i in range(12, s.last_index + 1):
            e = s.get(i)
            assert e == old[i] if was_old else (e.term, e.body) == (2, b"n%d" % i)
    s.close()


def test_torn_checkpoint_slot_falls_back_to_the_older_one(tmp_path):
    s = open_store(tmp_path)
    _fill(s, 10)
    s.sync()
    _fill(s, 5, start=10)
    s.sync()
    s.close()
    ck = tmp_path / "dledger-n0" / "checkpoint"
    raw = bytearray(ck.read_bytes())
    # Damage the newer of the two slots (highest seq).
    seqs = [struct.unpack(">q", raw[o : o + 8])[0] for o in (0, 128)]
    newer = 0 if seqs[0] > seqs[1] else 128
    raw[newer + 9] ^= 0xFF
    ck.write_bytes(bytes(raw))
    s = open_store(tmp_path)
    assert s.last_index == 14 and s.durable_index == 14
    s.close()


@pytest.mark.parametrize("follower_has", ["nothing", "prefix", "same", "conflict"])
def test_install_snapshot_boundary(tmp_path, follower_has):
    leader = open_store(tmp_path, self_id="n0")
    entries = [leader.append(1 + i // 25, body(i)) for i in range(40)]
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    f = open_store(tmp_path, disk, self_id="n1")
    if follower_has == "prefix":
        f.append_entries(entries[:5])
    elif follower_has == "same":
        f.append_entries(entries[:35])
    elif follower_has == "conflict":
        f.append_entries(entries[:20])
        f.append_batch(7, [b"other"] * 15)
    f.sync()
    prev = leader.boundary(29)
    f.reset_prefix(30, prev=prev)
    assert f.begin_index == 30 and f.term_at(29) == prev[0]
    if follower_has == "same":
        assert f.last_index == 34
    else:
        assert f.last_index == 29 and f.write_pos == prev[2]
    # A crash right after the reset recovers the same boundary.
    disk.crash()
    f = open_store(tmp_path, disk, self_id="n1")
    assert f.begin_index == 30 and f.last_index >= 29
    f.append_entries(entries[f.last_index + 1 :])
    f.sync()
    assert [f.get(i) for i in range(30, 40)] == entries[30:]
    with pytest.raises(EntryNotFoundError):
        f.get(29)
    f.close()
    f = open_store(tmp_path, self_id="n1", recover_files=1)
    assert f.last_index == 39 and f.get(39) == entries[39]
    f.close()
    leader.close()


def test_lean_sync_writes_data_only_and_recovery_rebuilds_the_index(tmp_path):
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    s = open_store(tmp_path, disk)
    bodies = _fill(s, 5)
    s.sync()
    synced: list[str] = []
    disk.on_sync = synced.append
    bodies += _fill(s, 12, start=5)
    assert s.sync(full=False) == 16
    assert synced and all("/data/" in p for p in synced), synced
    _fill(s, 3, start=17)  # never synced
    disk.crash()  # loses the unsynced index entries and checkpoint as well
    s = open_store(tmp_path, disk)
    assert s.last_index == 16
    assert [s.get(i).body for i in range(17)] == bodies
    assert any("index entries" in n for n in s.recovery_notes), s.recovery_notes
    s.close()


def test_lean_syncs_catch_up_with_a_full_one(tmp_path, monkeypatch):
    monkeypatch.setattr(entry_store, "LAZY_CHECKPOINT_ENTRIES", 4)
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    s = open_store(tmp_path, disk)
    synced: list[str] = []
    disk.on_sync = synced.append
    for i in range(10):
        s.append(1, body(i))
        s.sync(full=False)
    assert any(p.endswith("checkpoint") for p in synced)
    assert any("/index/" in p for p in synced)
    s.close()


# --- zero-fill ahead ------------------------------------------------------------------------
ZDFS = 64 << 10  # data file size for the zero-fill tests: room for a window in one file
ZWIN = 16 << 10


def _allocated_from(path: str, pos: int) -> int:
    """The first hole at or after `pos` (the file's size when there is none)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, pos, os.SEEK_HOLE)
    finally:
        os.close(fd)


def test_zero_fill_ahead_keeps_a_window_of_written_zeros(tmp_path):
    s = open_store(tmp_path, data_file_size=ZDFS, zero_ahead=ZWIN)
    path = f"{s.data_dir}/{0:020d}"
    bodies = [body(i) for i in range(10)]
    s.append_batch(1, bodies)
    s.sync(full=False)  # schedules the fill in the background
    s._settle_zero()
    wp = s.write_pos
    assert s._zero_end == wp + ZWIN
    assert _allocated_from(path, 0) >= wp + ZWIN  # blocks written, not a hole
    with open(path, "rb") as f:
        f.seek(wp)
        assert f.read(ZWIN) == bytes(ZWIN)
    # less than half the window left: the next sync extends it to a full window again
    while s._zero_end - s.write_pos >= ZWIN // 2:
        bodies.append(body(len(bodies)))
        s.append(1, bodies[-1])
    s.sync(full=False)
    s._settle_zero()
    assert s._zero_end == s.write_pos + ZWIN
    # a batch running past a pending fill waits for it; the data is intact
    s.sync(full=False)
    more = [bytes(1000) + body(i) for i in range(40)]  # > ZWIN, across the file end
    s.append_batch(1, more)
    bodies += more
    s.sync()
    s.close()
    s = open_store(tmp_path, data_file_size=ZDFS, zero_ahead=ZWIN)
    assert [s.get(i).body for i in range(len(bodies))] == bodies
    assert s.last_index == len(bodies) - 1
    s.close()


@pytest.mark.parametrize("tear", [0, 30, 300])  # < the unsynced batch (8 headers)
@pytest.mark.parametrize("lean", [False, True], ids=["full", "lean"])
def test_crash_with_zero_filled_tail_recovers_exactly_the_synced_entries(tmp_path, tear, lean):
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    s = open_store(tmp_path, disk, data_file_size=ZDFS, zero_ahead=ZWIN)
    rng = random.Random(tear)
    synced: list[bytes] = []
    for _ in range(3):
        batch = [body(0, rng) for _ in range(rng.randint(5, 30))]
        s.append_batch(1, batch)
        s.sync(full=not lean)
        synced += batch
        s._settle_zero()
        assert s._zero_end > s.write_pos  # the tail after the last entry is zero-filled
    s.append_batch(1, [bytes(400) + body(i) for i in range(8)])  # never synced
    disk.crash(tear_last=tear)
    s = open_store(tmp_path, disk, data_file_size=ZDFS, zero_ahead=ZWIN)
    assert s.last_index == len(synced) - 1
    assert [s.get(i).body for i in range(len(synced))] == synced
    # the log goes on from there, and the window is refilled
    s.append(1, b"next")
    s.sync(full=not lean)
    s._settle_zero()
    assert s._zero_end > s.write_pos
    s.close()
    s = open_store(tmp_path, disk, data_file_size=ZDFS)
    assert s.last_index == len(synced) and s.get(len(synced)).body == b"next"
    s.close()


def test_zero_fill_settles_before_truncation_and_stops_on_disk_full(tmp_path):
    disk = FaultyDisk(OsDisk(), track_unsynced=True)
    s = open_store(tmp_path, disk, data_file_size=ZDFS, zero_ahead=ZWIN)
    bodies = [body(i) for i in range(20)]
    s.append_batch(1, bodies)
    s.sync(full=False)  # a fill may still be running: truncation waits for it
    s.truncate_suffix(10)
    assert s._zero_job is None
    s.sync(full=False)
    s._settle_zero()
    while s._zero_end - s.write_pos >= ZWIN // 2:
        s.append(1, b"y" * 100)
    disk.space_left = 1000  # not enough for the next stretch of the window
    s.sync(full=False)
    s._settle_zero()
    assert s.zero_ahead == 0  # no room: writes allocate as they go, the store goes on
    disk.space_left = None
    s.append(1, b"z")
    assert s.sync() == s.last_index
    s.close()
