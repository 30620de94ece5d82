"""Transcripts of log compaction and snapshot transfer: a leader that compacted away the
entries a follower needs streams its snapshot in checksummed chunks; the follower hands
it to the driver in Ready.snapshot and its log restarts after the snapshot index.

The Cluster's state machine is the list of applied entries, and a snapshot is that list
encoded, so the checker can compare a restored node with everyone else entry by entry.
"""

import dataclasses
import random
import zlib

import pytest

from ledgermq.dledger.core import (
    ENTRY_NOOP,
    Config,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MsgType,
    RaftNode,
    Snapshot,
    SnapshotMeta,
)
from ledgermq.testing.checkers.raft import RaftChecker
from ledgermq.testing.sim import Cluster
from ledgermq.testing.sim.cluster import decode_state

CFG = Config(election_ticks=10, heartbeat_ticks=1, snapshot_chunk_bytes=64)


def cluster(n=3, config=CFG, seed=7):
    ids = [chr(ord("a") + i) for i in range(n)]
    return Cluster(ids, config, seed=seed, checker=RaftChecker(ids))


def data(c, nid):
    return [e.data for e in c.applied[nid] if e.kind != ENTRY_NOOP]


def settle(c, *ids, rounds=15):
    for _ in range(rounds):
        c.tick(*ids)
        c.deliver()


def test_compaction_drops_the_prefix_but_keeps_the_term_at_the_compaction_point():
    c = cluster()
    c.elect("a")
    for i in range(10):
        c.node("a").propose(b"%d" % i)
    c.deliver()
    assert c.snapshot("a", compact_to=6) == 11
    s = c.storages["a"]
    assert (s.first_index(), s.last_index(), s.term(6)) == (7, 11, 1)
    assert s.snapshot_meta() == SnapshotMeta(11, 1, ConfState(("a", "b", "c")))
    a = c.node("a")
    assert a.log.first_index() == 7 and a.log.term(6) == 1
    assert a.propose(b"more") == 12, "the log goes on after compaction"
    c.deliver()
    assert data(c, "b")[-1] == b"more"


