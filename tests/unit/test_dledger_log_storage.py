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
