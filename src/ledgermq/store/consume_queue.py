"""ConsumeQueue: per (topic, queue) index of 20-byte units into the CommitLog (§3.4).

Unit = `int64 commitLogOffset | int32 size | int64 tagsCode`, in fixed-size files named by
their 20-digit start *byte* offset under `consumequeue/<topic>/<qid>/`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from functools import lru_cache

from ledgermq.storage.disk import Disk, Segment
from ledgermq.store.commitlog import parse_segment_names, segment_name

CQ_UNIT = struct.Struct(">qiq")
CQ_UNIT_SIZE = CQ_UNIT.size  # 20


@lru_cache(maxsize=256)
def _run_layout(n: int) -> struct.Struct:
    """`n` consecutive units as one struct (memoised: batch sizes repeat), so a batch's
    units are packed into the file with one call."""
    return struct.Struct(">" + "qiq" * n)


class ConsumeQueue:
    def __init__(
        self, disk: Disk, directory: str, topic: str, queue_id: int, units_per_file: int
    ) -> None:
        if units_per_file < 1:
            raise ValueError("units_per_file must be positive")
        self.disk = disk
        self.directory = directory
        self.topic = topic
        self.queue_id = queue_id
        self.units_per_file = units_per_file
        self.file_size = units_per_file * CQ_UNIT_SIZE
        self._segments: list[Segment] = []
        self._first = 0  # logical index of the first unit of _segments[0]
        # Lowest servable logical offset (>= _first): units below it point at CommitLog
        # files that retention removed (RocketMQ's minLogicOffset).
        self._min = 0
        self.max_offset = 0  # next logical offset to write
        self.dirty: set[Segment] = set()

    # --- lifecycle ----------------------------------------------------------------------
    def load(self) -> None:
        starts = parse_segment_names(self.disk.listdir(self.directory))
        # Keep the contiguous run ending at the newest file; older gaps cannot be served.
        run: list[int] = []
        for s in reversed(starts):
            if s % self.file_size:
                continue
            if run and run[-1] - s != self.file_size:
                break
            run.append(s)
        run.reverse()
        self._segments = [
            self.disk.open_segment(
                self._path(s), self.file_size, create=False, reserve=self.file_size
            )
            for s in run
        ]
        self._first = run[0] // CQ_UNIT_SIZE if run else 0
        self._min = self.max_offset = self._first

    def close(self) -> None:
        for seg in self._segments:
            seg.close()
        self._segments = []
        self.dirty.clear()

    def destroy(self) -> None:
        self.close()
        self.disk.rmtree(self.directory)

    def _path(self, byte_offset: int) -> str:
        return os.path.join(self.directory, segment_name(byte_offset))

    @property
    def min_offset(self) -> int:
        return self._min

    def _locate(self, index: int) -> tuple[int, int]:
        return divmod(index - self._first, self.units_per_file)

    # --- writes ---------------------------------------------------------------------------
    def put(self, index: int, phy_offset: int, size: int, tags_code: int) -> None:
        if not self._segments and index >= 0:
            # First file starts at the file boundary holding `index` (0 for a new queue).
            self._first = self._min = index - index % self.units_per_file
        if index < self._first:
            raise ValueError(f"CQ {self.topic}/{self.queue_id}: {index} < min {self._first}")
        i, rel = self._locate(index)
        while i >= len(self._segments):
            start = (self._first + len(self._segments) * self.units_per_file) * CQ_UNIT_SIZE
            if not self._segments and not self.disk.exists(self.directory):
                self.disk.makedirs(self.directory)
                # The checkpoint will vouch for these units: their directories must
                # survive a power loss too, not just the file contents.
                topic_dir = os.path.dirname(self.directory)
                self.disk.sync_dir(topic_dir)
                self.disk.sync_dir(os.path.dirname(topic_dir))
            # Units are packed into the mmap: reserve the whole (small) file's blocks.
            self._segments.append(
                self.disk.open_segment(self._path(start), self.file_size, reserve=self.file_size)
            )
        seg = self._segments[i]
        seg.write_struct(rel * CQ_UNIT_SIZE, CQ_UNIT, phy_offset, size, tags_code)
        self.dirty.add(seg)
        if index >= self.max_offset:
            self.max_offset = index + 1

    def put_run(self, index: int, units: list[tuple[int, int, int]]) -> None:
        """Consecutive units (phy offset, size, tags code) from `index` on: a batch sent
        to this queue. One pack per file instead of one per unit."""
        n = len(units)
        i = 0
        while i < n:
            self.put(index + i, *units[i])  # opens the file when the run enters a new one
            seg_no, rel = self._locate(index + i)
            k = min(self.units_per_file - rel - 1, n - i - 1)
            if k > 0:
                flat = [v for u in units[i + 1 : i + 1 + k] for v in u]
                self._segments[seg_no].write_struct((rel + 1) * CQ_UNIT_SIZE, _run_layout(k), *flat)
            i += 1 + k
        if index + n > self.max_offset:
            self.max_offset = index + n

    def truncate_from(self, index: int) -> None:
        """Discards units at `index` and after."""
        index = max(index, self._first)
        i, rel = self._locate(index)
        keep = i + 1 if rel else i
        if not self._segments:
            self.max_offset = index
            return
        keep = max(keep, 1)  # keep the first file so min_offset survives
        while len(self._segments) > keep:
            seg = self._segments.pop()
            self.dirty.discard(seg)
            seg.close()
            self.disk.remove(seg.path)
        if i < len(self._segments):
            self._segments[i].truncate(rel * CQ_UNIT_SIZE)
            self.dirty.add(self._segments[i])
        self.max_offset = min(self.max_offset, index)
        self._min = min(self._min, self.max_offset)

    def take_dirty(self) -> list[Segment]:
        out = list(self.dirty)
        self.dirty.clear()
        return out

    # --- reads ----------------------------------------------------------------------------
    def get(self, index: int) -> tuple[int, int, int] | None:
        """(phy_offset, size, tags_code) of unit `index`, or None outside [min, max)."""
        if index < self._min or index >= self.max_offset:
            return None
        i, rel = self._locate(index)
        if i >= len(self._segments):
            return None
        raw = self._segments[i].read(rel * CQ_UNIT_SIZE, CQ_UNIT_SIZE)
        return CQ_UNIT.unpack(raw) if len(raw) == CQ_UNIT_SIZE else None

    def iter_units(self, index: int, limit: int) -> Iterator[tuple[int, int, int, int]]:
        """(index, phy, size, tags) for up to `limit` units from `index`, one read per file."""
        end = min(self.max_offset, index + limit)
        while index < end:
            i, rel = self._locate(index)
            if i >= len(self._segments) or index < self._min:
                return
            n = min(end - index, self.units_per_file - rel)
            raw = self._segments[i].read(rel * CQ_UNIT_SIZE, n * CQ_UNIT_SIZE)
            for k, (phy, size, tags) in enumerate(CQ_UNIT.iter_unpack(raw)):
                yield index + k, phy, size, tags
            index += n

    # --- retention ------------------------------------------------------------------------
    def _phy_at(self, index: int) -> int:
        i, rel = self._locate(index)
        return self._segments[i].read_struct(rel * CQ_UNIT_SIZE, CQ_UNIT)[0]

    def delete_files_below(self, phy_min: int, busy: Callable[[Segment], bool]) -> int:
        """Removes files (oldest first, never the last one) whose last unit points below
        `phy_min`, the CommitLog's new minimum; stops at a file `busy` says is in use."""
        removed = 0
        while len(self._segments) > 1:
            seg = self._segments[0]
            last = self._first + self.units_per_file - 1
            if self._phy_at(last) >= phy_min or busy(seg):
                break
            self._segments.pop(0)
            self._first += self.units_per_file
            self._min = max(self._min, self._first)
            self.dirty.discard(seg)
            seg.close()
            self.disk.remove(seg.path)
            self.disk.sync_dir(self.directory)
            removed += 1
        return removed

    def correct_min_offset(self, phy_min: int) -> None:
        """Moves the min offset to the first unit pointing at or above `phy_min` (units
        are in CommitLog order, so a binary search); to max_offset if none does."""
        lo, hi = max(self._min, self._first), self.max_offset
        if lo >= hi:
            return
        if self._phy_at(hi - 1) < phy_min:
            self._min = hi  # nothing left to serve; keep the max offset
            return
        while lo < hi:
            mid = (lo + hi) // 2
            if self._phy_at(mid) < phy_min:
                lo = mid + 1
            else:
                hi = mid
        self._min = lo

    # --- recovery -------------------------------------------------------------------------
    def recover(self, commitlog_end: int) -> int:
        """Finds the end of the valid prefix (units with size > 0 whose record ends at or
        before `commitlog_end`) by binary search, cuts everything after it, and returns
        the new max offset. Valid units form a prefix because units are written in order
        and the region after the last checkpoint is re-dispatched before this runs."""
        if not self._segments:
            self.max_offset = self._first
            return self.max_offset
        lo = self._first
        hi = self._first + len(self._segments) * self.units_per_file

        def valid(idx: int) -> bool:
            i, rel = self._locate(idx)
            raw = self._segments[i].read(rel * CQ_UNIT_SIZE, CQ_UNIT_SIZE)
            if len(raw) != CQ_UNIT_SIZE:
                return False
            phy, size, _ = CQ_UNIT.unpack(raw)
            return size > 0 and phy >= 0 and phy + size <= commitlog_end

        while lo < hi:  # first invalid index in [first, hi)
            mid = (lo + hi) // 2
            if valid(mid):
                lo = mid + 1
            else:
                hi = mid
        self.max_offset = hi
        self.truncate_from(lo)
        self.max_offset = lo
        return lo
