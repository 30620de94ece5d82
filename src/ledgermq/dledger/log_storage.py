"""The one bridge between the Raft core's log and the durable `EntryStore` (+ snapshots).

Everything that knows both numberings lives here: the core counts entries from 1, the
store (DLedger) from 0, so ``store index = raft index - 1``.

The core reads the log through `_View` on demand (first_index/last_index/term/entries,
snapshots, config entries) and keeps only unpersisted entries plus a bounded cache
(``Config.max_cache_bytes``) in memory, so a member's memory does not grow with its log.
Config entries (rare) are found at open by a strided scan of the index files' magic
bytes (`EntryStore.indexes_with_magic`), not by reading the log.

Hard state: term and vote are written (atomically, fsynced) the moment they change; a
vote that is not on disk before the reply leaves could elect two leaders. The commit
index is only a hint (a restarted node learns it again from the leader), so it rides
along with those writes and is saved on close instead of costing two fsyncs per Ready.
On load it is clamped to the stored log, because in flush-interval mode the entries it
covers may not have survived a crash.

Snapshots (`snapshot.SnapshotStore`, ``<member dir>/snapshot/``): at open the newest
valid snapshot that covers the log's compaction point is loaded (older ones are the
fallback when the newest is damaged). If the log does not hold the snapshot's last entry
(crash recovery cut it below the snapshot, or a received snapshot was stored but the log
not yet reset) the log is restarted right after the snapshot, from the entry store
boundary carried in ``SnapshotMeta.context`` so ``pos`` and chainCrc continue exactly
as on the leader.
"""

from __future__ import annotations

import logging

