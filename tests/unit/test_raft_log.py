"""The in-memory Raft log: matching, merging appends, conflict hints, stability."""

import pytest

from ledgermq.dledger.core import Entry, MemoryStorage
from ledgermq.dledger.core.log import RaftLog
from ledgermq.dledger.core.types import CommittedEntryConflict


def log_of(*terms, commit=0):
    """A log whose entries are all in storage (as after a restart)."""
    s = MemoryStorage()
    s.append([Entry(i + 1, t, b"%d" % (i + 1)) for i, t in enumerate(terms)])
    return RaftLog(s, commit)


def test_index_zero_is_the_empty_prefix_with_term_zero():
    log = log_of()
    assert (log.last_index(), log.last_term(), log.term(0), log.term(1)) == (0, 0, 0, None)
    assert log.matches(0, 0)


def test_merge_skips_entries_it_has_and_replaces_from_the_first_conflict():
    log = log_of(1, 1, 2, 2)
    log.stable_to(4, 2)
    last = log.merge(2, (Entry(3, 2, b"3"), Entry(4, 3, b"new"), Entry(5, 3, b"more")))
    assert last == 5
    assert [(e.index, e.term) for e in log.entries] == [(1, 1), (2, 1), (3, 2), (4, 3), (5, 3)]
    assert log.unstable == 4, "the replaced entry and its successors must be written again"


def test_merge_of_an_old_message_does_not_cut_newer_entries():
    log = log_of(1, 1, 1, 1)
    assert log.merge(1, (Entry(2, 1, b"2"),)) == 2
    assert log.last_index() == 4


def test_merge_refuses_to_overwrite_a_committed_entry():
    # a typed error, not an assert: the driver takes the replica out of service (and
    # `python -O` must not turn the check off)
    log = log_of(1, 1, 1, commit=2)
    with pytest.raises(CommittedEntryConflict, match="committed entry 2"):
        log.merge(1, (Entry(2, 2, b"x"),))
    assert [e.term for e in log.entries] == [1, 1, 1], "nothing was cut"


def test_conflict_hint_skips_every_entry_of_a_newer_term():
    log = log_of(1, 1, 4, 4, 4, 4)
    # leader probes at (6, term 5): our entry 6 has term 4 <= 5, the best candidate
    assert log.conflict_hint(6, 5) == (6, 4)
    # leader probes at (6, term 2): all term-4 entries are skipped in one go
    assert log.conflict_hint(6, 2) == (2, 1)
    # a probe past our end is answered from our last entry
    assert log.conflict_hint(10, 4) == (6, 4)


def test_stable_to_ignores_entries_replaced_since_the_ready():
    log = log_of(1, 1)  # both loaded from storage: stable
    log.merge(1, (Entry(2, 2, b"x"),))
    assert log.unstable == 2
    log.stable_to(2, 1)  # a late acknowledgement of the old (2, term 1)
    assert log.unstable == 2, "the new (2, term 2) is still not on disk"
    log.stable_to(2, 2)
    assert log.unstable == 3


def test_a_persisted_commit_beyond_the_persisted_log_is_refused():
    with pytest.raises(AssertionError, match="hard state must be written after"):
        log_of(1, commit=2)


def test_memory_storage_append_cuts_the_tail_and_refuses_gaps():
    s = MemoryStorage()
    s.append([Entry(1, 1), Entry(2, 1), Entry(3, 1)])
    s.append([Entry(2, 2)])
    assert [(e.index, e.term) for e in s.entries()] == [(1, 1), (2, 2)]
    with pytest.raises(AssertionError, match="gap"):
        s.append([Entry(5, 2)])
