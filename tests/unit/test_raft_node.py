"""Transcripts of the sans-I/O Raft node, driven message by message through a Cluster.

Every test runs with the safety checker attached, so each delivery is also checked for
election safety, log matching, leader completeness and state-machine safety.
"""

import random

from ledgermq.dledger.core import (
    ENTRY_NOOP,
    Config,
    ErrorCode,
    MemoryStorage,
    Message,
    MsgType,
    ProposeError,
    RaftNode,
    Role,
)
from ledgermq.testing.checkers.raft import RaftChecker
from ledgermq.testing.sim import Cluster

CFG = Config(election_ticks=10, heartbeat_ticks=1)


def cluster(n=3, config=CFG, seed=7):
    ids = [chr(ord("a") + i) for i in range(n)]
    return Cluster(ids, config, seed=seed, checker=RaftChecker(ids))


def applied_data(c, nid):
    return [e.data for e in c.applied[nid] if e.kind != ENTRY_NOOP]


def test_a_node_that_times_out_is_elected_and_commits_a_noop_of_its_term():
    c = cluster()
    c.tick("a", times=20)  # the randomized timeout is in [10, 20)
    assert c.node("a").role is Role.PRE_CANDIDATE
    assert c.node("a").term == 0, "a pre-vote does not change the term"
    c.deliver()
    a = c.node("a")
    assert (a.role, a.term, c.leaders()) == (Role.LEADER, 1, ["a"])
    assert [(e.index, e.term, e.kind) for e in a.log.entries] == [(1, 1, ENTRY_NOOP)]
    assert a.commit == 1, "committed once one follower has it"
    c.tick("a")  # the next heartbeat carries the commit index to the slower follower
    c.deliver()
    assert [c.node(i).commit for i in "abc"] == [1, 1, 1]


def test_proposals_replicate_commit_and_apply_in_order_everywhere():
    c = cluster()
    c.elect("a")
    assert c.node("a").propose(b"x") == 2
    assert c.node("a").propose(b"y") == 3
    c.deliver()
    c.tick("a")  # followers learn the final commit index from the next heartbeat
    c.deliver()
    for nid in "abc":
        assert c.node(nid).commit == 3
        assert applied_data(c, nid) == [b"x", b"y"]
        assert [e.index for e in c.storages[nid].entries()] == [1, 2, 3]


def test_a_follower_refuses_proposals_and_names_the_leader():
    c = cluster()
    c.elect("a")
    res = c.node("b").propose(b"x")
    assert isinstance(res, ProposeError)
    assert (res.code, res.leader_id) == (ErrorCode.NOT_LEADER, "a")


def test_votes_are_in_the_same_ready_as_the_hard_state_that_records_them():
    b = RaftNode("b", ["a", "b", "c"], MemoryStorage(), CFG, random.Random(1))
    b.step(Message(MsgType.VOTE, "a", "b", term=1, index=0, log_term=0))
    rd = b.ready()
    assert (rd.hard_state.term, rd.hard_state.vote) == (1, "a")
    assert [(m.type, m.reject) for m in rd.messages] == [(MsgType.VOTE_RESP, False)]
    b.advance(rd)
    # a second candidate in the same term is refused: one vote per term
    b.step(Message(MsgType.VOTE, "c", "b", term=1, index=5, log_term=1))
    rd = b.ready()
    assert rd.hard_state is None
    assert [(m.type, m.reject) for m in rd.messages] == [(MsgType.VOTE_RESP, True)]


def test_a_voter_refuses_a_candidate_with_a_staler_log():
    c = cluster()
    c.elect("a")
    c.isolate("c")
    c.node("a").propose(b"x")
    c.deliver()
    c.heal()
    # c missed entry 2: b must not help it win, even though c asks at a higher term
    c.tick("b", times=10)  # b's lease on leader a runs out
    c.node("c").campaign(transfer=True)  # skip pre-vote: a real vote at term 2
    c.deliver(drop=lambda m: m.src == "a" or m.dst == "a")
    assert c.node("c").role is not Role.LEADER
    assert c.node("b").vote is None


