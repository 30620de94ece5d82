"""The node's synchronous read interface to stable storage (``StorageView``) and the
in-memory implementation the simulator persists to (``MemoryStorage``).

The node keeps in memory only the entries that are not yet known to be on disk plus a
small bounded cache of recent ones; everything older it reads through a ``StorageView``
on demand. The driver is the only writer: it stores what each ``Ready`` says (snapshot,
entries, hard state), and it may compact the log after taking a snapshot. The node never
writes.

Numbering (core, 1-based): ``first_index()`` is the first entry still stored;
``first_index() - 1`` is the *compaction point*: the index covered by the newest snapshot
that replaced the log prefix (0 if the log was never compacted), and its term is still
known. A fresh log has ``first_index() == 1``, ``last_index() == 0`` and ``term(0) == 0``.
Invariants a StorageView must keep:

  - ``1 <= first_index() <= last_index() + 1``;
  - ``term(i)`` is defined for ``first_index() - 1 <= i <= last_index()``;
  - ``entries(lo, hi)`` is defined for ``first_index() <= lo <= hi <= last_index() + 1``;
  - entries are contiguous: the k-th returned entry has index ``lo + k``;
  - ``first_index() - 1 <= snapshot_meta().index <= last_index()`` (every compacted
    entry is covered by the stored snapshot; the snapshot may be newer than the
    compaction point; if crash recovery cut the log below the snapshot, the adapter
    must restart the log right after the snapshot, as ``apply_snapshot`` does);
  - ``hard_state().commit <= last_index()`` (clamp it after recovery: it is a hint);
  - values only change through the driver's writes, which happen between ``ready()``
    and ``advance()`` (or while the node is not stepped).

Durable adapter (e.g. over ``dledger/store``, which is 0-based): ``first_index() =
begin_index + 1``, ``last_index() = store.last_index + 1``, ``term(i) =
store.term_at(i - 1)`` (for ``i == first_index() - 1`` the term recorded when the prefix
was reset, or the snapshot's term), ``entries(lo, hi, n) = store.get(lo-1 .. hi-2)``
stopping once the data exceeds ``n`` bytes. ``config_entries()`` can be served from a
small side list of the indexes of ENTRY_CONFIG entries (rare) kept beside the
checkpoint, cut when the suffix is truncated and pruned below ``first_index()``; or by
scanning the index files for magic 3 at open. Snapshots live in their own files
(``snapshot/snapshot_<index>/{snapshot_meta,data}`` like DLedger master, written to a
temporary name, fsynced and renamed); ``snapshot_meta`` must hold index, term, conf and
context. Writes: ``Ready.snapshot`` -> write the snapshot files, then
``store.reset_prefix(meta.index, prev=<boundary decoded from meta.context>)``; after it
``first_index() == meta.index + 1`` and ``term(meta.index) == meta.term`` must hold (any
stored entries after it are overwritten by the Ready's entries, which start at
``meta.index + 1``); compaction after a local snapshot ->
``store.reset_prefix(index)`` (0-based ``before_index = index``, i.e. core indexes
<= index go).
"""

from __future__ import annotations

from typing import Protocol

from .types import ENTRY_CONFIG, Entry, HardState, Snapshot, SnapshotMeta


class StorageView(Protocol):
    def hard_state(self) -> HardState:
        """Term, vote and commit as last persisted (commit may lag; it is a hint)."""
        ...

    def first_index(self) -> int:
        """First stored entry: the compaction point + 1."""
        ...

    def last_index(self) -> int:
        """Last stored entry; ``first_index() - 1`` when no entry is stored."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index`` for first_index()-1 <= index <= last_index()."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries with lo <= index < hi, in order. With ``max_bytes``, stop before the
        entry that would take the sum of ``len(data)`` past it, but return at least one
        entry when lo < hi."""
        ...

    def snapshot_meta(self) -> SnapshotMeta:
        """The newest stored snapshot's metadata; ``SnapshotMeta()`` (index 0) if none."""
        ...

    def snapshot(self) -> Snapshot | None:
        """The newest stored snapshot with its data, for a leader to send to a follower
        whose next entry is compacted away. None = temporarily unavailable (the leader
        tries again on a later heartbeat). Called only when first_index() > 1."""
        ...

    def config_entries(self) -> list[Entry]:
        """Every stored ENTRY_CONFIG entry with index > snapshot_meta().index, in index
        order (read once at start-up to recover the membership configuration)."""
        ...


