"""Raft safety invariants, checked while a simulated cluster runs.

The checker only observes: the driver tells it what each node persisted and applied, and
``check_step`` looks at the nodes after every simulated step. A violation raises
``RaftInvariantError`` with a message that says which property broke and why it matters.

Properties (Raft paper, Figure 3, plus durability):
- election safety: at most one leader per term;
- log matching: two logs holding an entry with the same index and term hold the same
  data there and agree on the previous entry's term (by induction: identical prefixes);
- leader completeness: a leader of term T holds every entry committed in a term <= T;
- state-machine safety: no two nodes apply different entries at one index;
- committed entries are durable on a quorum (of the committing leader's voters) when first
  seen committed and are never overwritten or cut from any node's persisted log
  afterwards, except by compaction or a snapshot that covers them;
- snapshot safety: every snapshot taken or installed holds exactly the committed entries
  up to its index, in order (the simulated state machine is the list of applied entries);
- per node, while it is up: term and commit index never go backwards;
- ReadIndex linearizability: a read point confirmed by a leader is at least the highest
  index committed anywhere when the read was asked for.
"""

from __future__ import annotations

from ledgermq.dledger.core import Entry, MemoryStorage, RaftNode, Role, SnapshotMeta


class RaftInvariantError(AssertionError):
    pass