def test_prevote_keeps_a_partitioned_node_from_inflating_terms_and_deposing_the_leader():
    c = cluster()
    c.elect("a")
    c.isolate("c")
    for _ in range(200):
        c.tick("c")
        c.deliver()
    assert c.node("c").term == 1, "an isolated pre-candidate never bumps its term"
    assert c.node("c").role is Role.PRE_CANDIDATE
    c.heal()
    c.tick("a")  # heartbeat
    c.deliver()
    assert c.leaders() == ["a"] and c.node("a").term == 1
    assert c.node("c").role is Role.FOLLOWER and c.node("c").leader_id == "a"


def test_without_prevote_the_same_partition_deposes_the_leader():
    c = cluster(
        config=Config(election_ticks=10, heartbeat_ticks=1, pre_vote=False, check_quorum=False)
    )
    c.elect("a")
    c.isolate("c")
    c.tick("c", times=60)
    assert c.node("c").term > 2, "terms climb while cut off"
    c.heal()
    c.tick("a")
    c.deliver()
    assert c.node("a").role is not Role.LEADER or c.node("a").term > 1


def test_followers_with_a_live_leader_ignore_vote_requests_from_higher_terms():
    c = cluster()
    c.elect("a")
    b = c.node("b")
    b.step(Message(MsgType.VOTE, "c", "b", term=9, index=100, log_term=9))
    assert (b.term, b.vote, b.leader_id) == (1, "a", "a"), "leader stickiness"
    assert not b.msgs


def test_check_quorum_makes_a_cut_off_leader_step_down_and_refuse_writes():
    c = cluster()
    c.elect("a")
    c.isolate("a")
    for _ in range(9):
        c.tick("a")
        c.deliver()
    assert c.node("a").role is Role.LEADER, "acks from before the cut still count"
    for _ in range(11):
        c.tick("a")
        c.deliver()
    a = c.node("a")
    assert a.role is Role.FOLLOWER and a.term == 1
    assert isinstance(a.propose(b"x"), ProposeError)


def test_a_leader_that_hears_from_a_quorum_keeps_leading():
    c = cluster()
    c.elect("a")
    c.isolate("c")
    for _ in range(50):
        c.tick("a", "b")
        c.deliver()
    assert c.leaders() == ["a"] and c.node("a").term == 1


def test_a_stale_leader_learns_the_new_term_from_the_first_answer_and_steps_down():
    cfg = Config(election_ticks=10, heartbeat_ticks=1, check_quorum=False)
    c = cluster(config=cfg)
    c.elect("a")
    c.isolate("a")
    c.elect("b")
    assert c.node("b").term == 2
    c.heal()
    c.tick("a")  # a still thinks it leads term 1 and heartbeats
    c.deliver()
    assert c.leaders() == ["b"]
    assert c.node("a").term == 2 and c.node("a").role is Role.FOLLOWER
    c.tick("b")
    c.deliver()
    assert c.node("a").leader_id == "b"


def test_a_divergent_follower_is_repaired_with_few_round_trips():
    c = cluster()
    c.elect("a")
    c.isolate("a")
    for i in range(40):  # 40 uncommitted entries of term 1 that will never commit
        c.node("a").propose(b"old%d" % i)
    c.deliver()
    c.elect("b", force=True)
    for i in range(30):
        c.node("b").propose(b"new%d" % i)
    c.deliver()
    c.heal()
    c.tick("b")
    delivered = c.deliver()
    rejects = [m for m in delivered if m.type is MsgType.APPEND_RESP and m.reject]
    assert len(rejects) <= 2, "the conflict hint skips a whole term at once"
    assert c.node("a").log.entries == c.node("b").log.entries
    assert applied_data(c, "a") == [b"new%d" % i for i in range(30)]


