"""The one bridge between the Raft core's log and the durable `EntryStore`.

Everything that knows both numberings lives here: the core counts entries from 1, the
store (DLedger) from 0, so ``store index = raft index - 1``. When the core's StorageView
grows (first_index/last_index/term/entries, snapshots), only this class changes.

Hard state: term and vote are written (atomically, fsynced) the moment they change; a
vote that is not on disk before the reply leaves could elect two leaders. The commit
index is only a hint (a restarted node learns it again from the leader), so it rides
along with those writes and is saved on close instead of costing two fsyncs per Ready.
On load it is clamped to the stored log, because in flush-interval mode the entries it
covers may not have survived a crash.
"""

from __future__ import annotations

from ledgermq.dledger.core.types import ENTRY_NORMAL, Entry, HardState, SnapshotMeta
from ledgermq.dledger.protocol import LogEntry
from ledgermq.dledger.store.entry_store import EntryStore, HardStateFile, StoreError
from ledgermq.storage.disk import Disk, DiskError

_ENTRY_CONFIG = 3  # DLedger's config magic; the core's ENTRY_CONFIG


class _View:
    """The core's StorageView over the live store, for both generations of the core:
    the one that reads everything at start (``hard_state()``, ``entries()``) and the one
    that reads on demand (``first_index``/``last_index``/``term``/``entries(lo, hi)``,
    snapshots, config entries). No snapshots are taken yet, so the log begins at 1."""

    __slots__ = ("_hs", "_store")

    def __init__(self, hs: HardState, store: EntryStore) -> None:
        self._hs = hs
        self._store = store

    def hard_state(self) -> HardState:
        return self._hs

    def first_index(self) -> int:
        return self._store.begin_index + 1

    def last_index(self) -> int:
        return self._store.last_index + 1

    def term(self, index: int) -> int:
        return self._store.term_at(index - 1)

    def entries(
        self, lo: int | None = None, hi: int | None = None, max_bytes: int | None = None
    ) -> list[Entry]:
        if lo is None:  # the first core: every stored entry
            lo, hi = self.first_index(), self.last_index() + 1
        assert hi is not None
        out: list[Entry] = []
        size = 0
        for i in range(lo, hi):
            e = _to_raft(self._store.get(i - 1))
            size += len(e.data)
            if out and max_bytes is not None and size > max_bytes:
                break
            out.append(e)
        return out

    def snapshot_meta(self) -> SnapshotMeta:
        return SnapshotMeta()

    def snapshot(self) -> None:
        return None

    def config_entries(self) -> list[Entry]:
        # rare entries: a scan at start-up is fine until the store keeps a side list
        return [e for e in self.entries() if e.kind == _ENTRY_CONFIG]


def _to_raft(e) -> Entry:
    return Entry(e.index + 1, e.term, e.body, e.magic)


class RaftLogStorage:
    def __init__(
        self,
        disk: Disk,
        base_dir: str,
        self_id: str,
        *,
        data_file_size: int,
        index_file_size: int,
    ) -> None:
        self.store = EntryStore(
            disk,
            base_dir,
            self_id,
            data_file_size=data_file_size,
            index_file_size=index_file_size,
        )
        self.hard = HardStateFile.for_store(self.store)
        self._term = 0
        self._vote = ""
        self._commit = 0  # raft numbering

    def open(self) -> _View:
        self.store.open()
        self.hard.load()
        if self.store.begin_index != 0:
            raise RuntimeError(
                f"{self.store.root}: log begins at {self.store.begin_index}; snapshots are "
                "not supported by this driver yet"
            )
        self._term, self._vote = self.hard.term, self.hard.vote
        self._commit = max(0, min(self.hard.commit_index + 1, self.store.last_index + 1))
        hs = HardState(self._term, self._vote or None, self._commit)
        return _View(hs, self.store)

    # ---- writes (driver loop only) -------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Store a Ready's entries: skip those already held (same index and term means the
        same entry), cut the stored log at the first conflict, append the rest."""
        store = self.store
        i = 0
        while i < len(entries):
            si = entries[i].index - 1
            if si > store.last_index or store.term_at(si) != entries[i].term:
                break
            i += 1
        todo = entries[i:]
        if not todo:
            return
        first = todo[0].index - 1
        if first <= store.last_index:
            store.truncate_suffix(first)
        assert first == store.last_index + 1, (
            f"entry {first} would leave a gap after {store.last_index}"
        )
        # one store write per run of the same term and kind
        run_start = 0
        for j in range(1, len(todo) + 1):
            if (
                j == len(todo)
                or todo[j].term != todo[run_start].term
                or todo[j].kind != todo[run_start].kind
            ):
                head = todo[run_start]
                store.append_batch(head.term, [e.data for e in todo[run_start:j]], magic=head.kind)
                run_start = j

    def save_hard_state(self, hs: HardState) -> None:
        vote = hs.vote or ""
        self._commit = hs.commit
        if hs.term != self._term or vote != self._vote:
            self.hard.save(hs.term, vote, hs.commit - 1)
            self._term, self._vote = hs.term, vote

    def sync(self) -> int:
        """fsync everything appended so far (safe to run in a worker thread while the
        loop thread only reads)."""
        return self.store.sync()

    def needs_sync(self) -> bool:
        return self.store.durable_index != self.store.last_index

    # ---- reads ----------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        """DLedger numbering (-1 when empty)."""
        return self.store.last_index

    def get(self, index: int) -> LogEntry:
        """Entry at DLedger index `index`."""
        e = self.store.get(index)
        return LogEntry(e.index, e.term, e.body, e.magic if e.magic != 0 else ENTRY_NORMAL)

    def close(self) -> None:
        try:
            if self.store.last_index >= 0 and self._commit - 1 != self.hard.commit_index:
                # the commit hint may only cover entries that are on disk
                self.store.sync()
                self.hard.save(self._term, self._vote, self._commit - 1)
        except (StoreError, DiskError):
            pass  # a failed store keeps the last hint it had; recovery clamps it anyway
        finally:
            self.store.close()
