"""Hash index of message keys, in RocketMQ's index file layout (`index/`).

File = 40-byte header | `slot_num` int32 slots | `index_num` 20-byte entries.
Header: beginTimestamp q, endTimestamp q, beginPhyOffset q, endPhyOffset q,
hashSlotCount i, indexCount i (starts at 1: entry 0 means "none").
Entry: keyHash i (abs of Java hashCode), phyOffset q, timeDiff i (seconds since
beginTimestamp), prevIndex i (chain through entries sharing a slot).

Entries are hints: the store re-reads the CommitLog record and checks topic and key, so
stale entries left by a crash (or duplicates from re-dispatch) never produce wrong answers.
The header is kept in memory and written at checkpoints and close, not on every put.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from zlib import crc32

from ledgermq.storage.disk import Disk, DiskError, Segment
from ledgermq.store.commitlog import parse_segment_names, segment_name

HEADER = struct.Struct(">qqqqii")
HEADER_SIZE = HEADER.size  # 40
SLOT = struct.Struct(">i")
SLOT_SIZE = 4
ENTRY = struct.Struct(">iqii")
ENTRY_SIZE = ENTRY.size  # 20
_INT_MAX = 0x7FFFFFFF
log = logging.getLogger(__name__)


def key_hash(key: str) -> int:
    """Slot hash of an index key.

    RocketMQ uses Java's String.hashCode here; we use CRC32 (computed in C, not a Python
    loop per character: every message indexes at least its 32-character UNIQ_KEY). The
    file layout is unchanged and nothing outside this store reads the index.
    """
    return crc32(key.encode()) & _INT_MAX


def build_key(topic: str, key: str) -> str:
    return f"{topic}#{key}"


@dataclass(slots=True)
class IndexHeader:
    begin_timestamp: int = 0
    end_timestamp: int = 0
    begin_phy_offset: int = 0
    end_phy_offset: int = 0
    hash_slot_count: int = 0
    index_count: int = 1


class IndexFile:
    def __init__(self, segment: Segment, slot_num: int, index_num: int) -> None:
        self.segment = segment
        self.slot_num = slot_num
        self.index_num = index_num
        self.header = IndexHeader(*HEADER.unpack(segment.read(0, HEADER_SIZE)))
        if self.header.index_count < 1:
            self.header.index_count = 1
        self._entries_at = HEADER_SIZE + slot_num * SLOT_SIZE

    @staticmethod
    def file_size(slot_num: int, index_num: int) -> int:
        return HEADER_SIZE + slot_num * SLOT_SIZE + index_num * ENTRY_SIZE

    @property
    def is_full(self) -> bool:
        return self.header.index_count >= self.index_num

    def put_many(self, entries: list[tuple[str, int, int]], start: int = 0) -> int:
        """Indexes `entries[start:]` (key, phy offset, store time) until the file is full;
        returns how many it took. The entries go out in one write (they are contiguous),
        the slots in one pass over the mapped slot table: a page fault per fresh entry
        page costs more than a system call (see OsSegment.write)."""
        h = self.header
        room = self.index_num - h.index_count
        if room <= 0:
            return 0
        todo = entries[start : start + room]
        if not todo:
            return 0
        first = h.index_count
        end = first + len(todo)
        slot_num = self.slot_num
        hashes = [crc32(key.encode()) & _INT_MAX for key, _, _ in todo]
        slots = [HEADER_SIZE + (kh % slot_num) * SLOT_SIZE for kh in hashes]
        prevs = self.segment.swap_values(SLOT, slots, list(range(first, end)))
        if first == 1 and h.begin_timestamp == 0:
            h.begin_timestamp = todo[0][2]
            h.begin_phy_offset = todo[0][1]
        begin = h.begin_timestamp
        buf = bytearray(len(todo) * ENTRY_SIZE)
        pack_into = ENTRY.pack_into
        at = 0
        new_slots = 0
        idx = first
        for (_, phy_offset, store_timestamp), kh, prev in zip(todo, hashes, prevs, strict=True):
            if prev <= 0 or prev >= idx:  # an empty slot, or garbage from a torn file
                prev = 0
                new_slots += 1
            diff = (store_timestamp - begin) // 1000
            if diff < 0:
                diff = 0
            elif diff > _INT_MAX:
                diff = _INT_MAX
            pack_into(buf, at, kh, phy_offset, diff, prev)
            at += ENTRY_SIZE
            idx += 1
        self.segment.write(self._entries_at + first * ENTRY_SIZE, buf)
        h.hash_slot_count += new_slots
        h.index_count = end
        h.end_phy_offset = todo[-1][1]
        h.end_timestamp = todo[-1][2]
        return len(todo)

    def select(self, key: str, max_num: int, begin_ts: int, end_ts: int) -> list[int]:
        """Candidate physical offsets for `key` stored within [begin_ts, end_ts]."""
        out: list[int] = []
        kh = key_hash(key)
        seg = self.segment
        slot_pos = HEADER_SIZE + (kh % self.slot_num) * SLOT_SIZE
        idx = SLOT.unpack(seg.read(slot_pos, SLOT_SIZE))[0]
        base = self.header.begin_timestamp
        while 0 < idx < self.index_num and len(out) < max_num:
            raw = seg.read(self._entries_at + idx * ENTRY_SIZE, ENTRY_SIZE)
            if len(raw) != ENTRY_SIZE:
                break
            ekh, phy, diff, prev = ENTRY.unpack(raw)
            ts = base + diff * 1000
            # Seconds resolution: widen the window by a second so boundaries match.
            if ekh == kh and begin_ts - 1000 < ts <= end_ts + 1000:
                out.append(phy)
            if prev >= idx:  # a chain only points backwards; anything else is garbage
                break
            idx = prev
        return out

    def write_header(self) -> None:
        h = self.header
        self.segment.write(
            0,
            HEADER.pack(
                h.begin_timestamp,
                h.end_timestamp,
                h.begin_phy_offset,
                h.end_phy_offset,
                h.hash_slot_count,
                h.index_count,
            ),
        )


class IndexService:
    """The index files of one store, newest last; files are named by 20-digit first
    physical offset (RocketMQ names them by creation time; only the layout is shared)."""

    def __init__(self, disk: Disk, directory: str, slot_num: int, index_num: int) -> None:
        self.disk = disk
        self.directory = directory
        self.slot_num = slot_num
        self._slots_end = HEADER_SIZE + slot_num * SLOT_SIZE
        self.index_num = index_num
        self.files: list[IndexFile] = []
        self._dirty: set[IndexFile] = set()

    def load(self) -> None:
        self.disk.makedirs(self.directory)
        size = IndexFile.file_size(self.slot_num, self.index_num)
        for start in parse_segment_names(self.disk.listdir(self.directory)):
            try:
                seg = self.disk.open_segment(
                    self._path(start), size, create=False, reserve=self._slots_end
                )
            except DiskError as e:
                # The index is only a lookup aid; a file of another geometry is skipped.
                log.warning("skipping index file: %s", e)
                continue
            self.files.append(IndexFile(seg, self.slot_num, self.index_num))

    def _path(self, start: int) -> str:
        return os.path.join(self.directory, segment_name(start))

    def close(self) -> None:
        for f in self.files:
            f.segment.close()
        self.files = []
        self._dirty.clear()

    def delete_files_below(self, phy_min: int, busy: Callable[[Segment], bool]) -> int:
        """Removes files (oldest first, never the newest) whose every entry points below
        `phy_min`, the CommitLog's new minimum; stops at a file `busy` says is in use."""
        removed = 0
        while len(self.files) > 1:
            f = self.files[0]
            if f.header.end_phy_offset >= phy_min or busy(f.segment):
                break
            self.files.pop(0)
            self._dirty.discard(f)
            f.segment.close()
            self.disk.remove(f.segment.path)
            self.disk.sync_dir(self.directory)
            removed += 1
        return removed

    def put(self, topic: str, keys: list[str], phy_offset: int, store_timestamp: int) -> None:
        self.put_many([(build_key(topic, k), phy_offset, store_timestamp) for k in keys if k])

    def put_many(self, entries: list[tuple[str, int, int]]) -> None:
        """Indexes (full key `topic#key`, phy offset, store time) entries in order."""
        done = 0
        while done < len(entries):
            f = self.files[-1] if self.files else None
            if f is None or f.is_full:
                if f is not None:
                    f.write_header()
                phy_offset = entries[done][1]
                size = IndexFile.file_size(self.slot_num, self.index_num)
                # Reuse of a name is impossible: a full file ends below `phy_offset`.
                path = self._path(phy_offset)
                if f is not None and f.segment.path == path:
                    path = self._path(phy_offset + 1)
                # Slots are packed into the mmap (reserved); entries are pwritten.
                seg = self.disk.open_segment(path, size, reserve=self._slots_end)
                f = IndexFile(seg, self.slot_num, self.index_num)
                self.files.append(f)
            done += f.put_many(entries, done)
            self._dirty.add(f)

    def query(self, topic: str, key: str, max_num: int, begin_ts: int, end_ts: int) -> list[int]:
        full = build_key(topic, key)
        out: list[int] = []
        seen: set[int] = set()
        for f in reversed(self.files):
            h = f.header
            if h.index_count <= 1 and h.begin_timestamp == 0:
                continue
            if h.end_timestamp and h.end_timestamp < begin_ts - 1000:
                continue
            if h.begin_timestamp > end_ts + 1000:
                continue
            for phy in f.select(full, max_num * 4, begin_ts, end_ts):
                if phy not in seen:
                    seen.add(phy)
                    out.append(phy)
        return out

    def prepare_flush(self) -> list[Segment]:
        """Writes headers (on the loop) and returns the segments to fsync."""
        out = []
        for f in self._dirty:
            f.write_header()
            out.append(f.segment)
        self._dirty.clear()
        return out