def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed_by_counting():
    cfg = Config(election_ticks=10, heartbeat_ticks=1, check_quorum=False, max_msg_entries=1)
    c = cluster(5, config=cfg)
    a, b, _, _, e = c.ids
    c.elect(a)  # term 1, no-op at 1 committed everywhere
    c.node(a).propose(b"x")  # (2, term 1) reaches b only
    c.deliver(drop=lambda m: m.type is MsgType.APPEND and m.dst != b)
    c.crash(a)
    c.isolate(b)
    c.node(e).campaign(transfer=True)  # term 2 with votes of c, d, e
    c.deliver(drop=lambda m: m.type is MsgType.APPEND)  # its no-op (2, term 2) stays local
    assert c.leaders() == [e] and c.log_terms(e) == [1, 2]
    c.isolate(e)
    c.restart(a)
    c.heal()
    c.isolate(e)

    # a (restarted at term 1) needs two rounds: term 2 is taken, term 3 wins b, c, d.
    # It then copies (2, term 1) to c and d, but its no-op (3, term 3) never arrives.
    def noop_lost(m):
        has_2 = c.nodes[m.dst] is not None and c.node(m.dst).log.last_index() >= 2
        return m.type is MsgType.APPEND and any(x.index == 3 for x in m.entries) and has_2

    for _ in range(2):
        c.node(a).campaign(transfer=True)
        c.deliver(drop=noop_lost)
    leader = c.node(a)
    assert (leader.role, leader.term) == (Role.LEADER, 3)
    holders = [n for n in c.ids if c.log_terms(n)[:2] == [1, 1]]
    assert len(holders) >= 3, "(2, term 1) is on a majority"
    assert leader.commit == 1, "but a term-3 leader must not commit a term-1 entry by counting"
    # indeed e can still win (its last term 2 beats 1) and overwrite index 2 everywhere
    c.crash(a)
    c.heal()
    assert c.node(e).role is Role.LEADER, "e still believes it leads term 2"
    for _ in range(3):  # term 3 is taken (voters answer with it), term 4 wins
        c.node(e).campaign(transfer=True)
        c.deliver()
        if c.leaders() == [e]:
            break
    assert c.leaders() == [e] and c.node(e).term == 4
    c.node(e).propose(b"y")
    c.deliver()
    c.tick(e)
    c.deliver()
    for n in (b, "c", "d", e):
        assert c.node(n).log.entries[1].term == 2
        assert applied_data(c, n) == [b"y"]


def test_an_old_term_entry_commits_once_the_new_leader_commits_its_own_noop():
    c = cluster()
    c.elect("a")
    c.node("a").propose(b"x")  # x reaches b, but a never hears back: x is not committed
    c.deliver(drop=lambda m: m.dst == "c" or m.type is MsgType.APPEND_RESP)
    assert c.node("a").commit == 1 and c.log_terms("b") == [1, 1]
    c.crash("a")
    c.elect("b", force=True)  # term 2; x (term 1) commits together with b's no-op (term 2)
    assert c.node("b").commit == 3 and c.log_terms("b") == [1, 1, 2]
    c.tick("b")
    c.deliver()
    assert applied_data(c, "c") == [b"x"]


def test_leadership_transfer_catches_the_target_up_then_hands_over():
    c = cluster()
    c.elect("a")
    c.isolate("c")
    for i in range(5):
        c.node("a").propose(b"%d" % i)
    c.deliver()
    c.heal()
    assert c.node("a").transfer_leadership("c") is None
    res = c.node("a").propose(b"during")
    assert isinstance(res, ProposeError) and res.code is ErrorCode.LEADER_TRANSFERRING
    c.deliver()
    assert c.leaders() == ["c"] and c.node("c").term == 2
    assert c.node("a").role is Role.FOLLOWER and c.node("a").leader_id == "c"
    assert c.node("c").propose(b"after") == 8
    c.deliver()
    assert applied_data(c, "a") == [b"0", b"1", b"2", b"3", b"4", b"after"]


def test_a_transfer_to_an_unreachable_node_is_abandoned_after_an_election_timeout():
    c = cluster()
    c.elect("a")
    c.isolate("c")
    c.node("a").transfer_leadership("c")
    for _ in range(10):
        c.tick("a", "b")
        c.deliver()
    assert c.node("a").transferee is None
    assert c.node("a").propose(b"x") == 2


def test_a_crash_loses_unpersisted_entries_and_keeps_persisted_ones():
    c = cluster()
    c.elect("a")
    c.node("a").propose(b"x")
    c.deliver()
    c.crash("a", persist_entries=0)
    c.elect("b", force=True)
    b = c.node("b")
    b.propose(b"y")
    b.propose(b"z")
    c.crash("b", persist_entries=1)  # one of the two proposals reached b's disk
    assert [e.data for e in c.storages["b"].entries()][-1:] == [b"y"]
    b = c.restart("b")
    assert [e.data for e in b.log.entries] == [b"", b"x", b"", b"y"]
    assert (b.term, b.role) == (2, Role.FOLLOWER)


