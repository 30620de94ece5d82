"""Transcripts of membership changes: learners, single-server voter changes through
ENTRY_CONFIG entries that take effect when appended, the one-change-at-a-time rule, a
removed leader stepping down, and recovery of the configuration after a restart.
"""

from ledgermq.dledger.core import (
    ENTRY_CONFIG,
    ENTRY_NOOP,
    ConfChangeType,
    Config,
    ConfigChange,
    ConfState,
    ErrorCode,
    MsgType,
    ProposeError,
    Role,
    decode_config,
)
from ledgermq.testing.checkers.raft import RaftChecker
from ledgermq.testing.sim import Cluster

CFG = Config(election_ticks=10, heartbeat_ticks=1)
ADD_LEARNER, PROMOTE, ADD_VOTER, REMOVE = (
    ConfChangeType.ADD_LEARNER,
    ConfChangeType.PROMOTE,
    ConfChangeType.ADD_VOTER,
    ConfChangeType.REMOVE,
)


def cluster(ids="abcd", voters="abc", config=CFG, seed=7):
    ids = list(ids)
    return Cluster(ids, config, seed=seed, checker=RaftChecker(ids), voters=list(voters))


def data(c, nid):
    return [e.data for e in c.applied[nid] if e.kind not in (ENTRY_NOOP, ENTRY_CONFIG)]


def settle(c, *ids, rounds=12):
    for _ in range(rounds):  # appends lost in a cut age out after an election timeout
        c.tick(*ids)
        c.deliver()


def change(c, at, type, nid):
    res = c.node(at).propose_config_change(ConfigChange(type, nid, address=f"{nid}:40911"))
    assert isinstance(res, int), res
    c.deliver()
    c.tick(at)
    c.deliver()
    return res


def test_a_new_node_joins_as_a_learner_catches_up_and_is_promoted():
    c = cluster()
    c.elect("a")
    assert c.node("d").conf == ConfState(), "d starts outside any configuration"
    c.node("a").propose(b"x")
    c.deliver()
    index = change(c, "a", ADD_LEARNER, "d")
    assert index == 3
    for n in "abcd":
        assert c.node(n).conf == ConfState(("a", "b", "c"), ("d",))
    assert data(c, "d") == [b"x"], "the learner replicates"
    entry = c.node("a").log.entry(3)
    assert entry.kind == ENTRY_CONFIG
    cc, conf = decode_config(entry.data)
    assert (cc.type, cc.node_id, cc.address) == (ADD_LEARNER, "d", "d:40911")
    assert conf == ConfState(("a", "b", "c"), ("d",)), "the entry holds the whole config"
    change(c, "a", PROMOTE, "d")
    assert all(c.node(n).conf == ConfState(("a", "b", "c", "d")) for n in "abcd")
    assert c.node("a").quorum == 3


def test_the_driver_hears_about_each_configuration_in_ready():
    c = cluster()
    c.elect("a")
    c.node("a").propose_config_change(ConfigChange(ADD_LEARNER, "d"))
    rd = c.node("a").ready()
    assert rd.conf_state == ConfState(("a", "b", "c"), ("d",)), "at append, before commit"
    assert [m.dst for m in rd.messages if m.type is MsgType.APPEND] == ["b", "c", "d"]
    c.node("a").advance(rd)
    assert c.node("a").ready().conf_state is None, "reported once"


def test_a_learner_never_counts_toward_the_quorum_and_never_campaigns():
    c = cluster(ids="abc", voters="ab")
    c.elect("a")
    change(c, "a", ADD_LEARNER, "c")
    c.isolate("b")
    index = c.node("a").propose(b"x")
    c.deliver()
    assert c.node("c").log.last_index() == index, "the learner has the entry"
    assert c.node("a").commit < index, "a and learner c are not a quorum of {a, b}"
    c.isolate("a")
    for _ in range(50):
        c.tick("c")
        c.deliver()
    assert c.node("c").role is Role.FOLLOWER and c.node("c").term == 1