def test_a_follower_behind_the_compaction_point_is_caught_up_with_a_chunked_snapshot():
    c = cluster()
    c.elect("a")
    c.isolate("c")
    for i in range(20):
        c.node("a").propose(b"value-%d" % i)
    c.deliver()
    index = c.snapshot("a")
    assert index == 21 and c.storages["a"].first_index() == 22
    c.node("a").propose(b"after")
    c.deliver()
    c.heal()
    delivered = []
    for _ in range(15):
        c.tick("a")
        delivered += c.deliver()
    chunks = [m for m in delivered if m.type is MsgType.INSTALL_SNAPSHOT]
    size = len(c.storages["a"].snapshot().data)
    assert len(chunks) == -(-size // 64) > 5, "one message per 64-byte chunk"
    assert [m.offset for m in chunks] == list(range(0, size, 64))
    assert [m.done for m in chunks][-1] and not any(m.done for m in chunks[:-1])
    assert all(
        m.snapshot.index == 21 and m.checksum == zlib.crc32(c.storages["a"].snapshot().data)
        for m in chunks
    )
    cs = c.storages["c"]
    assert (cs.first_index(), cs.snapshot_meta().index) == (22, 21), "log restarts after it"
    assert data(c, "c") == data(c, "a") == [b"value-%d" % i for i in range(20)] + [b"after"]
    assert c.node("c").applied == c.node("a").applied == 22


def test_the_follower_hands_the_snapshot_to_the_driver_before_anything_is_applied():
    meta = SnapshotMeta(50, 3, ConfState(("a", "b", "c")))
    blob = b"state machine at 50" * 10
    crc = zlib.crc32(blob)
    storage = MemoryStorage()
    b = RaftNode("b", ["a", "b", "c"], storage, CFG, random.Random(1))

    def chunk(off, done):
        return Message(
            MsgType.INSTALL_SNAPSHOT,
            "a",
            "b",
            3,
            snapshot=meta,
            data=blob[off : off + 64],
            offset=off,
            done=done,
            checksum=crc,
        )

    for off in range(0, len(blob), 64):
        b.step(chunk(off, off + 64 >= len(blob)))
    rd = b.ready()
    assert rd.snapshot == Snapshot(meta, blob)
    assert rd.hard_state == HardState(3, None, 50)
    assert rd.committed_entries == [] and rd.entries == []
    acks = [(m.type, m.offset, m.done, m.index) for m in rd.messages]
    assert acks[:2] == [
        (MsgType.INSTALL_SNAPSHOT_RESP, 64, False, 50),
        (MsgType.INSTALL_SNAPSHOT_RESP, 128, False, 50),
    ]
    assert acks[-1] == (MsgType.INSTALL_SNAPSHOT_RESP, 0, True, 50)
    storage.apply_snapshot(rd.snapshot)  # the driver persists it first
    storage.set_hard_state(rd.hard_state)
    b.advance(rd)
    assert (b.applied, b.commit, b.log.first_index(), b.log.last_index()) == (50, 50, 51, 50)
    # the next append continues right after the snapshot
    b.step(
        Message(
            MsgType.APPEND,
            "a",
            "b",
            3,
            index=50,
            log_term=3,
            entries=(Entry(51, 3, b"x"),),
            commit=51,
        )
    )
    rd = b.ready()
    assert [e.index for e in rd.entries] == [51] and [e.index for e in rd.committed_entries] == [51]


def test_a_corrupted_chunk_fails_the_checksum_and_the_snapshot_is_sent_again():
    c = cluster()
    c.elect("a")
    c.isolate("c")
    for i in range(10):
        c.node("a").propose(b"v%d" % i)
    c.deliver()
    c.snapshot("a")
    c.heal()
    corrupted = []

    def flip(m):
        if m.type is MsgType.INSTALL_SNAPSHOT and m.offset == 64 and not corrupted:
            corrupted.append(m)
            return dataclasses.replace(m, data=bytes([m.data[0] ^ 0xFF]) + m.data[1:])
        return m

    for _ in range(15):
        c.tick("a")
        c.deliver(rewrite=flip)
    assert corrupted, "a chunk was corrupted on the way"
    assert c.node("c").snapshots_rejected == 1, "the receiver refused the bad bytes"
    assert data(c, "c") == data(c, "a") == [b"v%d" % i for i in range(10)]
    assert decode_state(c.storages["c"].snapshot().data) == c.applied["a"][:11]


def test_a_lost_chunk_is_resent_from_the_gap():
    c = cluster()
    c.elect("a")
    c.isolate("c")
    for i in range(10):
        c.node("a").propose(b"v%d" % i)
    c.deliver()
    c.snapshot("a")
    c.heal()
    lost = []

    def drop_once(m):
        if m.type is MsgType.INSTALL_SNAPSHOT and m.offset == 128 and not lost:
            lost.append(m)
            return True
        return False

    for _ in range(15):
        c.tick("a")
        c.deliver(drop=drop_once)
    assert lost
    assert data(c, "c") == data(c, "a")


def test_a_restarted_node_resumes_from_its_snapshot():
    c = cluster()
    c.elect("a")
    for i in range(10):
        c.node("a").propose(b"v%d" % i)
    c.deliver()
    settle(c, "a", rounds=2)
    c.snapshot("b")
    c.crash("b")
    b = c.restart("b")
    assert (b.applied, b.commit, b.log.first_index(), b.log.last_index()) == (11, 11, 12, 11)
    assert data(c, "b") == [b"v%d" % i for i in range(10)], "state machine from the snapshot"
    c.node("a").propose(b"next")
    c.deliver()
    assert data(c, "b")[-1] == b"next"


def test_compactable_index_waits_for_active_followers_but_not_for_silent_ones():
    c = cluster()
    c.elect("a")
    c.isolate("c")
    for i in range(10):
        c.node("a").propose(b"v%d" % i)
    c.deliver()
    a = c.node("a")
    assert a.applied == 11
    assert a.compactable_index() == 1, "c (only cut off a moment ago) has 1"
    settle(c, "a", "b", rounds=25)
    assert a.compactable_index() == 11, "c has been silent for two election timeouts"
    assert c.node("b").compactable_index() == c.node("b").applied, "followers: applied"


def test_a_storage_cannot_compact_what_no_snapshot_covers():
    s = MemoryStorage()
    s.append([Entry(i, 1) for i in range(1, 6)])
    with pytest.raises(AssertionError, match="beyond the snapshot"):
        s.compact(3)
    s.create_snapshot(Snapshot(SnapshotMeta(4, 1, ConfState(("a",))), b"s"))
    s.compact(3)
    assert (s.first_index(), s.term(3), s.entries(4, 6)) == (4, 1, [Entry(4, 1), Entry(5, 1)])


def test_a_single_chunk_snapshot_that_fails_its_checksum_is_resent_at_once():
    cfg = Config(election_ticks=10, heartbeat_ticks=1, snapshot_chunk_bytes=1 << 20)
    c = cluster(config=cfg)
    c.elect("a")
    c.isolate("c")
    for i in range(10):
        c.node("a").propose(b"v%d" % i)
    c.deliver()
    c.snapshot("a")
    c.heal()
    sent = []

    def flip_first(m):
        if m.type is MsgType.INSTALL_SNAPSHOT:
            sent.append(m)
            if len(sent) == 1:
                return dataclasses.replace(m, data=m.data[:-1] + bytes([m.data[-1] ^ 1]))
        return m

    for _ in range(12):
        c.tick("a")
        delivered = c.deliver(rewrite=flip_first)
        if sent:
            break
    assert [(m.offset, m.done) for m in sent] == [(0, True), (0, True)], "sent again at once"
    assert [m.reject for m in delivered if m.type is MsgType.INSTALL_SNAPSHOT_RESP] == [
        True,
        False,
    ]
    assert c.node("c").snapshots_rejected == 1
    assert data(c, "c") == data(c, "a")
