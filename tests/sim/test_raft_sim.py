"""Seed sweeps of the deterministic Raft simulator (DESIGN principle 5).

CI runs ``LEDGERMQ_SIM_SEEDS`` seeds (default 500) of ``LEDGERMQ_SIM_STEPS`` steps
(default 2000) starting at ``LEDGERMQ_SIM_SEED_START`` (default 0); a long sweep is e.g.
``LEDGERMQ_SIM_SEEDS=10000 pytest tests/sim``. A failing seed is named in the failure
together with the events that led to it, and ``Simulation(seed).run(steps)`` replays it.
"""

import os
from collections import Counter

import pytest

from ledgermq.dledger.core import log as raft_log
from ledgermq.testing.sim import Simulation, SimulationFailure

SEEDS = int(os.environ.get("LEDGERMQ_SIM_SEEDS", "500"))
STEPS = int(os.environ.get("LEDGERMQ_SIM_STEPS", "2000"))
START = int(os.environ.get("LEDGERMQ_SIM_SEED_START", "0"))
CHUNK = 50


def run_seeds(seeds, steps=STEPS):
    for seed in seeds:
        try:
            yield Simulation(seed).run(steps)
        except SimulationFailure as e:
            pytest.fail(
                f"simulation seed {seed} failed ({steps} steps); replay with "
                f"Simulation({seed}).run({steps})\n{e}",
                pytrace=False,
            )


@pytest.mark.parametrize("first", range(START, START + SEEDS, CHUNK))
def test_seed_sweep_keeps_raft_safe_and_live(first):
    results = list(run_seeds(range(first, min(first + CHUNK, START + SEEDS))))
    assert sum(r.committed for r in results) > 0
    for r in results:
        assert r.checks >= STEPS, "the checker ran after every step"
        assert r.liveness_ticks > 0


def test_one_seed_replays_identically():
    a = Simulation(1234)
    b = Simulation(1234)
    ra, rb = a.run(1500), b.run(1500)
    assert ra.trace == rb.trace
    assert len(ra.trace) > 50
    for nid in a.ids:
        assert a.cluster.node(nid).log.entries == b.cluster.node(nid).log.entries
        assert a.cluster.applied[nid] == b.cluster.applied[nid]
    assert Simulation(1235).run(1500).trace != ra.trace


def test_the_sweep_exercises_every_fault_and_real_progress():
    events = Counter()
    committed = 0
    leaders = 0
    for r in run_seeds(range(100), steps=1000):
        events.update(ev[1] for ev in r.trace)
        committed += r.committed
        leaders += sum(1 for ev in r.trace if ev[1] == "leader")
    for kind in (
        "partition",
        "cut",
        "isolate",
        "heal-net",
        "crash",
        "restart",
        "pause",
        "resume",
        "lossy",
        "slow-disk",
        "propose",
        "live",
        "transfer",
        "bridge",
        "ring",
    ):
        assert events[kind] > 0, f"no {kind} event in 100 seeds"
    assert committed > 100 * 20, "entries commit despite the faults"
    assert leaders > 200, "leadership changes hands"


def test_leadership_transfers_in_the_sweep_usually_land_on_the_target():
    asked = landed = 0
    for r in run_seeds(range(100), steps=1000):
        for k, ev in enumerate(r.trace):
            if ev[1] != "transfer":
                continue
            asked += 1
            soon = [e for e in r.trace[k + 1 :] if e[0] <= ev[0] + 30 and e[1] == "leader"]
            landed += any(e[2] == ev[3] for e in soon)
    assert asked > 50 and landed > asked // 3, (asked, landed)


def test_a_partial_crash_mid_write_is_part_of_the_sweep():
    crashes = [ev for r in run_seeds(range(60), steps=1000) for ev in r.trace if ev[1] == "crash"]
    assert any(ev[3] == 0 for ev in crashes)


def test_the_checker_catches_a_node_that_votes_for_stale_logs(monkeypatch):
    """Mutation check: break the voting rule and the sweep must notice, naming the seed."""
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, i, t: True)
    for seed in range(200):
        try:
            Simulation(seed).run(1000)
        except SimulationFailure as e:
            assert f"seed={seed}" in str(e)
            assert "invariant broken" in str(e)
            return
    pytest.fail("200 seeds with a broken vote rule passed: the checker has no teeth")


def test_the_checker_catches_appends_without_the_previous_entry_check(monkeypatch):
    monkeypatch.setattr(raft_log.RaftLog, "matches", lambda self, i, t: self.term(i) is not None)
    for seed in range(300):
        try:
            Simulation(seed).run(1000)
        except SimulationFailure:
            return
    pytest.fail("300 seeds without log matching passed: the checker has no teeth")


def test_five_node_groups_survive_stormy_runs():
    for seed in range(40):
        try:
            r = Simulation(seed, nodes=5, fault_rate=0.1).run(1500)
        except SimulationFailure as e:
            pytest.fail(f"seed {seed}: {e}", pytrace=False)
        assert r.nodes == 5


def test_the_checker_catches_reads_served_without_confirming_leadership(monkeypatch):
    from ledgermq.dledger.core import ReadState, Role
    from ledgermq.dledger.core import node as raft_node

    def unconfirmed_read(self, ctx):
        if self.role is not Role.LEADER:
            return "not leader"
        self.read_states.append(ReadState(ctx, self.log.commit))
        return None

    monkeypatch.setattr(raft_node.RaftNode, "read_index", unconfirmed_read)
    for seed in range(300):
        try:
            Simulation(seed).run(1000)
        except SimulationFailure as e:
            assert "linearizability" in str(e)
            return
    pytest.fail("300 seeds of stale reads passed: the read check has no teeth")


def test_reads_are_confirmed_in_the_sweep():
    results = list(run_seeds(range(20), steps=1000))
    assert sum(r.reads_ok for r in results) > 100


def test_a_seed_replays_identically_in_another_process_with_another_hash_seed():
    import subprocess
    import sys

    script = (
        "import hashlib\n"
        "from ledgermq.testing.sim import Simulation\n"
        "r = Simulation(77).run(1000)\n"
        "print(hashlib.sha256(repr(r.trace).encode()).hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(h)},
        ).stdout
        for h in (1, 2)
    }
    assert len(digests) == 1


def test_the_sweep_compacts_installs_snapshots_and_changes_membership():
    events = Counter()
    installs = 0
    for r in run_seeds(range(100), steps=1000):
        events.update(ev[1] for ev in r.trace)
        events.update(f"conf-{ev[4]}" for ev in r.trace if ev[1] == "conf")
        installs += r.installs
    for kind in ("snapshot", "corrupt", "conf", "conf-add-learner", "conf-promote"):
        assert events[kind] > 5, f"too few {kind} events in 100 seeds: {events[kind]}"
    assert events["conf-remove"] > 5 and events["conf-add-voter"] > 0
    assert installs > 20, "lagging followers are caught up with snapshots"


def test_the_checker_catches_a_snapshot_installed_without_its_checksum(monkeypatch):
    from ledgermq.dledger.core import node as raft_node

    monkeypatch.setattr(raft_node.RaftNode, "_verify_snapshot", staticmethod(lambda rx, m: True))
    for seed in range(300):
        try:
            Simulation(seed, snapshot_rate=0.05, fault_rate=0.1).run(1000)
        except SimulationFailure as e:
            assert "snapshot" in str(e)
            return
    pytest.fail("300 seeds installing corrupted snapshots passed: the checker has no teeth")
