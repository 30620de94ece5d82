"""Deterministic simulation of one Raft group: everything follows from one seed.

One step = one tick of virtual time. In each step the simulator may inject a fault or
heal one, may have the client propose a value at a node that believes it leads, ticks
every running node, delivers the messages that are due, and lets each node's "disk"
finish its pending Ready with some probability (so crashes can catch unpersisted work).
The checker runs after every step.

Faults: message loss, duplication and delay (reordering follows from random delays);
symmetric partitions, one-way link cuts, isolating one node, a bridge (two halves that
only one node can reach) and a ring; pausing a node (its inbound messages wait in a
bounded buffer, its timers stop); crash in the middle of a write (a random prefix of the
pending entries, and maybe the hard state, reaches the disk; no message of that Ready is
sent) and restart from what was persisted; slow disks (Readies finish late); corrupted
snapshot chunks (a flipped byte: the receiver's crc32 check must refuse them). The client
proposes values, asks random nodes for ReadIndex reads and asks leaders to transfer
leadership. Principle 2's order is modelled by ``Cluster.process_ready``.

Per seed, the simulator may also make nodes take snapshots of their state machines and
compact their logs (up to the applied index, up to ``compactable_index()`` or keeping a
few entries), so lagging and restarted followers are caught up with chunked snapshots;
and it may run spare nodes outside the initial configuration and change membership at
random (add a learner, promote it, add a voter directly, remove a voter or a learner,
including the leader itself), one change at a time.

``run(steps)`` runs ``steps`` steps of chaos, then heals everything (network, crashed and
paused nodes, slow disks) and requires that within ``liveness_timeouts`` election timeouts
a leader exists and a fresh proposal commits. It returns a ``SimResult`` whose ``trace``
is the sequence of events; one seed always yields the same trace.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from dataclasses import dataclass, field

from ledgermq.dledger.core import ConfChangeType, Config, ConfigChange, Message, MsgType, Role
from ledgermq.testing.checkers.raft import RaftChecker, RaftInvariantError

from .cluster import Cluster


class SimulationFailure(AssertionError):
    pass


@dataclass
class SimResult:
    seed: int
    nodes: int
    trace: list[tuple] = field(default_factory=list)
    proposals: int = 0
    reads: int = 0
    reads_ok: int = 0
    committed: int = 0
    max_term: int = 0
    liveness_ticks: int = 0
    checks: int = 0
    snapshots: int = 0  # snapshots taken (and logs compacted)
    installs: int = 0  # snapshots received and installed
    conf_changes: int = 0  # membership changes appended


class Network:
    """In-flight messages ordered by (delivery time, sequence number)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.queue: list[tuple[int, int, Message]] = []
        self.seq = 0
        self.cut: set[tuple[str, str]] = set()
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.max_delay = 3
        self.corrupt_rate = 0.0  # chance that a snapshot chunk arrives with a flipped byte

    def send(self, now: int, m: Message) -> None:
        if (m.src, m.dst) in self.cut or self.rng.random() < self.drop_rate:
            return
        if (
            m.type is MsgType.INSTALL_SNAPSHOT
            and m.data
            and self.corrupt_rate
            and self.rng.random() < self.corrupt_rate
        ):
            k = self.rng.randrange(len(m.data))
            bad = bytearray(m.data)
            bad[k] ^= 1 << self.rng.randrange(8)
            m = dataclasses.replace(m, data=bytes(bad))
        copies = 2 if self.rng.random() < self.dup_rate else 1
        for _ in range(copies):
            self.seq += 1
            delay = self.rng.randint(1, self.max_delay)
            heapq.heappush(self.queue, (now + delay, self.seq, m))

    def due(self, now: int) -> list[Message]:
        out = []
        while self.queue and self.queue[0][0] <= now:
            out.append(heapq.heappop(self.queue)[2])
        return out

    def heal(self) -> None:
        self.cut.clear()
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.max_delay = 3
        self.corrupt_rate = 0.0


