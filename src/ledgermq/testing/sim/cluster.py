"""A group of sans-I/O Raft nodes with in-memory disks, driven by hand or by the simulator.

``Cluster`` is the driver of DESIGN principle 2 for tests: it persists each Ready (entries,
then hard state), then puts its messages in ``outbox``, then applies committed entries to a
per-node list (the "state machine"), then advances. Crashes lose everything that was not
persisted; a restarted node is rebuilt from its ``MemoryStorage`` alone.

For transcript-style unit tests, ``deliver()`` routes the outbox synchronously, honouring
``cut`` links, until the cluster is quiet.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ledgermq.dledger.core import (
    Config,
    Entry,
    MemoryStorage,
    Message,
    RaftNode,
    ReadState,
    Role,
)
from ledgermq.testing.checkers.raft import RaftChecker


class Cluster:
    def __init__(
        self,
        ids: list[str],
        config: Config | None = None,
        seed: int = 0,
        checker: RaftChecker | None = None,
    ) -> None:
        self.ids = list(ids)
        self.config = config or Config()
        self.rng = random.Random(seed)
        self.checker = checker
        self.storages = {i: MemoryStorage() for i in ids}
        self.nodes: dict[str, RaftNode | None] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.reads: dict[str, list[ReadState]] = {i: [] for i in ids}
        self.outbox: list[Message] = []
        self.cut: set[tuple[str, str]] = set()  # (src, dst) links that drop everything
        for i in ids:
            self.start(i)

    # ---- lifecycle -----------------------------------------------------------------

    def start(self, nid: str) -> RaftNode:
        node = RaftNode(
            nid,
            self.ids,
            self.storages[nid],
            self.config,
            random.Random(self.rng.getrandbits(64)),
        )
        self.nodes[nid] = node
        self.applied[nid] = []  # the state machine is volatile: it re-applies from 1
        return node

    def crash(self, nid: str, persist_entries: int = 0, persist_hard_state: bool = False):
        """Kill ``nid`` in the middle of writing its pending Ready: only the first
        ``persist_entries`` entries (and the hard state, if asked and every entry made
        it) reach the disk; no message of that Ready was sent."""
        node = self.nodes[nid]
        assert node is not None, f"{nid} is already down"
        if node.has_ready():
            rd = node.ready()
            k = min(persist_entries, len(rd.entries))
            self._persist(nid, rd.entries[:k])
            if k == len(rd.entries) and persist_hard_state and rd.hard_state is not None:
                self.storages[nid].set_hard_state(rd.hard_state)
        self.nodes[nid] = None

    def restart(self, nid: str) -> RaftNode:
        assert self.nodes[nid] is None, f"{nid} is running"
        return self.start(nid)

    # ---- driving -------------------------------------------------------------------

    def node(self, nid: str) -> RaftNode:
        n = self.nodes[nid]
        assert n is not None, f"{nid} is down"
        return n

    def process_ready(self, nid: str) -> None:
        node = self.nodes[nid]
        if node is None or not node.has_ready():
            return
        rd = node.ready()
        self._persist(nid, rd.entries)
        if rd.hard_state is not None:
            self.storages[nid].set_hard_state(rd.hard_state)
        self.outbox.extend(rd.messages)
        for rs in rd.read_states:
            self.reads[nid].append(rs)
            if self.checker:
                self.checker.on_read_state(nid, node, rs.ctx, rs.index, rs.ok)
        if rd.committed_entries:
            self.applied[nid].extend(rd.committed_entries)
            if self.checker:
                self.checker.on_apply(nid, rd.committed_entries)
        node.advance(rd)

    def process_all(self) -> None:
        for nid in self.ids:
            self.process_ready(nid)

    def check(self) -> None:
        if self.checker:
            self.checker.check_step(self.nodes, self.storages)

    def _persist(self, nid: str, entries: list[Entry]) -> None:
        if not entries:
            return
        storage = self.storages[nid]
        first = entries[0].index
        replaced = storage.entries_from(first) if self.checker else []
        storage.append(entries)
        if self.checker:
            self.checker.on_persist(nid, storage, entries, replaced)

    # ---- synchronous delivery for unit tests ----------------------------------------

    def deliver(
        self, drop: Callable[[Message], bool] | None = None, max_rounds: int = 1000
    ) -> list[Message]:
        """Process readies and route messages until quiet; returns what was delivered."""
        delivered: list[Message] = []
        for _ in range(max_rounds):
            self.process_all()
            self.check()
            if not self.outbox:
                return delivered
            batch, self.outbox = self.outbox, []
            for m in batch:
                if (m.src, m.dst) in self.cut or (drop is not None and drop(m)):
                    continue
                target = self.nodes.get(m.dst)
                if target is None:
                    continue
                delivered.append(m)
                target.step(m)
                self.check()
        raise AssertionError("cluster did not go quiet")

    def tick(self, *ids: str, times: int = 1) -> None:
        for _ in range(times):
            for nid in ids or self.ids:
                if self.nodes[nid] is not None:
                    self.node(nid).tick()

    def isolate(self, nid: str) -> None:
        for other in self.ids:
            if other != nid:
                self.cut.add((nid, other))
                self.cut.add((other, nid))

    def heal(self) -> None:
        self.cut.clear()

    def elect(self, nid: str, force: bool = False) -> RaftNode:
        """Make ``nid`` campaign now and deliver until quiet. ``force`` campaigns as on a
        TimeoutNow: no pre-vote, and voters ignore their lease on the current leader."""
        self.node(nid).campaign(transfer=force)
        self.deliver()
        return self.node(nid)

    def leaders(self) -> list[str]:
        return [i for i, n in self.nodes.items() if n is not None and n.role is Role.LEADER]

    def log_terms(self, nid: str) -> list[int]:
        return [e.term for e in self.node(nid).log.entries]