def test_a_restarted_node_rebuilds_its_log_term_vote_and_commit_from_storage():
    c = cluster()
    c.elect("a")
    c.node("a").propose(b"x")
    c.deliver()
    c.crash("b")
    b = c.restart("b")
    assert (b.term, b.vote, b.commit, b.log.last_index()) == (1, "a", 2, 2)
    assert b.log.applied == 0  # its state machine re-applies from the start
    c.tick("a")
    c.deliver()
    assert applied_data(c, "b") == [b"x"]


def test_ready_must_be_advanced_before_the_next_ready():
    n = RaftNode("a", ["a"], MemoryStorage(), CFG, random.Random(1))
    n.campaign(transfer=False)
    rd = n.ready()
    try:
        n.ready()
    except AssertionError as e:
        assert "advance" in str(e)
    else:
        raise AssertionError("a second ready() without advance() must fail")
    n.advance(rd)
    # its own write of the no-op is durable only now: that commits it, in one more Ready
    assert n.role is Role.LEADER and n.commit == 1
    rd = n.ready()
    assert [e.kind for e in rd.committed_entries] == [ENTRY_NOOP]
    n.advance(rd)
    assert not n.has_ready()


def test_read_index_confirms_leadership_with_a_heartbeat_round_without_writing():
    c = cluster()
    c.elect("a")
    c.node("a").propose(b"x")
    c.deliver()
    last = c.node("a").log.last_index()
    assert c.node("a").read_index(b"q1") is None
    assert c.reads["a"] == [], "not before a quorum answered"
    delivered = c.deliver()
    assert {m.type for m in delivered} == {MsgType.HEARTBEAT, MsgType.HEARTBEAT_RESP}
    assert [(r.ctx, r.index, r.ok) for r in c.reads["a"]] == [(b"q1", 2, True)]
    assert c.node("a").log.last_index() == last, "a read adds nothing to the log"


def test_a_leader_cut_off_from_the_quorum_never_confirms_a_read():
    c = cluster()
    c.elect("a")
    c.isolate("a")
    c.elect("b", force=True)
    c.node("b").propose(b"newer")
    c.deliver()
    assert c.node("a").read_index(b"stale?") is None  # a still believes it leads term 1
    for _ in range(20):
        c.tick("a")
        c.deliver()
    assert [(r.ctx, r.ok) for r in c.reads["a"]] == [(b"stale?", False)]
    assert c.node("a").role is Role.FOLLOWER


def test_read_index_waits_for_the_new_leader_to_commit_in_its_term():
    c = cluster()
    c.elect("a")
    c.isolate("a")
    c.node("b").campaign(transfer=True)
    c.deliver(drop=lambda m: m.type is MsgType.APPEND)  # b leads term 2, no-op uncommitted
    assert c.leaders() == ["a", "b"] and c.node("b").commit == 1
    res = c.node("b").read_index(b"q")
    assert isinstance(res, ProposeError) and res.code is ErrorCode.LEADER_NOT_READY
    assert isinstance(c.node("c").read_index(b"q"), ProposeError), "followers refuse too"


def test_followers_learn_a_commit_without_waiting_for_the_next_heartbeat():
    c = cluster(5)
    c.elect("a")
    assert c.node("a").propose(b"x") == 2
    c.deliver()
    assert [c.node(n).commit for n in c.ids] == [2] * 5
    assert all(applied_data(c, n) == [b"x"] for n in c.ids)


def test_a_leader_hands_over_to_the_preferred_leader_once_it_is_reachable():
    cfg = Config(election_ticks=10, heartbeat_ticks=1, preferred_leader="c")
    c = cluster(config=cfg)
    c.isolate("c")
    c.elect("a")
    for _ in range(30):
        c.tick("a", "b")
        c.deliver()
    assert c.leaders() == ["a"], "an unreachable preferred leader is not handed anything"
    c.heal()
    for _ in range(25):
        c.tick("a", "b", "c")
        c.deliver()
        if c.leaders() == ["c"]:
            break
    assert c.leaders() == ["c"]
    for _ in range(30):
        c.tick()
        c.deliver()
    assert c.leaders() == ["c"], "and it stays there"


