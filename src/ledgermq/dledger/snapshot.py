"""Snapshot files of one DLedger member, in DLedger master's layout (PROTOCOL.md 5.5).

Layout under the member directory (``<store>/dledger-<selfId>/``)::

    snapshot/
      tmp/                          being written (removed at open)
      snapshot_<lastIncludedIndex>/ one per kept snapshot, index 0-based (DLedger's)
        data                        the state machine's bytes
        snapshot_meta               JSON, see below

``snapshot_meta`` holds DLedger's ``lastIncludedIndex`` / ``lastIncludedTerm`` and our
extras: ``voters`` / ``learners`` (the membership in effect at that index), ``context``
(hex of `SnapshotMeta.context`: the entry store boundary of the last included entry
and the members' addresses, see `encode_context`), ``dataSize`` and ``crc32`` of
``data``. Writing: ``tmp/data`` and ``tmp/snapshot_meta`` (each fsynced), then ``tmp``
is renamed to ``snapshot_<n>`` and the directory fsynced, all through `Disk`. Loading
verifies size and crc32 and falls back to the next older snapshot when the newest is
damaged (damaged ones are removed). `KEEP` (3, like DLedger) snapshots are kept.

Indexes: file names and JSON use DLedger's 0-based index; the API uses the Raft core's
`SnapshotMeta` (1-based: ``meta.index = lastIncludedIndex + 1``).
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import zlib

from ledgermq.dledger.core.types import ConfState, Snapshot, SnapshotMeta
from ledgermq.storage.disk import Disk, DiskError

log = logging.getLogger(__name__)

KEEP = 3
_PREFIX = "snapshot_"
_BOUNDARY = struct.Struct(">qiq")  # term, chainCrc, end offset of the last included entry


class SnapshotError(Exception):
    """A snapshot that cannot be stored or loaded."""


# ---- SnapshotMeta.context ------------------------------------------------------------


def encode_context(boundary: tuple[int, int, int], addresses: dict[str, str]) -> bytes:
    """`SnapshotMeta.context` for the DLedger store: the entry store's ``boundary()`` of
    the last included entry (term, chainCrc, end offset), so a follower's log continues
    byte-identically after it, then UTF-8 JSON of the members' addresses, so a member
    that learns the membership from a snapshot can reach everyone."""
    term, chain, end = boundary
    doc = json.dumps(addresses, sort_keys=True, separators=(",", ":")).encode()
    return _BOUNDARY.pack(term, chain, end) + doc


def decode_context(ctx: bytes) -> tuple[tuple[int, int, int] | None, dict[str, str]]:
    """(boundary or None, addresses) from a context; tolerant of an empty one."""
    if len(ctx) < _BOUNDARY.size:
        return None, {}
    boundary = _BOUNDARY.unpack_from(ctx, 0)
    addresses: dict[str, str] = {}
    rest = bytes(ctx[_BOUNDARY.size :])
    if rest:
        try:
            doc = json.loads(rest)
            if isinstance(doc, dict):
                addresses = {str(k): str(v) for k, v in doc.items()}
        except (UnicodeDecodeError, ValueError):
            pass
    return boundary, addresses


# ---- the files ---------------------------------------------------------------------------


def meta_to_json(meta: SnapshotMeta, data_size: int, crc: int) -> bytes:
    doc = {
        "lastIncludedIndex": meta.index - 1,
        "lastIncludedTerm": meta.term,
        "voters": list(meta.conf.voters),
        "learners": list(meta.conf.learners),
        "context": meta.context.hex(),
        "dataSize": data_size,
        "crc32": crc,
    }
    return json.dumps(doc, sort_keys=True, indent=1).encode()


def meta_from_json(raw: bytes) -> tuple[SnapshotMeta, int, int]:
    """(meta, data size, crc32); SnapshotError if it is not a valid snapshot_meta."""
    try:
        doc = json.loads(raw)
        meta = SnapshotMeta(
            int(doc["lastIncludedIndex"]) + 1,
            int(doc["lastIncludedTerm"]),
            ConfState.of(doc.get("voters", ()), doc.get("learners", ())),
            bytes.fromhex(doc.get("context", "")),
        )
        return meta, int(doc["dataSize"]), int(doc["crc32"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"bad snapshot_meta: {exc}") from None


class SnapshotStore:
    """The ``snapshot/`` directory of one member. `save` may run in a worker thread
    (one at a time: a lock serializes writers); the rest runs on the owner's thread."""

    def __init__(self, disk: Disk, member_root: str, *, keep: int = KEEP) -> None:
        self.disk = disk
        self.dir = f"{member_root.rstrip('/')}/snapshot"
        self.keep = max(1, keep)
        self._lock = threading.Lock()
        # kept snapshots (raft index -> meta), verified at open or written by us
        self._metas: dict[int, SnapshotMeta] = {}
        self._newest: Snapshot | None = None  # with data, loaded on demand

    def _path(self, raft_index: int) -> str:
        return f"{self.dir}/{_PREFIX}{raft_index - 1}"

    # ---- open / load ---------------------------------------------------------------

    def open(self, min_index: int = 0) -> Snapshot | None:
        """Load the newest valid snapshot whose index is >= `min_index` (the log's
        compaction point: an older one cannot be completed by the log) and return it;
        damaged ones are removed, older valid ones are kept as fallbacks. None if there
        is no snapshot at all; SnapshotError if every one that could serve is damaged
        or too old."""
        d = self.disk
        d.makedirs(self.dir)
        d.rmtree(f"{self.dir}/tmp")
        found: list[int] = []
        for name in d.listdir(self.dir):
            if name.startswith(_PREFIX) and name[len(_PREFIX) :].lstrip("-").isdigit():
                found.append(int(name[len(_PREFIX) :]) + 1)
        self._metas = {}
        self._newest = None
        chosen: Snapshot | None = None
        for index in sorted(found, reverse=True):
            try:
                snap = self._load(index)
            except SnapshotError as exc:
                log.warning("%s: snapshot %d is damaged (%s); removed", self.dir, index - 1, exc)
                d.rmtree(self._path(index))
                continue
            self._metas[index] = snap.meta
            if chosen is None:
                chosen = snap
        if chosen is None:
            if found and min_index > 0:
                raise SnapshotError(f"{self.dir}: no valid snapshot is left")
            return None
        if chosen.meta.index < min_index:
            raise SnapshotError(
                f"{self.dir}: the newest valid snapshot ({chosen.meta.index - 1}) is older "
                f"than the log's compaction point ({min_index - 1})"
            )
        self._newest = chosen
        return chosen

    def _load(self, index: int) -> Snapshot:
        d = self.disk
        path = self._path(index)
        try:
            raw = d.read_file(f"{path}/snapshot_meta")
            data = d.read_file(f"{path}/data")
        except DiskError as exc:
            raise SnapshotError(str(exc)) from exc
        if raw is None or data is None:
            raise SnapshotError("snapshot_meta or data is missing")
        meta, size, crc = meta_from_json(raw)
        if meta.index != index:
            raise SnapshotError(f"snapshot_meta says {meta.index - 1}, directory {index - 1}")
        if len(data) != size or zlib.crc32(data) != crc:
            raise SnapshotError(f"data of {len(data)} bytes fails its size/crc32 check")
        return Snapshot(meta, data)

    # ---- queries ---------------------------------------------------------------------

    def indexes(self) -> list[int]:
        """Raft indexes of the kept snapshots, oldest first."""
        return sorted(self._metas)

    def newest_meta(self) -> SnapshotMeta:
        if not self._metas:
            return SnapshotMeta()
        return self._metas[max(self._metas)]

    def newest(self) -> Snapshot | None:
        """The newest snapshot with its data (read once, then cached)."""
        if not self._metas:
            return None
        index = max(self._metas)
        snap = self._newest
        if snap is None or snap.meta.index != index:
            try:
                snap = self._newest = self._load(index)
            except SnapshotError as exc:
                log.error("%s: snapshot %d became unreadable: %s", self.dir, index - 1, exc)
                return None
        return snap

    # ---- writes -----------------------------------------------------------------------

    def save(self, snap: Snapshot) -> bool:
        """Write `snap` durably (tmp, fsync, rename, directory fsync) and drop the
        oldest beyond `keep`. False (nothing written) if a snapshot at or after its
        index is already kept. Safe to run in a worker thread."""
        meta = snap.meta
        if meta.index <= 0:
            raise SnapshotError("a snapshot must cover at least one entry")
        with self._lock:
            if self._metas and meta.index <= max(self._metas):
                return False
            d = self.disk
            tmp = f"{self.dir}/tmp"
            d.rmtree(tmp)
            d.makedirs(tmp)
            data = bytes(snap.data)
            d.replace_file(f"{tmp}/data", data)
            d.replace_file(f"{tmp}/snapshot_meta", meta_to_json(meta, len(data), zlib.crc32(data)))
            dst = self._path(meta.index)
            d.rmtree(dst)
            d.rename(tmp, dst)
            metas = dict(self._metas)
            metas[meta.index] = meta
            for old in sorted(metas)[: max(0, len(metas) - self.keep)]:
                d.rmtree(self._path(old))
                del metas[old]
            d.sync_dir(self.dir)
            self._metas = metas
            self._newest = Snapshot(meta, data)
            return True
