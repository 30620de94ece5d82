"""The bridge between the Raft core's log (1-based) and the DLedger entry store (0-based)."""

from ledgermq.dledger.core.types import ENTRY_NOOP, Entry, HardState
from ledgermq.dledger.log_storage import RaftLogStorage
from ledgermq.storage.disk import OsDisk


def open_log(tmp_path) -> tuple[RaftLogStorage, object]:
    s = RaftLogStorage(
        OsDisk(), str(tmp_path), "n0", data_file_size=1 << 16, index_file_size=32 * 64
    )
    return s, s.open()


def test_append_truncate_and_reopen(tmp_path):
    s, view = open_log(tmp_path)
    assert view.hard_state() == HardState() and view.entries() == []
    assert (view.first_index(), view.last_index(), view.term(0)) == (1, 0, 0)
    s.append([Entry(1, 1, b"", ENTRY_NOOP), Entry(2, 1, b"a"), Entry(3, 1, b"b")])
    s.save_hard_state(HardState(1, "n0", 3))
    # a new leader's entries: 2 is the same entry, 3 conflicts, 4 is new
    s.append([Entry(2, 1, b"a"), Entry(3, 2, b"c"), Entry(4, 2, b"d")])
    assert [(e.index, e.term, e.data) for e in view.entries(2, 5)] == [
        (2, 1, b"a"),
        (3, 2, b"c"),
        (4, 2, b"d"),
    ]
    assert view.entries(1, 5, max_bytes=1) == [Entry(1, 1, b"", ENTRY_NOOP), Entry(2, 1, b"a")]
    assert s.get(0).is_noop and s.get(3).data == b"d" and s.last_index == 3
    s.sync()
    s.save_hard_state(HardState(2, "n1", 4))
    s.close()
    s, view = open_log(tmp_path)
    # commit is saved on close; term and vote at once
    assert view.hard_state() == HardState(2, "n1", 4)
    assert [e.data for e in view.entries()] == [b"", b"a", b"c", b"d"]
    assert view.config_entries() == []
    s.close()


def test_commit_hint_is_clamped_to_the_stored_log(tmp_path):
    s, _ = open_log(tmp_path)
    s.append([Entry(1, 1, b"x")])
    s.sync()
    # the hint may name entries that never reached the disk (flush-interval mode)
    s.hard.save(1, "n0", 9)
    s.store.close()
    s, view = open_log(tmp_path)
    assert view.hard_state().commit == 1
    s.close()


def test_node_reads_a_big_log_on_demand_with_a_bounded_cache(tmp_path):
    """A member reopening a long log must not load it into memory: the node keeps only
    its bounded cache and reads older entries through the view."""
    import random

    from ledgermq.dledger.core import Config, RaftNode
    from ledgermq.dledger.core.types import (
        ENTRY_CONFIG,
        ConfChangeType,
        ConfigChange,
        ConfState,
        encode_config,
    )

    s = RaftLogStorage(
        OsDisk(), str(tmp_path), "n0", data_file_size=1 << 20, index_file_size=32 * 1024
    )
    s.open()
    body = b"x" * 1000
    n = 5000  # about 5 MB of data
    change = ConfigChange(ConfChangeType.ADD_LEARNER, "n9", "127.0.0.1:1")
    conf = ConfState.of(["n0"], ["n9"])
    batch = []
    for i in range(1, n + 1):
        if i == 4321:
            batch.append(Entry(i, 1, encode_config(change, conf), ENTRY_CONFIG))
        else:
            batch.append(Entry(i, 1, body))
        if len(batch) == 500:
            s.append(batch)
            batch = []
    s.append(batch)
    s.save_hard_state(HardState(1, "n0", n))
    s.sync()
    s.close()

    s = RaftLogStorage(
        OsDisk(), str(tmp_path), "n0", data_file_size=1 << 20, index_file_size=32 * 1024
    )
    view = s.open()
    assert [e.index for e in view.config_entries()] == [4321]
    cache = 64 << 10
    config = Config(max_cache_bytes=cache, max_apply_bytes=256 << 10)
    node = RaftNode("n0", ["n0"], view, config, random.Random(1))
    assert node.commit == n and node.conf == conf
    assert node.log.tail == []  # nothing read at start
    applied = 0
    while node.has_ready():
        rd = node.ready()
        s.append(rd.entries)
        if rd.hard_state:
            s.save_hard_state(rd.hard_state)
        applied += len(rd.committed_entries)
        # one Ready applies at most max_apply_bytes (+ one entry)
        assert sum(len(e.data) for e in rd.committed_entries) <= (256 << 10) + 1000
        node.advance(rd)
    assert applied == n and node.applied == n
    # become leader and write more: the cache of persisted entries stays bounded
    node.campaign(transfer=False)
    for _ in range(3):
        while node.has_ready():
            rd = node.ready()
            s.append(rd.entries)
            if rd.hard_state:
                s.save_hard_state(rd.hard_state)
            node.advance(rd)
        for _ in range(300):
            node.propose(body)
    while node.has_ready():
        rd = node.ready()
        s.append(rd.entries)
        node.advance(rd)
    assert node.log.cache_bytes <= cache
    assert sum(len(e.data) + 64 for e in node.log.tail) <= cache
    # older entries are still there, read through the view
    assert node.log.entry(2).data == body
    s.close()
