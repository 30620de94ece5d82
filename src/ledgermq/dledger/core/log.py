"""The node's view of its log: stable entries read through a ``StorageView`` on demand,
entries not yet on disk (and a bounded cache of recently stabilized ones) in memory.

Layout, by index::

    storage (read on demand)      | tail (memory)
    [first_index .. offset - 1]   | [offset .. unstable-1: cached, on disk][unstable .. last]

A snapshot received from the leader and not yet persisted (``snapshot``) replaces the
storage part: while it is pending, nothing is read from storage, ``first_index()`` is
``snapshot.meta.index + 1`` and the tail starts right after the snapshot.
"""

from __future__ import annotations

from .storage import StorageView
from .types import CommittedEntryConflict, Entry, Snapshot

ENTRY_OVERHEAD = 64  # bytes charged per cached entry on top of its data


class RaftLog:
    def __init__(
        self,
        storage: StorageView,
        commit: int = 0,
        *,
        applied: int | None = None,
        max_cache_bytes: int = 4 << 20,
    ) -> None:
        self.storage = storage
        first, last = storage.first_index(), storage.last_index()
        assert 1 <= first <= last + 1, f"storage range [{first}, {last}] is invalid"
        snap_index = storage.snapshot_meta().index
        assert first - 1 <= snap_index <= last, (
            f"stored snapshot at {snap_index} outside [{first - 1}, {last}]: compacted "
            "entries must be covered by the snapshot"
        )
        # invariant: self.tail[k].index == self.offset + k; every index < offset is in
        # storage (or is the pending snapshot's); offset <= unstable <= last_index() + 1
        self.tail: list[Entry] = []
        self.offset = last + 1
        # invariant: entries with index >= unstable are not known to be on disk
        self.unstable = last + 1
        # a snapshot from the leader that the driver has not persisted yet
        self.snapshot: Snapshot | None = None
        self.max_cache_bytes = max_cache_bytes
        self.cache_bytes = 0  # charged size of tail[: unstable - offset]
        assert commit <= last, (
            f"persisted commit {commit} is beyond the persisted log {last}: "
            "hard state must be written after the entries it commits"
        )
        # invariant: applied <= commit <= last_index(); committed entries never change;
        # everything at or below a snapshot is committed
        # what a state machine persisted as applied was committed (it applies nothing
        # else): the commit index starts there at least
        self.commit = max(commit, snap_index, applied or 0)
        self.applied = snap_index if applied is None else applied
        assert first - 1 <= self.applied <= self.commit, (
            f"applied {self.applied} outside [{first - 1}, {self.commit}]"
        )

    # ---- reads ---------------------------------------------------------------------

    def first_index(self) -> int:
        if self.snapshot is not None:
            return self.snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        return self.offset + len(self.tail) - 1

    def last_term(self) -> int:
        if self.tail:
            return self.tail[-1].term
        t = self.term(self.offset - 1)
        assert t is not None
        return t

    def term(self, index: int) -> int | None:
        """Term at ``index``; None when it is past the end or compacted away (below
        ``first_index() - 1``)."""
        off = self.offset
        if index >= off:
            k = index - off
            return self.tail[k].term if k < len(self.tail) else None
        snap = self.snapshot
        if snap is not None:
            return snap.meta.term if index == snap.meta.index else None
        if index < self.storage.first_index() - 1:
            return None
        return self.storage.term(index)

    def entry(self, index: int) -> Entry | None:
        if index >= self.offset:
            k = index - self.offset
            return self.tail[k] if k < len(self.tail) else None
        if index < self.first_index():
            return None
        return self.storage.entries(index, index + 1)[0]

    def matches(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft 5.4.1: is a log ending at (last_index, last_term) at least as new as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries with lo <= index < hi (lo >= first_index()). With ``max_bytes``, stop
        before the entry that would take the data size past it, keeping at least one."""
        hi = min(hi, self.last_index() + 1)
        if lo >= hi:
            return []
        assert lo >= self.first_index(), f"entry {lo} is compacted (first {self.first_index()})"
        off = self.offset
        out: list[Entry] = []
        if lo < off:
            out = self.storage.entries(lo, min(hi, off), max_bytes)
            if hi <= off or len(out) < off - lo:
                return out
        part = self.tail[max(lo, off) - off : hi - off]
        if max_bytes is None:
            return out + part if out else part
        size = sum(len(e.data) for e in out)
        for k, e in enumerate(part):
            size += len(e.data)
            if size > max_bytes and (out or k > 0):
                return out + part[:k]
        return out + part

    @property
    def entries(self) -> list[Entry]:
        """Every available entry, first_index() .. last_index() (reads storage: for
        tests and debugging, not for the hot path)."""
        return self.slice(self.first_index(), self.last_index() + 1)

    def conflict_hint(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term``, with its term.

        Used on both sides of fast backtracking: entries after the hint cannot match. The
        search stops at the compaction point; below it the answer is (index, 0).
        """
        i = min(index, self.last_index())
        first = self.first_index()
        while i >= first:
            t = self.term(i)
            assert t is not None
            if t <= term:
                return i, t
            i -= 1
        return i, self.term(i) or 0

    # ---- writes --------------------------------------------------------------------

    def append_new(self, entries: list[Entry]) -> None:
        """Leader append: entries must continue the log."""
        assert not entries or entries[0].index == self.last_index() + 1, "leader log gap"
        self.tail.extend(entries)

    def merge(self, prev_index: int, entries: tuple[Entry, ...]) -> int:
        """Follower append after a successful (prev_index, prev_term) match.

        Entries we already hold are skipped; the first conflicting entry and everything
        after it is replaced. Returns the index of the last entry the message covered.
        """
        for k, e in enumerate(entries):
            have = self.term(e.index)
            if have == e.term:
                continue
            if have is not None:
                if e.index <= self.commit:
                    # Impossible while acknowledged entries are durable on a majority;
                    # reachable after a majority lost unsynced data (interval flush).
                    raise CommittedEntryConflict(
                        f"leader asked to overwrite committed entry {e.index} (commit "
                        f"{self.commit}): this replica diverged from the group"
                    )
                self._truncate(e.index)
            assert e.index == self.last_index() + 1, "append message left a gap"
            self.tail.extend(entries[k:])
            break
        return prev_index + len(entries)

    def _truncate(self, index: int) -> None:
        """Forget entries >= ``index`` (in memory; the driver cuts storage when it writes
        the replacing entries)."""
        if index >= self.offset:
            del self.tail[index - self.offset :]
        else:
            self.tail = []
            self.offset = index
        if index < self.unstable:
            self.unstable = index
            self.cache_bytes = sum(len(e.data) + ENTRY_OVERHEAD for e in self.tail)

    def commit_to(self, index: int) -> bool:
        if index > self.commit:
            assert index <= self.last_index(), (
                f"commit {index} beyond last index {self.last_index()}"
            )
            self.commit = index
            return True
        return False

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot from the leader (not yet persisted)."""
        meta = snapshot.meta
        assert meta.index > self.commit, "a snapshot must be newer than the commit index"
        self.snapshot = snapshot
        self.tail = []
        self.offset = self.unstable = meta.index + 1
        self.cache_bytes = 0
        self.commit = meta.index

    # ---- Ready bookkeeping ---------------------------------------------------------

    def unstable_entries(self) -> list[Entry]:
        return self.tail[self.unstable - self.offset :]

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted entries up to (index, term); ignore if since replaced."""
        if index >= self.unstable and self.term(index) == term:
            off = self.offset
            done = self.tail[self.unstable - off : index - off + 1]
            self.cache_bytes += sum(len(e.data) for e in done) + ENTRY_OVERHEAD * len(done)
            self.unstable = index + 1
            self._trim_cache()

    def stable_snapshot(self, snapshot: Snapshot) -> None:
        """The driver persisted ``snapshot`` (storage now starts after it)."""
        if self.snapshot is snapshot:
            self.snapshot = None

    def _trim_cache(self) -> None:
        if self.cache_bytes <= self.max_cache_bytes or self.snapshot is not None:
            return
        # drop the oldest stable entries down to 3/4 of the budget (amortizes the shift)
        goal = self.max_cache_bytes * 3 // 4
        stable = self.unstable - self.offset
        k = 0
        size = self.cache_bytes
        while k < stable and size > goal:
            size -= len(self.tail[k].data) + ENTRY_OVERHEAD
            k += 1
        del self.tail[:k]
        self.offset += k
        self.cache_bytes = size

    def next_committed(self, max_bytes: int | None = None) -> list[Entry]:
        if self.snapshot is not None or self.applied >= self.commit:
            return []
        return self.slice(self.applied + 1, self.commit + 1, max_bytes)