def test_only_one_configuration_change_may_be_uncommitted():
    c = cluster()
    c.elect("a")
    c.isolate("b")
    c.isolate("c")
    assert c.node("a").propose_config_change(ConfigChange(ADD_LEARNER, "d")) == 2
    res = c.node("a").propose_config_change(ConfigChange(PROMOTE, "d"))
    assert isinstance(res, ProposeError) and res.code is ErrorCode.LEADER_NOT_READY
    assert "not committed" in res.message
    c.heal()
    c.deliver()
    assert isinstance(c.node("a").propose_config_change(ConfigChange(PROMOTE, "d")), int)


def test_a_new_leader_changes_nothing_before_it_commits_an_entry_of_its_term():
    c = cluster()
    c.elect("a")
    c.node("b").campaign(transfer=True)
    c.deliver(drop=lambda m: m.type is MsgType.APPEND)
    assert c.node("b").role is Role.LEADER and c.node("b").commit == 1
    res = c.node("b").propose_config_change(ConfigChange(ADD_LEARNER, "d"))
    assert isinstance(res, ProposeError) and res.code is ErrorCode.LEADER_NOT_READY


def test_changes_that_make_no_sense_are_refused():
    c = cluster()
    c.elect("a")
    for cc in (
        ConfigChange(ADD_LEARNER, "b"),
        ConfigChange(PROMOTE, "d"),
        ConfigChange(REMOVE, "d"),
        ConfigChange(ADD_VOTER, "a"),
    ):
        res = c.node("a").propose_config_change(cc)
        assert isinstance(res, ProposeError) and res.code is ErrorCode.ILLEGAL_MEMBER_STATE, cc
    solo = cluster(ids="a", voters="a")
    solo.elect("a")
    res = solo.node("a").propose_config_change(ConfigChange(REMOVE, "a"))
    assert isinstance(res, ProposeError) and "last voter" in res.message
    res = c.node("a").transfer_leadership("d")
    assert isinstance(res, ProposeError) and res.code is ErrorCode.UNKNOWN_MEMBER


def test_adding_a_voter_directly_raises_the_quorum_at_once():
    c = cluster()
    c.elect("a")
    c.isolate("d")  # d is added but cannot answer
    c.node("a").propose_config_change(ConfigChange(ADD_VOTER, "d"))
    c.deliver()
    assert c.node("a").commit == 2, "3 of the new 4 voters have it"
    c.isolate("c")
    index = c.node("a").propose(b"x")
    c.deliver()
    assert c.node("a").commit < index, "a and b are not 3 of 4"
    c.heal()
    for _ in range(12):
        c.tick("a")
        c.deliver()
    assert c.node("a").commit >= index and data(c, "d") == [b"x"]


def test_a_removed_voter_gets_no_more_entries_and_the_rest_commit_without_it():
    c = cluster(ids="abc", voters="abc")
    c.elect("a")
    change(c, "a", REMOVE, "c")
    assert c.node("a").conf.voters == ("a", "b") and "c" not in c.node("a").progress
    c.isolate("b")
    index = c.node("a").propose(b"x")
    c.deliver()
    assert c.node("a").commit < index, "a alone is not a quorum of {a, b}"
    c.heal()
    settle(c, "a", "b")
    assert c.node("a").commit == index
    assert data(c, "c") == [], "c hears nothing after its removal"
    # c never saw the entry that removed it, so it still believes it votes; when it
    # campaigns, its pre-votes go unanswered (a and b have a live leader) and its term
    # does not climb (Raft dissertation 4.2.3)
    assert c.node("c").promotable()
    for _ in range(60):
        c.tick()
        c.deliver()
    assert c.leaders() == ["a"] and c.node("a").term == 1 and c.node("c").term == 1