class MemoryStorage:
    """Persisted state in memory; models "what survives a crash" in the simulator."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        # invariant: self._entries[k].index == self._offset + 1 + k (contiguous);
        # self._offset = compaction point, self._offset_term = its term
        self._entries: list[Entry] = []
        self._offset = 0
        self._offset_term = 0
        # invariant: self._snap.meta.index >= self._offset
        self._snap = Snapshot(SnapshotMeta(), b"")

    # ---- StorageView ----------------------------------------------------------------

    def hard_state(self) -> HardState:
        return self._hard_state

    def first_index(self) -> int:
        return self._offset + 1

    def last_index(self) -> int:
        return self._offset + len(self._entries)

    def term(self, index: int) -> int:
        if index == self._offset:
            return self._offset_term
        assert self._offset < index <= self.last_index(), (
            f"term({index}) outside [{self._offset}, {self.last_index()}]"
        )
        return self._entries[index - self._offset - 1].term

    def entries(
        self, lo: int | None = None, hi: int | None = None, max_bytes: int | None = None
    ) -> list[Entry]:
        """As StorageView.entries; with no bounds every stored entry (the old API)."""
        lo = self.first_index() if lo is None else lo
        hi = self.last_index() + 1 if hi is None else hi
        assert self._offset < lo <= hi <= self.last_index() + 1, (
            f"entries({lo}, {hi}) outside [{self.first_index()}, {self.last_index() + 1}]"
        )
        out = self._entries[lo - self._offset - 1 : hi - self._offset - 1]
        if max_bytes is not None:
            size = 0
            for k, e in enumerate(out):
                size += len(e.data)
                if size > max_bytes and k > 0:
                    return out[:k]
        return out

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snap.meta

    def snapshot(self) -> Snapshot | None:
        return self._snap

    def config_entries(self) -> list[Entry]:
        start = max(self._snap.meta.index + 1, self.first_index())
        return [e for e in self._entries[start - self._offset - 1 :] if e.kind == ENTRY_CONFIG]

    # ---- helpers for tests and the checker -----------------------------------------

    def entries_from(self, index: int) -> list[Entry]:
        return self._entries[max(index, self.first_index()) - self._offset - 1 :]

    def entry(self, index: int) -> Entry:
        assert self._offset < index <= self.last_index(), f"no stored entry {index}"
        return self._entries[index - self._offset - 1]

    def has(self, index: int) -> bool:
        return self._offset < index <= self.last_index()

    # ---- writes (the driver) ---------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Write ``entries``; anything stored at or after the first one's index is cut."""
        if not entries:
            return
        first = entries[0].index
        assert first <= self.last_index() + 1, (
            f"append at {first} would leave a gap after {self.last_index()}"
        )
        assert first > self._offset, f"append at {first} is below the compaction point"
        del self._entries[first - self._offset - 1 :]
        self._entries.extend(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def create_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot the local state machine took (``RaftNode.snapshot_meta()``
        gives its meta). Does not compact; call ``compact`` for that."""
        meta = snapshot.meta
        assert meta.index >= self._snap.meta.index, "snapshots only move forward"
        assert self._offset <= meta.index <= self.last_index(), (
            f"snapshot at {meta.index} outside the stored log [{self._offset}, {self.last_index()}]"
        )
        assert self.term(meta.index) == meta.term, "snapshot term disagrees with the log"
        self._snap = snapshot

    def compact(self, index: int) -> None:
        """Drop entries <= ``index``; it must be covered by the stored snapshot."""
        if index <= self._offset:
            return
        assert index <= self._snap.meta.index, (
            f"compact({index}) beyond the snapshot at {self._snap.meta.index}"
        )
        self._offset_term = self.term(index)
        del self._entries[: index - self._offset]
        self._offset = index

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install a snapshot received from the leader (``Ready.snapshot``): the whole
        stored log is replaced; it restarts after ``snapshot.meta.index``."""
        meta = snapshot.meta
        self._snap = snapshot
        self._entries = []
        self._offset = meta.index
        self._offset_term = meta.term