class RaftChecker:
    def __init__(self, ids: list[str]) -> None:
        self.ids = list(ids)
        self.quorum = len(ids) // 2 + 1
        self.leader_of_term: dict[int, str] = {}
        # (index, term) -> (data, kind, previous entry's term) as first persisted anywhere
        self.known: dict[tuple[int, int], tuple[bytes, int, int]] = {}
        # index -> committed entry; commit_term[index] = term of the first node seen
        # committing it (that node is the leader that committed it)
        self.committed: dict[int, Entry] = {}
        self.commit_term: dict[int, int] = {}
        self.max_committed = 0
        self.applied: dict[int, Entry] = {}
        self._seen: dict[str, tuple[Role, int, int]] = {}
        self.read_floor: dict[bytes, int] = {}  # read ctx -> max_committed when asked
        self.reads_ok = 0
        self.checks = 0

    def fail(self, what: str) -> None:
        raise RaftInvariantError(what)

    # ---- driver hooks --------------------------------------------------------------

    def on_persist(
        self, node_id: str, storage: MemoryStorage, entries: list[Entry], replaced: list[Entry]
    ) -> None:
        """Called after ``storage.append(entries)``; ``replaced`` = what was stored at
        those indexes and after before the write."""
        for e in entries:
            value = (e.data, e.kind, storage.term(e.index - 1))
            old = self.known.setdefault((e.index, e.term), value)
            if old != value:
                self.fail(
                    f"log matching: {node_id} persisted ({e.index}, term {e.term}) as "
                    f"{value!r} but another node holds {old!r}"
                )
        for e in replaced:
            if self.committed.get(e.index) == e and (
                not storage.has(e.index) or storage.entry(e.index) != e
            ):
                self.fail(
                    f"durability: {node_id} cut or overwrote committed entry {e.index} "
                    f"(term {e.term}) in its persisted log"
                )

    def on_apply(self, node_id: str, entries: list[Entry]) -> None:
        for e in entries:
            old = self.applied.setdefault(e.index, e)
            if old != e:
                self.fail(
                    f"state-machine safety: {node_id} applied {e} at index {e.index} but "
                    f"another node applied {old}"
                )

    def on_snapshot_persist(self, node_id: str, meta: SnapshotMeta, dropped: list[Entry]):
        """Called after a received snapshot replaced ``node_id``'s stored log, which
        held ``dropped`` before."""
        c = self.committed.get(meta.index)
        if c is not None and c.term != meta.term:
            self.fail(
                f"snapshot safety: {node_id} installed a snapshot at ({meta.index}, term "
                f"{meta.term}) but ({c.index}, term {c.term}) is committed there"
            )
        for e in dropped:
            if e.index > meta.index and self.committed.get(e.index) == e:
                self.fail(
                    f"durability: installing the snapshot at {meta.index} cut committed "
                    f"entry {e.index} (term {e.term}) from {node_id}'s log"
                )

    def on_state(self, node_id: str, how: str, meta: SnapshotMeta, state: list[Entry]):
        """A snapshot was ``how`` ("snapshotted" or "installed") at ``node_id``: its
        state (the applied entries) must be exactly the committed log up to its index."""
        if len(state) != meta.index or any(e.index != i + 1 for i, e in enumerate(state)):
            self.fail(f"snapshot safety: {node_id} {how} a state that is not 1..{meta.index}")
        if state and state[-1].term != meta.term:
            self.fail(
                f"snapshot safety: {node_id} {how} a snapshot whose meta says term "
                f"{meta.term} at {meta.index}, but its state ends with term {state[-1].term}"
            )
        for e in state:
            old = self.applied.setdefault(e.index, e)
            c = self.committed.get(e.index, e)
            if old != e or c != e:
                self.fail(
                    f"state-machine safety: {node_id} {how} a snapshot holding {e} at "
                    f"{e.index}, but {old if old != e else c} was applied/committed there"
                )

    def on_read_issued(self, ctx: bytes) -> None:
        self.read_floor[ctx] = self.max_committed

    def on_read_state(self, node_id: str, node: RaftNode, ctx: bytes, index: int, ok: bool):
        floor = self.read_floor.pop(ctx, None)
        if not ok or floor is None:
            return
        self.reads_ok += 1
        if index < floor:
            self.fail(
                f"linearizability: {node_id} confirmed read {ctx!r} at index {index}, but "
                f"index {floor} was already committed when the read was asked"
            )
        if index > node.log.commit:
            self.fail(f"{node_id} gave read point {index} beyond its commit {node.log.commit}")

    def check_step(self, nodes: dict[str, RaftNode | None], storages: dict[str, MemoryStorage]):
        self.checks += 1
        for nid, node in nodes.items():
            if node is None:
                self._seen.pop(nid, None)
                continue
            role, term, commit = node.role, node.term, node.log.commit
            prev = self._seen.get(nid)
            if prev is not None:
                if term < prev[1]:
                    self.fail(f"{nid}: term went back from {prev[1]} to {term}")
                if commit < prev[2]:
                    self.fail(f"{nid}: commit went back from {prev[2]} to {commit}")
            if prev is None or commit > prev[2]:
                self._on_commit(nid, node, prev[2] if prev else 0, storages)
            if role is Role.LEADER:
                holder = self.leader_of_term.setdefault(term, nid)
                if holder != nid:
                    self.fail(f"election safety: {holder} and {nid} both lead term {term}")
                if prev is None or prev[0] is not Role.LEADER or prev[1] != term:
                    self._check_leader_complete(nid, node)
            self._seen[nid] = (role, term, commit)

    # ---- internals -----------------------------------------------------------------

    def _on_commit(self, nid, node: RaftNode, old: int, storages) -> None:
        new = node.log.commit
        voters = node.conf.voters
        for i in range(old + 1, new + 1):
            e = node.log.entry(i)
            if e is None:
                continue  # jumped over by a snapshot (checked by on_state)
            c = self.committed.get(i)
            if c is None:
                self.committed[i] = e
                self.commit_term[i] = node.term
                holders = sum(
                    1
                    for v in voters
                    if (s := storages[v]).snapshot_meta().index >= i
                    or (s.has(i) and s.entry(i) == e)
                )
                if holders < len(voters) // 2 + 1:
                    self.fail(
                        f"durability: entry {i} (term {e.term}) is committed at {nid} but "
                        f"only {holders} of its {len(voters)} voters have it on disk"
                    )
            elif c != e:
                self.fail(f"commit safety: {nid} committed {e} at {i}, but {c} was committed there")
        self.max_committed = max(self.max_committed, new)

    def _check_leader_complete(self, nid: str, node: RaftNode) -> None:
        for i in range(self.max_committed, 0, -1):
            ct = self.commit_term.get(i)
            if ct is not None and ct <= node.term:
                c = self.committed[i]
                if i < node.log.first_index() - 1:
                    return  # compacted: it is in the leader's applied snapshot
                if node.log.term(i) != c.term:
                    self.fail(
                        f"leader completeness: {nid} leads term {node.term} without "
                        f"committed entry {i} (term {c.term})"
                    )
                return