def test_a_removed_leader_leads_until_the_change_commits_then_steps_down():
    c = cluster(ids="abc", voters="abc")
    c.elect("a")
    c.isolate("b")
    c.isolate("c")
    c.node("a").propose_config_change(ConfigChange(REMOVE, "a"))
    c.deliver()
    a = c.node("a")
    assert a.role is Role.LEADER and a.conf.voters == ("b", "c")
    assert a.commit == 1, "the leader no longer counts itself"
    c.heal()
    for _ in range(12):
        c.tick("a")
        c.deliver()
        if a.role is not Role.LEADER:
            break
    assert a.role is Role.FOLLOWER and a.commit == 2
    assert len(c.leaders()) == 1 and c.leaders()[0] in "bc", "the heir took over at once"
    new = c.node(c.leaders()[0])
    assert new.term == 2
    new.propose(b"after")
    c.deliver()
    c.tick(new.id)
    c.deliver()
    assert data(c, "b") == data(c, "c") == [b"after"]
    for _ in range(60):
        c.tick("a")
        c.deliver()
    assert c.node("a").role is Role.FOLLOWER


def test_an_uncommitted_configuration_is_undone_when_its_entry_is_cut():
    c = cluster(ids="abcdef", voters="abcde")
    c.elect("a")
    c.isolate("a")
    c.cut.discard(("a", "b"))  # only b hears a
    c.node("a").propose_config_change(ConfigChange(ADD_LEARNER, "f"))
    c.deliver()
    assert c.node("b").conf.learners == ("f",), "b took the change on append"
    c.heal()
    c.isolate("a")
    c.elect("c", force=True)  # c (without the change) wins with the votes of d and e
    assert c.leaders() == ["a", "c"] and c.node("c").term == 2
    settle(c, "c")
    assert c.node("b").conf == ConfState(tuple("abcde")), "b cut the entry and undid it"
    assert c.node("b").log.entry(2).kind == ENTRY_NOOP


def test_a_restarted_node_recovers_its_configuration_from_the_log_and_the_snapshot():
    c = cluster()
    c.elect("a")
    change(c, "a", ADD_LEARNER, "d")
    change(c, "a", PROMOTE, "d")
    c.crash("d")
    assert c.restart("d").conf == ConfState(("a", "b", "c", "d"))
    assert c.node("d").promotable()
    change(c, "a", REMOVE, "b")
    for _ in range(3):
        c.tick("a")
        c.deliver()
    c.snapshot("c")
    assert c.storages["c"].snapshot_meta().conf == ConfState(("a", "c", "d"))
    assert c.storages["c"].config_entries() == []
    c.crash("c")
    assert c.restart("c").conf == ConfState(("a", "c", "d"))


def test_a_snapshot_carries_the_configuration_to_a_new_node():
    c = cluster()
    c.elect("a")
    c.isolate("d")
    change(c, "a", ADD_LEARNER, "d")
    for i in range(5):
        c.node("a").propose(b"%d" % i)
    c.deliver()
    c.snapshot("a")
    c.heal()
    for _ in range(15):
        c.tick("a")
        c.deliver()
    assert c.storages["d"].snapshot_meta().index == 7
    assert c.node("d").conf == ConfState(("a", "b", "c"), ("d",))
    assert data(c, "d") == [b"%d" % i for i in range(5)]


def test_proposals_are_refused_once_too_many_wait_for_commit():
    c = cluster(ids="abc", voters="abc", config=Config(election_ticks=10, max_pending_proposals=5))
    c.elect("a")
    c.isolate("a")
    results = [c.node("a").propose(b"%d" % i) for i in range(6)]
    assert results[:5] == [2, 3, 4, 5, 6]
    err = results[5]
    assert isinstance(err, ProposeError) and err.code is ErrorCode.LEADER_PENDING_FULL
    assert int(err.code) == 503 and err.leader_id == "a"
    assert isinstance(
        c.node("a").propose_config_change(ConfigChange(ADD_LEARNER, "x")), ProposeError
    )
    c.heal()
    c.deliver()
    assert c.node("a").propose(b"again") == 7
