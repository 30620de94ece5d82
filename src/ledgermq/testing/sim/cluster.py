"""A group of sans-I/O Raft nodes with in-memory disks, driven by hand or by the simulator.

``Cluster`` is the driver of DESIGN principle 2 for tests: it persists each Ready (snapshot,
entries, then hard state), then puts its messages in ``outbox``, then applies the snapshot
and the committed entries to a per-node list (the "state machine"), then advances. Crashes
lose everything that was not persisted; a restarted node is rebuilt from its
``MemoryStorage`` alone (its state machine from the stored snapshot).

The state machine of node ``n`` is ``applied[n]``: every applied entry, index 1 first. A
snapshot of it is that list encoded with ``encode_state`` (so a restored node can be
compared entry by entry with the others). ``snapshot(n)`` takes one and compacts.

``ids`` are all the nodes that run; ``voters`` (default: all of them) is the bootstrap
configuration. Nodes outside it start with no configuration and learn it from the log
once a leader adds them (``propose_config_change``).

For transcript-style unit tests, ``deliver()`` routes the outbox synchronously, honouring
``cut`` links, until the cluster is quiet.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from ledgermq.dledger.core import (
    Config,
    Entry,
    MemoryStorage,
    Message,
    RaftNode,
    ReadState,
    Role,
    Snapshot,
)
from ledgermq.testing.checkers.raft import RaftChecker

_ENTRY = struct.Struct(">QQBI")


def encode_state(entries: list[Entry]) -> bytes:
    return b"".join(_ENTRY.pack(e.index, e.term, e.kind, len(e.data)) + e.data for e in entries)


def decode_state(data: bytes) -> list[Entry]:
    out = []
    pos = 0
    while pos < len(data):
        index, term, kind, n = _ENTRY.unpack_from(data, pos)
        pos += _ENTRY.size
        out.append(Entry(index, term, bytes(data[pos : pos + n]), kind))
        pos += n
    return out


class Cluster:
    def __init__(
        self,
        ids: list[str],
        config: Config | None = None,
        seed: int = 0,
        checker: RaftChecker | None = None,
        voters: list[str] | None = None,
    ) -> None:
        self.ids = list(ids)
        self.voters = list(ids if voters is None else voters)
        self.config = config or Config()
        self.rng = random.Random(seed)
        self.checker = checker
        self.storages = {i: MemoryStorage() for i in ids}
        self.nodes: dict[str, RaftNode | None] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.reads: dict[str, list[ReadState]] = {i: [] for i in ids}
        self.outbox: list[Message] = []
        self.cut: set[tuple[str, str]] = set()  # (src, dst) links that drop everything
        self.installs = 0  # snapshots received from a leader and installed
        for i in ids:
            self.start(i)

    # ---- lifecycle -----------------------------------------------------------------

    def start(self, nid: str) -> RaftNode:
        storage = self.storages[nid]
        node = RaftNode(
            nid,
            self.voters if nid in self.voters else [],
            storage,
            self.config,
            random.Random(self.rng.getrandbits(64)),
        )
        self.nodes[nid] = node
        # the state machine is volatile: it restarts from the stored snapshot
        snap = storage.snapshot()
        self.applied[nid] = decode_state(snap.data) if snap is not None else []
        assert len(self.applied[nid]) == node.log.applied
        return node

    def crash(self, nid: str, persist_entries: int = 0, persist_hard_state: bool = False):
        """Kill ``nid`` in the middle of writing its pending Ready: only the first
        ``persist_entries`` entries (and the hard state, if asked and every entry made
        it) reach the disk; a pending snapshot (written first) does if anything does; of
        that Ready's messages only those a driver may send before persisting
        (``Ready.early``: a leader's appends) went out."""
        node = self.nodes[nid]
        assert node is not None, f"{nid} is already down"
        if node.has_ready():
            rd = node.ready()
            self.outbox.extend(rd.messages[: rd.early])
            k = min(persist_entries, len(rd.entries))
            if rd.snapshot is not None and (k > 0 or persist_hard_state):
                self._persist_snapshot(nid, rd.snapshot)
            elif rd.snapshot is not None:
                k = 0
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
        if rd.snapshot is not None:
            self._persist_snapshot(nid, rd.snapshot)
        self._persist(nid, rd.entries)
        if rd.hard_state is not None:
            self.storages[nid].set_hard_state(rd.hard_state)
        self.outbox.extend(rd.messages)
        for rs in rd.read_states:
            self.reads[nid].append(rs)
            if self.checker:
                self.checker.on_read_state(nid, node, rs.ctx, rs.index, rs.ok)
        if rd.snapshot is not None:
            self.installs += 1
            try:
                self.applied[nid] = decode_state(rd.snapshot.data)
            except (struct.error, ValueError) as e:
                if self.checker is None:
                    raise
                self.checker.fail(f"snapshot safety: {nid} got an undecodable snapshot: {e}")
            if self.checker:
                self.checker.on_state(nid, "installed", rd.snapshot.meta, self.applied[nid])
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

    def snapshot(self, nid: str, compact_to: int | None = None) -> int:
        """Snapshot ``nid``'s state machine at its applied index and compact its stored
        log up to ``compact_to`` (default: the snapshot index; never beyond it). Returns
        the snapshot index (0 when there was nothing to snapshot)."""
        node = self.node(nid)
        if node.log.snapshot is not None or node.log.applied == 0:
            return 0  # a received snapshot is not installed yet, or nothing applied
        meta = node.snapshot_meta()
        state = self.applied[nid]
        assert len(state) == meta.index, "the state machine is at the applied index"
        storage = self.storages[nid]
        if meta.index > storage.snapshot_meta().index:
            if self.checker:
                self.checker.on_state(nid, "snapshotted", meta, state)
            storage.create_snapshot(Snapshot(meta, encode_state(state)))
        upto = storage.snapshot_meta().index
        storage.compact(upto if compact_to is None else min(compact_to, upto))
        return meta.index

    def _persist_snapshot(self, nid: str, snap: Snapshot) -> None:
        storage = self.storages[nid]
        dropped = storage.entries_from(storage.first_index())
        storage.apply_snapshot(snap)
        if self.checker:
            self.checker.on_snapshot_persist(nid, snap.meta, dropped)

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
        self,
        drop: Callable[[Message], bool] | None = None,
        max_rounds: int = 1000,
        rewrite: Callable[[Message], Message] | None = None,
    ) -> list[Message]:
        """Process readies and route messages until quiet; returns what was delivered.
        ``drop`` loses messages, ``rewrite`` changes them on the way (e.g. corrupts)."""
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
                if rewrite is not None:
                    m = rewrite(m)
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