class Simulation:
    def __init__(
        self,
        seed: int,
        nodes: int | None = None,
        config: Config | None = None,
        fault_rate: float | None = None,
        propose_rate: float = 0.2,
        read_rate: float = 0.1,
        transfer_rate: float = 0.005,
        liveness_timeouts: int = 6,
        snapshot_rate: float | None = None,
        membership_rate: float | None = None,
        spares: int | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        n = nodes if nodes is not None else self.rng.choice((3, 3, 5))
        # by default half the seeds snapshot and compact, a third change membership
        self.snapshot_rate = (
            snapshot_rate if snapshot_rate is not None else self.rng.choice((0.0, 0.0, 0.01, 0.04))
        )
        self.membership_rate = (
            membership_rate
            if membership_rate is not None
            else (0.01 if self.rng.random() < 1 / 3 else 0.0)
        )
        if spares is None:
            spares = self.rng.choice((1, 2)) if self.membership_rate else 0
        voters = [f"n{i}" for i in range(n)]
        self.ids = [f"n{i}" for i in range(n + spares)]
        if config is None:
            # a third of the seeds run DLedger's preferred-leader hand-over to n0
            preferred = "n0" if self.rng.random() < 1 / 3 else None
            config = Config(
                election_ticks=10,
                heartbeat_ticks=3,
                preferred_leader=preferred,
                snapshot_chunk_bytes=self.rng.choice((256, 2048, 1 << 16)),
                max_snapshot_inflight=8,
                max_cache_bytes=self.rng.choice((0, 512, 1 << 20)),
            )
        self.config = config
        self.checker = RaftChecker(self.ids)
        self.cluster = Cluster(
            self.ids, self.config, self.rng.getrandbits(64), self.checker, voters=voters
        )
        self.net = Network(random.Random(self.rng.getrandbits(64)))
        # chance of a fault event per step; by default each seed picks a calm, a normal
        # or a stormy run
        self.fault_rate = (
            fault_rate if fault_rate is not None else self.rng.choice((0.01, 0.03, 0.08))
        )
        self.propose_rate = propose_rate
        self.read_rate = read_rate
        self.transfer_rate = transfer_rate
        self._next_read = 0
        self.liveness_timeouts = liveness_timeouts
        self.paused: set[str] = set()
        self.held: dict[str, list[Message]] = {}  # messages waiting for a paused node
        self.held_limit = 256
        self.disk_rate = 1.0  # chance that a node finishes its pending Ready this step
        self.now = 0
        self.result = SimResult(seed, n)
        self._next_value = 0
        self._leaders: dict[str, int] = {}

    # ---- events --------------------------------------------------------------------

    def _event(self, *ev) -> None:
        self.result.trace.append((self.now, *ev))

    def _inject_fault(self) -> None:
        r = self.rng
        kind = r.choice(
            (
                "partition",
                "asymmetric",
                "isolate",
                "bridge",
                "ring",
                "heal",
                "crash",
                "restart",
                "pause",
                "resume",
                "lossy",
                "slow_disk",
                "heal",
                "corrupt",
            )
        )
        ids = self.ids
        if kind == "partition":
            side = set(r.sample(ids, r.randint(1, len(ids) - 1)))
            self.net.cut = {(a, b) for a in ids for b in ids if (a in side) != (b in side)}
            self._event("partition", tuple(sorted(side)))
        elif kind == "asymmetric":
            a, b = r.sample(ids, 2)
            self.net.cut.add((a, b))
            self._event("cut", a, b)
        elif kind == "isolate":
            a = r.choice(ids)
            self.net.cut = {(x, y) for x in ids for y in ids if x != y and a in (x, y)}
            self._event("isolate", a)
        elif kind == "bridge":
            # two sides that only one node (the bridge) can talk to
            order = r.sample(ids, len(ids))
            bridge, rest = order[0], order[1:]
            left = set(rest[: len(rest) // 2])
            self.net.cut = {
                (a, b) for a in rest for b in rest if a != b and (a in left) != (b in left)
            }
            self._event("bridge", bridge, tuple(sorted(left)))
        elif kind == "ring":
            # each node reaches only its two neighbours in a random ring
            order = r.sample(ids, len(ids))
            near = {
                (order[k], order[(k + d) % len(order)]) for k in range(len(order)) for d in (1, -1)
            }
            self.net.cut = {(a, b) for a in ids for b in ids if a != b and (a, b) not in near}
            self._event("ring", tuple(order))
        elif kind == "heal":
            self.net.heal()
            self.disk_rate = 1.0
            self._event("heal-net")
        elif kind == "crash":
            up = [i for i in ids if self.cluster.nodes[i] is not None]
            if up:
                a = r.choice(up)
                pending = self.cluster.nodes[a].log.unstable_entries()
                k = r.randint(0, len(pending))
                self.cluster.crash(a, persist_entries=k, persist_hard_state=r.random() < 0.5)
                self.paused.discard(a)
                self.held.pop(a, None)
                self._event("crash", a, k)
        elif kind == "restart":
            down = [i for i in ids if self.cluster.nodes[i] is None]
            if down:
                a = r.choice(down)
                self.cluster.restart(a)
                self._event("restart", a)
        elif kind == "pause":
            up = [i for i in ids if self.cluster.nodes[i] is not None]
            if up:
                a = r.choice(up)
                self.paused.add(a)
                self._event("pause", a)
        elif kind == "resume":
            if self.paused:
                a = r.choice(sorted(self.paused))
                self.paused.discard(a)
                self._event("resume", a)
        elif kind == "lossy":
            self.net.drop_rate = r.choice((0.0, 0.05, 0.2))
            self.net.dup_rate = r.choice((0.0, 0.05, 0.2))
            self.net.max_delay = r.choice((2, 3, 6))
            self._event("lossy", self.net.drop_rate, self.net.dup_rate, self.net.max_delay)
        elif kind == "slow_disk":
            self.disk_rate = r.choice((0.3, 0.6))
            self._event("slow-disk", self.disk_rate)
        elif kind == "corrupt":
            self.net.corrupt_rate = r.choice((0.05, 0.3))
            self._event("corrupt", self.net.corrupt_rate)

    def _heal_all(self) -> None:
        self.net.heal()
        self.disk_rate = 1.0
        self.paused.clear()
        for i in self.ids:
            if self.cluster.nodes[i] is None:
                self.cluster.restart(i)
        self._event("heal-all")

    def _acting_leaders(self) -> list[str]:
        """Running, unpaused nodes that believe they lead (several, in different terms)."""
        return [
            i
            for i in self.ids
            if i not in self.paused
            and self.cluster.nodes[i] is not None
            and self.cluster.nodes[i].role is Role.LEADER
        ]

    def _propose(self, value: bytes | None = None) -> tuple[str, int] | None:
        leaders = self._acting_leaders()
        if not leaders:
            return None
        at = self.rng.choice(leaders)
        if value is None:
            self._next_value += 1
            value = b"v%d" % self._next_value
        res = self.cluster.node(at).propose(value)
        if isinstance(res, int):
            self.result.proposals += 1
            self._event("propose", at, res, value)
            return at, res
        return None

    def _snapshot(self) -> None:
        """A running node snapshots its state machine and compacts its log: fully, up to
        what its followers have (``compactable_index``), or keeping a few entries."""
        up = [i for i in self.ids if self.cluster.nodes[i] is not None and i not in self.paused]
        if not up:
            return
        at = self.rng.choice(up)
        node = self.cluster.node(at)
        how = self.rng.choice(("applied", "compactable", "keep"))
        upto = {
            "applied": None,
            "compactable": node.compactable_index(),
            "keep": node.log.applied - 5,
        }[how]
        index = self.cluster.snapshot(at, upto)
        if index:
            self.result.snapshots += 1
            self._event("snapshot", at, index, self.cluster.storages[at].first_index() - 1)

    def _change_membership(self) -> None:
        leaders = self._acting_leaders()
        if not leaders:
            return
        at = self.rng.choice(leaders)
        node = self.cluster.node(at)
        conf = node.conf
        outside = [i for i in self.ids if i not in conf.voters and i not in conf.learners]
        options: list[ConfigChange] = []
        for i in outside:
            options.append(ConfigChange(ConfChangeType.ADD_LEARNER, i))
        if outside and self.rng.random() < 0.2:
            options.append(ConfigChange(ConfChangeType.ADD_VOTER, self.rng.choice(outside)))
        for i in conf.learners:
            options += [ConfigChange(ConfChangeType.PROMOTE, i)] * 2
            options.append(ConfigChange(ConfChangeType.REMOVE, i))
        if len(conf.voters) > 2:
            options += [ConfigChange(ConfChangeType.REMOVE, i) for i in conf.voters]
        if not options:
            return
        change = self.rng.choice(options)
        res = node.propose_config_change(change)
        if isinstance(res, int):
            self.result.conf_changes += 1
            self._event("conf", at, res, change.type.value, change.node_id)

    def _transfer(self) -> None:
        leaders = [
            i
            for i in self.ids
            if self.cluster.nodes[i] is not None and self.cluster.nodes[i].role is Role.LEADER
        ]
        if leaders:
            at = self.rng.choice(leaders)
            to = self.rng.choice([i for i in self.ids if i != at])
            self.cluster.node(at).transfer_leadership(to)
            self._event("transfer", at, to)

    def _read(self) -> None:
        """Ask a random running node for a ReadIndex; stale leaders must not answer."""
        up = [i for i in self.ids if self.cluster.nodes[i] is not None and i not in self.paused]
        if not up:
            return
        at = self.rng.choice(up)
        self._next_read += 1
        ctx = b"r%d" % self._next_read
        self.checker.on_read_issued(ctx)
        if self.cluster.node(at).read_index(ctx) is None:
            self.result.reads += 1

    # ---- the loop ------------------------------------------------------------------

    def step(self, chaos: bool) -> None:
        self.now += 1
        c = self.cluster
        if chaos:
            if self.rng.random() < self.fault_rate:
                self._inject_fault()
            if self.rng.random() < self.propose_rate:
                self._propose()
            if self.rng.random() < self.read_rate:
                self._read()
            if self.rng.random() < self.transfer_rate:
                self._transfer()
            if self.snapshot_rate and self.rng.random() < self.snapshot_rate:
                self._snapshot()
            if self.membership_rate and self.rng.random() < self.membership_rate:
                self._change_membership()
        for i in self.ids:
            if c.nodes[i] is not None and i not in self.paused:
                c.nodes[i].tick()
                held = self.held.pop(i, None)
                if held:
                    for m in held:
                        c.nodes[i].step(m)
        for m in self.net.due(self.now):
            target = c.nodes.get(m.dst)
            if target is None:
                continue  # the destination is down: the message is lost
            if m.dst in self.paused:
                # a paused process reads it later; its socket buffer is bounded
                box = self.held.setdefault(m.dst, [])
                if len(box) < self.held_limit:
                    box.append(m)
                continue
            target.step(m)
        for i in self.ids:
            if c.nodes[i] is None or i in self.paused:
                continue
            if self.disk_rate >= 1.0 or self.rng.random() < self.disk_rate:
                c.process_ready(i)
        for m in c.outbox:
            self.net.send(self.now, m)
        c.outbox.clear()
        c.check()
        for i in self.ids:
            n = c.nodes[i]
            if n is not None and n.role is Role.LEADER and self._leaders.get(i) != n.term:
                self._leaders[i] = n.term
                self._event("leader", i, n.term)

    def run(self, steps: int) -> SimResult:
        try:
            for _ in range(steps):
                self.step(chaos=True)
            self._heal_all()
            self._check_liveness()
        except RaftInvariantError as e:
            raise SimulationFailure(self._describe(f"invariant broken: {e}")) from e
        self.result.committed = self.checker.max_committed
        self.result.max_term = max(
            (n.term for n in self.cluster.nodes.values() if n is not None), default=0
        )
        self.result.checks = self.checker.checks
        self.result.installs = self.cluster.installs
        self.result.reads_ok = self.checker.reads_ok
        return self.result

    def _check_liveness(self) -> None:
        budget = self.liveness_timeouts * self.config.election_ticks * 2
        start = self.now
        pending: tuple[str, int] | None = None
        value = b"live-%d" % self.seed
        while self.now - start < budget:
            self.step(chaos=False)
            if pending is not None:
                at, index = pending
                node = self.cluster.nodes[at]
                if node is not None and node.log.commit >= index:
                    e = node.log.entry(index)
                    if e is not None and e.data == value:
                        self.result.liveness_ticks = self.now - start
                        self._event("live", at, index)
                        return
                if node is None or node.role is not Role.LEADER:
                    pending = None  # leadership moved: propose again at the new leader
            if pending is None:
                pending = self._propose(value)
        raise SimulationFailure(
            self._describe(
                f"liveness: no proposal committed within {self.liveness_timeouts} election "
                f"timeouts ({budget} ticks) after healing"
            )
        )

    def _describe(self, why: str) -> str:
        tail = "\n".join(repr(ev) for ev in self.result.trace[-25:])
        return (
            f"{why}\nseed={self.seed} nodes={len(self.ids)} at tick {self.now}; replay with "
            f"Simulation({self.seed}).run(...)\nlast events:\n{tail}"
        )