from ledgermq.dledger.core.types import (
    ENTRY_CONFIG,
    ENTRY_NORMAL,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from ledgermq.dledger.protocol import LogEntry
from ledgermq.dledger.snapshot import SnapshotError, SnapshotStore, decode_context
from ledgermq.dledger.store.entry_store import EntryStore, HardStateFile, StoreError
from ledgermq.storage.disk import Disk, DiskError

log = logging.getLogger(__name__)


class _View:
    """The core's StorageView over the live store and snapshot files."""

    __slots__ = ("_config_idx", "_hs", "_snaps", "_store")

    def __init__(
        self, hs: HardState, store: EntryStore, snaps: SnapshotStore, config_idx: list[int]
    ) -> None:
        self._hs = hs
        self._store = store
        self._snaps = snaps
        self._config_idx = config_idx  # store (0-based) indexes of config entries at open

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
        if lo is None:  # everything (tests and tools only: the node never asks for it)
            lo, hi = self.first_index(), self.last_index() + 1
        assert hi is not None
        get = self._store.get
        out: list[Entry] = []
        size = 0
        for i in range(lo, hi):
            e = get(i - 1)
            size += len(e.body)
            if out and max_bytes is not None and size > max_bytes:
                break
            out.append(Entry(i, e.term, e.body, e.magic))
        return out

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snaps.newest_meta()

    def snapshot(self) -> Snapshot | None:
        return self._snaps.newest()

    def config_entries(self) -> list[Entry]:
        """The config entries found at open (the node asks once, at construction)."""
        # entries after the snapshot: raft index > meta.index, i.e. 0-based >= meta.index
        lo = self._snaps.newest_meta().index
        out = []
        for i in self._config_idx:
            if i >= lo and i <= self._store.last_index:
                e = self._store.get(i)
                out.append(Entry(i + 1, e.term, e.body, e.magic))
        return out


class RaftLogStorage:
    def __init__(
        self,
        disk: Disk,
        base_dir: str,
        self_id: str,
        *,
        data_file_size: int,
        index_file_size: int,
        zero_ahead: int = 0,
    ) -> None:
        self.store = EntryStore(
            disk,
            base_dir,
            self_id,
            data_file_size=data_file_size,
            index_file_size=index_file_size,
            zero_ahead=zero_ahead,
        )
        self.hard = HardStateFile.for_store(self.store)
        self.snapshots = SnapshotStore(disk, self.store.root)
        self._term = 0
        self._vote = ""
        self._commit = 0  # raft numbering

    def open(self, durable_limit: int | None = None) -> _View:
        """Open the store and the snapshots; the newest usable snapshot (if any) is
        ``view.snapshot()`` for the driver to restore its state machine from.

        `durable_limit` (a DLedger index) is the last entry known to be fsynced when the
        store is reopened in place after a failed fsync: entries after it are cut, as
        a power loss might have, because the page cache they were read back from is no
        proof that they reached the disk."""
        store = self.store
        store.open()
        try:
            if durable_limit is not None and store.last_index > durable_limit:
                keep_from = max(durable_limit + 1, store.begin_index)
                store.truncate_suffix(keep_from)
                store.sync()
            self.hard.load()
            try:
                snap = self.snapshots.open(store.begin_index)
            except (SnapshotError, DiskError) as exc:
                raise StoreError(f"{store.root}: cannot load a snapshot: {exc}") from exc
            if snap is None and store.begin_index > 0:
                raise StoreError(
                    f"{store.root}: the log begins at {store.begin_index} but there is no "
                    "snapshot covering the entries before it"
                )
            if snap is not None:
                self._continue_after(snap.meta)
        except BaseException:
            store.close()
            raise
        self._term, self._vote = self.hard.term, self.hard.vote
        self._commit = max(0, min(self.hard.commit_index + 1, store.last_index + 1))
        hs = HardState(self._term, self._vote or None, self._commit)
        config_idx = store.indexes_with_magic(ENTRY_CONFIG)
        return _View(hs, store, self.snapshots, config_idx)

    def _continue_after(self, meta: SnapshotMeta) -> None:
        """Make the log hold the snapshot's last entry (index meta.index - 1 in the
        store) or, if it does not, restart it right after the snapshot."""
        store = self.store
        last = meta.index - 1  # 0-based
        if store.begin_index - 1 <= last <= store.last_index and store.term_at(last) == meta.term:
            return
        log.warning(
            "%s: the log (%d..%d) does not hold snapshot entry %d (term %d); restarting "
            "the log after the snapshot",
            store.root,
            store.begin_index,
            store.last_index,
            last,
            meta.term,
        )
        self._reset_to(meta)

    def _reset_to(self, meta: SnapshotMeta) -> None:
        store = self.store
        boundary, _ = decode_context(meta.context)
        if boundary is None or boundary[0] != meta.term:
            # a snapshot without our context (another implementation): the log still
            # continues correctly, only pos/chainCrc start afresh
            log.warning("%s: snapshot %d carries no store boundary", store.root, meta.index - 1)
            boundary = (meta.term, 0, 0)
        store.reset_prefix(meta.index, prev=boundary)
        if store.last_index >= meta.index:
            # the whole stored log is replaced by the snapshot (MemoryStorage.apply_snapshot)
            store.truncate_suffix(meta.index)

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
                store.append_bodies(head.term, [e.data for e in todo[run_start:j]], head.kind)
                run_start = j

    def save_hard_state(self, hs: HardState) -> None:
        vote = hs.vote or ""
        self._commit = hs.commit
        if hs.term != self._term or vote != self._vote:
            self.hard.save(hs.term, vote, hs.commit - 1)
            self._term, self._vote = hs.term, vote

    def sync(self, full: bool = True) -> int:
        """fsync everything appended so far (safe to run in a worker thread while the
        loop thread only reads). ``full=False``: the data only (see `EntryStore.sync`)."""
        return self.store.sync(full=full)

    def durable_index(self) -> int:
        """The last DLedger index fsynced by this store (-1: none)."""
        return self.store.durable_index

    def needs_sync(self) -> bool:
        return self.store.durable_index != self.store.last_index

    # ---- snapshots (driver loop only, except save_snapshot_files) -----------------------

    def boundary(self, raft_index: int) -> tuple[int, int, int]:
        """The entry store boundary (term, chainCrc, end offset) of a raft index, for
        `SnapshotMeta.context`."""
        return self.store.boundary(raft_index - 1)

    def save_snapshot_files(self, snap: Snapshot) -> bool:
        """Write the snapshot files (may run in a worker thread: touches only
        ``snapshot/``). False if a snapshot at or after it is already kept."""
        return self.snapshots.save(snap)

    def install_snapshot(self, snap: Snapshot) -> None:
        """A snapshot received from the leader (``Ready.snapshot``), its files already
        written: the whole stored log is replaced; it restarts after the snapshot."""
        self.store.sync()
        self._reset_to(snap.meta)
        self._commit = max(self._commit, snap.meta.index)

    def compact(self, raft_index: int) -> bool:
        """Drop stored entries <= `raft_index` (covered by a kept snapshot)."""
        store = self.store
        if raft_index <= store.begin_index:
            return False
        kept = self.snapshots.indexes()
        assert kept and raft_index <= kept[-1], (
            f"compact({raft_index}) is not covered by a snapshot ({kept})"
        )
        store.reset_prefix(min(raft_index, store.last_index + 1))
        return True

    # ---- reads ----------------------------------------------------------------------

    @property
    def begin_index(self) -> int:
        """DLedger numbering: the first stored entry."""
        return self.store.begin_index

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