def test_leader_replicates_before_its_own_write_but_counts_itself_only_once_durable():
    c = cluster()
    c.elect("a")
    a = c.node("a")
    index = a.propose(b"x")
    rd = a.ready()
    assert [e.index for e in rd.entries] == [index]
    early = rd.messages[: rd.early]
    assert early and all(m.type is MsgType.APPEND for m in early)
    # the followers get the append, persist it and ack while the leader still writes
    for m in early:
        c.node(m.dst).step(m)
    c.process_ready("b")
    c.process_ready("c")
    acks, c.outbox = c.outbox, []
    for m in acks:
        a.step(m)
    # b and c hold it on disk: a quorum without the leader's own copy
    assert a.commit == index
    c.storages["a"].append(rd.entries)
    a.advance(rd)
    c.deliver()
    assert applied_data(c, "a") == [b"x"]


def test_a_leader_alone_commits_only_what_it_has_persisted():
    c = cluster(n=1)
    c.elect("a")
    a = c.node("a")
    index = a.propose(b"x")
    rd = a.ready()
    assert rd.early == 0 and a.commit == index - 1
    assert index not in [e.index for e in rd.committed_entries]
    c.storages["a"].append(rd.entries)
    a.advance(rd)
    assert a.commit == index


def test_a_crashed_leaders_early_appends_may_survive_on_the_followers():
    c = cluster()
    c.elect("a")
    c.node("a").propose(b"x")
    c.crash("a")  # it wrote nothing of the entry, but its appends went out
    c.deliver()
    for _ in range(40):
        c.tick("b", "c")
        c.deliver()
    leader = c.leaders()[0]
    assert leader in ("b", "c")
    assert applied_data(c, leader) == [b"x"]


def test_propose_many_appends_all_or_none_with_one_round_of_appends():
    c = cluster(config=Config(election_ticks=10, heartbeat_ticks=1, max_pending_proposals=5))
    c.elect("a")
    a = c.node("a")
    first = a.propose_many([b"x", b"y", b"z"])
    assert first == a.log.last_index() - 2
    rd = a.ready()
    appends = [m for m in rd.messages if m.type is MsgType.APPEND]
    assert sorted(m.dst for m in appends) == ["b", "c"]  # one per follower for the lot
    assert all([e.data for e in m.entries] == [b"x", b"y", b"z"] for m in appends)
    c.storages["a"].append(rd.entries)
    c.outbox.extend(rd.messages)
    a.advance(rd)
    full = a.propose_many([b"1", b"2", b"3"])  # 3 uncommitted + 3 > 5
    assert isinstance(full, ProposeError) and full.code is ErrorCode.LEADER_PENDING_FULL
    c.deliver()
    assert applied_data(c, "b") == [b"x", b"y", b"z"]


def test_a_new_leader_counts_only_its_own_uncommitted_proposals_against_the_bound():
    # b takes over holding entries of the old term whose commit it never heard of (a
    # leadership transfer under load): they are not its clients' proposals, and before
    # its no-op commits it cannot know how far they were committed. Counting them made
    # a fresh master refuse every send with 503 for a while.
    c = cluster(config=Config(election_ticks=10, heartbeat_ticks=1, max_pending_proposals=5))
    c.elect("a")
    a = c.node("a")
    assert a.propose_many([b"1", b"2", b"3", b"4"]) == 2
    c.deliver(drop=lambda m: m.type is MsgType.APPEND_RESP)  # a never learns they are held
    b = c.node("b")
    b.campaign(transfer=True)
    c.deliver(drop=lambda m: m.type is MsgType.APPEND_RESP)  # elected, no-op not committed
    assert b.role is Role.LEADER
    assert b.log.last_index() - b.commit == 5, "4 old entries it cannot know committed + no-op"
    assert b.pending_proposals() == 1  # its no-op
    assert not isinstance(b.propose_many([b"x", b"y"]), ProposeError)
    full = b.propose_many([b"5", b"6", b"7", b"8"])  # its own ones still count
    assert isinstance(full, ProposeError) and full.code is ErrorCode.LEADER_PENDING_FULL
    c.deliver()
    c.tick("b")
    c.deliver()
    assert applied_data(c, "c")[-2:] == [b"x", b"y"]
