"""Segmented CommitLog (PROTOCOL.md §3.1, §3.4).

Fixed-size files named by their 20-digit start offset, contiguous from the first one. A
record never spans files: when one does not fit (leaving room for the 8-byte blank header)
the rest of the file becomes a blank record and the record goes to the next file.
Single writer (the event loop); fsyncs may run in a thread over a snapshot of segments.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

from ledgermq.common.message import (
    MAGIC_BLANK,
    MAGIC_V1,
    MAGIC_V2,
    RECORD_BASE_SIZE,
    MessageDecodeError,
    MessageExt,
    decode_record,
    encode_blank,
    peek_size_magic,
    record_store_timestamp,
)
from ledgermq.storage.disk import Disk, DiskError, Segment

BLANK_MIN = 8  # TOTALSIZE + MAGIC of the end-of-file blank record


def segment_name(offset: int) -> str:
    return f"{offset:020d}"


def parse_segment_names(names: list[str]) -> list[int]:
    """Start offsets of well-formed segment names; stray files (tmp, ...) are ignored."""
    return sorted(int(n) for n in names if len(n) == 20 and n.isdigit())


class CommitLog:
    def __init__(self, disk: Disk, directory: str, file_size: int) -> None:
        if file_size < RECORD_BASE_SIZE + BLANK_MIN:
            raise ValueError(f"commitlog file size too small: {file_size}")
        self.disk = disk
        self.directory = directory
        self.file_size = file_size
        self._segments: list[Segment] = []
        self._first = 0  # start offset of _segments[0]
        self.wrote = 0  # next write position == max physical offset
        self.flushed = 0  # everything below is fsynced

    # --- lifecycle ----------------------------------------------------------------------
    def load(self) -> None:
        self.disk.makedirs(self.directory)
        starts = parse_segment_names(self.disk.listdir(self.directory))
        for prev, cur in itertools.pairwise(starts):
            if cur - prev != self.file_size:
                raise DiskError(
                    f"commitlog files not contiguous: {segment_name(prev)} then "
                    f"{segment_name(cur)} (file size {self.file_size})",
                    path=self.directory,
                )
        for s in starts:
            if s % self.file_size:
                raise DiskError(
                    f"commitlog file {segment_name(s)} not aligned", path=self.directory
                )
        self._segments = [
            self.disk.open_segment(self._path(s), self.file_size, create=False) for s in starts
        ]
        self._first = starts[0] if starts else 0
        self.wrote = self.flushed = self._first

    def close(self) -> None:
        for seg in self._segments:
            seg.close()
        self._segments = []

    def _path(self, start: int) -> str:
        return os.path.join(self.directory, segment_name(start))

    @property
    def min_offset(self) -> int:
        return self._first

    @property
    def end_of_files(self) -> int:
        return self._first + len(self._segments) * self.file_size

    def _locate(self, offset: int) -> tuple[Segment, int] | None:
        if offset < self._first:
            return None
        i, rel = divmod(offset - self._first, self.file_size)
        if i >= len(self._segments):
            return None
        return self._segments[i], rel

    # --- writes ---------------------------------------------------------------------------
    def max_record_size(self) -> int:
        return self.file_size - BLANK_MIN

    def reserve(self, size: int) -> int:
        """Where a `size`-byte write will start; pads to the next file and creates it."""
        if size > self.max_record_size():
            raise ValueError(f"{size} bytes do not fit a {self.file_size}-byte commitlog file")
        rel = (self.wrote - self._first) % self.file_size
        if rel and rel + size + BLANK_MIN > self.file_size:
            loc = self._locate(self.wrote)
            assert loc is not None
            remaining = self.file_size - rel
            loc[0].write(rel, encode_blank(remaining))
            self.wrote += remaining
        if self._locate(self.wrote) is None:
            if not self._segments:
                self._first = self.wrote - (self.wrote % self.file_size)
            self._segments.append(
                self.disk.open_segment(self._path(self.wrote), self.file_size, create=True)
            )
        return self.wrote

    def append_at(self, offset: int, data: bytes) -> None:
        """Writes at `offset` (from `reserve`); on failure the tail is cut back."""
        loc = self._locate(offset)
        if loc is None or offset != self.wrote:
            raise ValueError(f"append at {offset} but write position is {self.wrote}")
        seg, rel = loc
        try:
            seg.write(rel, data)
        except DiskError:
            self.rollback(offset)
            raise
        self.wrote = offset + len(data)

    def rollback(self, offset: int) -> None:
        """Discards everything from `offset` (>= flushed) on, e.g. after a failed write."""
        loc = self._locate(offset)
        if loc is not None:
            try:
                loc[0].truncate(loc[1])
            except DiskError:
                # Best effort: unacknowledged bytes past `wrote` are overwritten by the
                # next append and fail CRC/offset checks in recovery.
                pass
        self.wrote = min(self.wrote, offset)

    def truncate_to(self, offset: int) -> None:
        """Recovery: makes `offset` the end of the log, removing files after it."""
        if self._segments:
            keep = (offset - self._first) // self.file_size + 1
            while len(self._segments) > keep:
                seg = self._segments.pop()
                seg.close()
                self.disk.remove(seg.path)
        loc = self._locate(offset)
        if loc is not None:
            loc[0].truncate(loc[1])
        self.wrote = offset
        self.flushed = min(self.flushed, offset)

    # --- retention ------------------------------------------------------------------------
    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def first_segment(self) -> Segment | None:
        return self._segments[0] if self._segments else None

    def sealed_at(self, i: int) -> int | None:
        """When segment `i` stopped being written: the store timestamp of the first record
        of segment `i + 1` (the write that rolled over to it). None for the active file or
        when that record cannot be read."""
        if i + 1 >= len(self._segments):
            return None
        head = self.read(self._first + (i + 1) * self.file_size, 80)
        if head is None or len(head) < 80:
            return None
        size, magic = peek_size_magic(head)
        if magic not in (MAGIC_V1, MAGIC_V2) or size < RECORD_BASE_SIZE:
            return None
        try:
            return record_store_timestamp(head)
        except MessageDecodeError:
            return None

    def remove_first(self) -> None:
        """Retention: closes and deletes the oldest file; never the active (last) one.

        The directory is fsynced after each removal so a power loss cannot leave a gap at
        the front of the log (load() refuses non-contiguous files)."""
        if len(self._segments) < 2:
            raise ValueError("the active commitlog file is never removed")
        seg = self._segments.pop(0)
        self._first += self.file_size
        self.flushed = max(self.flushed, self._first)
        seg.close()
        self.disk.remove(seg.path)
        self.disk.sync_dir(self.directory)

    # --- reads ----------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes | None:
        loc = self._locate(offset)
        if loc is None or offset + size > self.wrote or size < 0:
            return None
        seg, rel = loc
        if rel + size > self.file_size:
            return None
        return seg.read(rel, size)

    def read_record(self, offset: int) -> bytes | None:
        """The record starting at `offset`, or None if there is none."""
        loc = self._locate(offset)
        if loc is None or offset + RECORD_BASE_SIZE > self.wrote:
            return None
        seg, rel = loc
        size, magic = peek_size_magic(seg.read(rel, 8))
        if magic not in (MAGIC_V1, MAGIC_V2) or size < RECORD_BASE_SIZE:
            return None
        if rel + size > self.file_size or offset + size > self.wrote:
            return None
        return seg.read(rel, size)

    # --- durability -----------------------------------------------------------------------
    def segments_between(self, start: int, end: int) -> list[Segment]:
        """Segments holding bytes in [start, end) — what a flush must fsync."""
        if end <= start or not self._segments:
            return []
        lo = max(0, (start - self._first) // self.file_size)
        hi = min(len(self._segments) - 1, (end - 1 - self._first) // self.file_size)
        return self._segments[lo : hi + 1]

    # --- recovery -------------------------------------------------------------------------
    def scan(self, start: int, on_record: Callable[[MessageExt], None]) -> int:
        """Verifies records from `start` (a record boundary) and returns the end of the
        last one that checks out (size, magic, layout, BODYCRC, PHYSICALOFFSET)."""
        pos = max(start, self._first)
        while True:
            loc = self._locate(pos)
            if loc is None:
                return pos
            seg, rel = loc
            buf = seg.buffer()
            if self.file_size - rel < BLANK_MIN:
                return pos
            size, magic = peek_size_magic(buf, rel)
            if magic == MAGIC_BLANK:
                if size != self.file_size - rel:
                    return pos
                pos += size
                continue
            if magic not in (MAGIC_V1, MAGIC_V2) or size < RECORD_BASE_SIZE:
                return pos
            if rel + size + BLANK_MIN > self.file_size:
                return pos
            try:
                msg, end = decode_record(buf, rel, verify_crc=True, decode_body=False)
            except MessageDecodeError:
                return pos
            if msg.commit_log_offset != pos:
                return pos
            on_record(msg)
            pos += end - rel
