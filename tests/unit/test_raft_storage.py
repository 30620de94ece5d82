"""Transcripts of the storage-backed Raft log: the node reads stable entries through its
StorageView on demand and keeps only unpersisted entries (plus a bounded cache) in memory.
"""

import random

from ledgermq.dledger.core import (
    ENTRY_NOOP,
    Config,
    Entry,
    HardState,
    MemoryStorage,
    RaftNode,
    Role,
)
from ledgermq.testing.checkers.raft import RaftChecker
from ledgermq.testing.sim import Cluster


class CountingStorage(MemoryStorage):
    """MemoryStorage that counts the entries the node reads from it."""

    def __init__(self) -> None:
        super().__init__()
        self.read = 0

    def entries(self, lo=None, hi=None, max_bytes=None):
        out = super().entries(lo, hi, max_bytes)
        self.read += len(out)
        return out


def big_storage(n, term=1, size=100, commit=None):
    s = CountingStorage()
    s.append([Entry(i, term, b"x" * size) for i in range(1, n + 1)])
    s.set_hard_state(HardState(term, "a", n if commit is None else commit))
    return s


def test_a_restarted_node_holds_none_of_its_thousands_of_stored_entries_in_memory():
    s = big_storage(5000)
    node = RaftNode("a", ["a", "b", "c"], s, Config(), random.Random(1))
    assert (node.log.last_index(), node.log.last_term(), node.commit) == (5000, 1, 5000)
    assert node.log.tail == [], "nothing is loaded up front"
    assert s.read == 0
    assert node.log.term(1234) == 1 and node.log.entry(4321).index == 4321


def test_committed_entries_are_read_from_storage_in_bounded_batches_and_not_kept():
    s = big_storage(3000)
    cfg = Config(max_apply_bytes=10_000, max_cache_bytes=2_000)
    node = RaftNode("a", ["a"], s, cfg, random.Random(1), applied=0)
    batches = []
    while node.has_ready():
        rd = node.ready()
        s.append(rd.entries)
        if rd.hard_state:
            s.set_hard_state(rd.hard_state)
        batches.append(len(rd.committed_entries))
        node.advance(rd)
    assert sum(batches) == 3000
    assert max(batches) == 100, "10,000 bytes of 100-byte entries per Ready"
    node.campaign(transfer=False)  # a single voter wins at once and appends a no-op
    for _ in range(50):
        node.propose(b"y" * 100)
    while node.has_ready():
        rd = node.ready()
        s.append(rd.entries)
        if rd.hard_state:
            s.set_hard_state(rd.hard_state)
        node.advance(rd)
    assert node.applied == node.log.last_index() == 3051
    assert len(node.log.tail) <= 2_000 // 164 + 1, "only a bounded cache stays in memory"
    assert node.log.cache_bytes <= 2_000


def test_a_follower_far_behind_is_caught_up_from_the_leaders_storage():
    cfg = Config(election_ticks=10, heartbeat_ticks=1, max_cache_bytes=1_000)
    ids = ["a", "b", "c"]
    c = Cluster(ids, cfg, seed=3, checker=RaftChecker(ids))
    c.elect("a")
    c.isolate("c")
    for i in range(400):
        c.node("a").propose(b"%d" % i)
        if i % 50 == 0:
            c.deliver()
    c.deliver()
    a = c.node("a")
    assert len(a.log.tail) < 30, "the leader keeps only a bounded cache"
    c.heal()
    for _ in range(12):  # appends lost in the cut age out after an election timeout
        c.tick("a")
        c.deliver()
    assert c.node("c").log.last_index() == a.log.last_index() == 401
    assert [e.data for e in c.applied["c"] if e.kind != ENTRY_NOOP][-1] == b"399"
    assert c.node("c").log.entries == a.log.entries


def test_a_storage_view_with_only_hard_state_and_entries_still_works():
    class OldView:
        def hard_state(self):
            return HardState(2, "a", 3)

        def entries(self):
            return [Entry(1, 1), Entry(2, 1, b"x"), Entry(3, 2)]

    node = RaftNode("a", ["a"], OldView(), Config(), random.Random(1))
    assert (node.term, node.commit, node.log.last_index(), node.log.last_term()) == (2, 3, 3, 2)
    node.campaign(transfer=False)
    assert node.role is Role.LEADER
    rd = node.ready()
    assert [e.index for e in rd.entries] == [4]
    assert [e.index for e in rd.committed_entries] == [1, 2, 3]
    node.advance(rd)
    rd = node.ready()  # the no-op commits once the leader's own write of it is done
    assert [e.index for e in rd.committed_entries] == [4]
    node.advance(rd)
    assert node.log.entry(2).data == b"x"
