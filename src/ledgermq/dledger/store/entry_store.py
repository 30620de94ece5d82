"""A segmented, crash-safe DLedger entry log (PROTOCOL.md §5.1), all writes through `Disk`.

Layout under ``<base>/dledger-<selfId>/``:

* ``data/<20-digit start offset>``: fixed-size data files holding entries back to back
  (entry_codec layout). File *k* starts at log offset ``k * data_file_size``; an entry
  that does not fit in the rest of a file goes to the next one, and the rest is marked
  with blank padding (magic -1, size = bytes left) when at least 8 bytes remain. An
  entry's ``pos`` is its log offset, so replicas with the same ``data_file_size`` agree
  on every ``pos``: the position of entry *i+1* depends only on the end of entry *i*
  and its own size.
* ``index/<20-digit start byte>``: 32-byte index entries, entry *i* at log byte
  ``i * 32``; each file covers ``index_file_size`` bytes and is named by its first byte.
* ``checkpoint``: two 128-byte slots (alternating, each with a CRC) recording the last
  fsynced entry (index, pos, term, chainCrc), the first live index (begin) and the
  term, chainCrc and end offset of entry begin-1. Written and fsynced at the end of
  every `sync()`, after the data and index fsyncs, so it never claims an entry that is
  not on disk. (One more fdatasync per `sync()`: data, index, checkpoint.)
* ``currterm``: `HardStateFile` (term, vote, commit index), replaced atomically.

Recovery (`open()`): by default scanning starts right after the checkpointed (last
fsynced) entry, from its recorded index, term, chainCrc and end offset, so only the
unsynced tail is read. With ``recover_files=N > 0`` (or when an index file is missing,
or there is no checkpoint) it starts at the durable entry's data file minus ``N - 1``
files, or right after entry begin-1 (index 0 with chain 0 for a log that begins at 0).
Every scanned entry is verified (magic, size, contiguous index, non-decreasing term, pos
== its offset, bodyCrc, chainCrc); index entries that disagree are rewritten; the log is
cut at the end of the last verified entry (later files removed) and everything left is
fsynced and checkpointed. A bad entry at or below the checkpointed durable index raises
`StoreCorruptError` instead of dropping acknowledged data. If a file's tail is damaged
but the next file starts with the entry that continues the chain, the damage is treated
as (and rewritten to) blank padding.

Reads verify too: `get()` checks bodyCrc, agreement with the index entry and the chainCrc
against the previous entry, so corruption below the recovery start point surfaces as
`StoreCorruptError` on read rather than as wrong data.

Indexes start at 0 (DLedger); an empty log has last_index == begin_index - 1.
Not thread-safe: one owner (the Raft driver) calls it.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ledgermq.dledger.store.entry_codec import (
    BLANK,
    BLANK_SIZE,
    ENTRY_MAGICS,
    HEADER_SIZE,
    INDEX,
    INDEX_SIZE,
    MAGIC_BLANK,
    MAGIC_NORMAL,
    Entry,
    EntryDecodeError,
    decode_entry,
    encode_header,
    encode_index,
    make_entry_unchecked,
    peek_magic,
)
from ledgermq.storage.disk import Disk, DiskError, DiskFullError, Segment

# entry_codec's HEADER and chain layouts with the CRC fields unsigned (same bytes)
_HEADER_U = struct.Struct(">iiqqqiIIi")
_CHAIN_U = struct.Struct(">IiiqqqiIi")

DEFAULT_DATA_FILE_SIZE = 1 << 30
DEFAULT_INDEX_FILE_SIZE = 5_242_880 * INDEX_SIZE
_CKPT_FILE_SIZE = 4096
# a lean sync (data only) turns into a full one (index and checkpoint too) past these
LAZY_CHECKPOINT_BYTES = 4 << 20
LAZY_CHECKPOINT_ENTRIES = 4096
# seq, durable index, its pos, term, chainCrc; begin index; entry begin-1's term, chainCrc,
# end; the durable entry's end
_CKPT_BODY = struct.Struct(">qqqqiqqiqq")
_CKPT_CRC = struct.Struct(">I")
_CKPT_SLOT = 128
_I32 = struct.Struct(">i")
_PAGE = 4096


class StoreError(Exception):
    """The entry store refused an operation; the store stays consistent."""


class StoreCorruptError(StoreError):
    """Data below the durable (fsynced) point does not verify; nothing was cut."""


class StoreFullError(StoreError):
    """Disk full: the failed append was rolled back, everything stored before stays."""


class EntryNotFoundError(StoreError, LookupError):
    """The index is outside [begin_index, last_index]."""


class AppendMismatchError(StoreError):
    """A follower's entry does not continue the local log (index, pos or chainCrc)."""


def _name(offset: int) -> str:
    return f"{offset:020d}"


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    seq: int
    index: int
    pos: int
    term: int
    chain: int
    begin: int
    bprev_term: int
    bprev_chain: int
    bprev_end: int
    end: int


class EntryStore:
    def __init__(
        self,
        disk: Disk,
        base_dir: str,
        self_id: str,
        *,
        data_file_size: int = DEFAULT_DATA_FILE_SIZE,
        index_file_size: int = DEFAULT_INDEX_FILE_SIZE,
        recover_files: int = 0,
        zero_ahead: int = 0,
    ) -> None:
        if data_file_size < HEADER_SIZE + BLANK_SIZE:
            raise ValueError(f"data_file_size {data_file_size} too small")
        if index_file_size <= 0 or index_file_size % INDEX_SIZE:
            raise ValueError(f"index_file_size {index_file_size} must be a multiple of 32")
        self.disk = disk
        self.root = f"{base_dir.rstrip('/')}/dledger-{self_id}"
        self.data_dir = f"{self.root}/data"
        self.index_dir = f"{self.root}/index"
        self.data_file_size = data_file_size
        self.index_file_size = index_file_size
        self.recover_files = max(0, recover_files)
        # Zero-fill ahead: keep up to `zero_ahead` bytes past the write position written
        # with zeros and fsynced, by a background thread, so the hot-path fdatasync
        # overwrites initialized blocks instead of allocating (a journal commit each).
        self.zero_ahead = max(0, zero_ahead) // _PAGE * _PAGE
        self._zero_end = 0  # log offset: [write_pos, _zero_end) is durable zeros
        self._zero_job: Future[None] | None = None
        self._zero_range = (0, 0)
        self._zero_pool: ThreadPoolExecutor | None = None
        self._data: dict[int, Segment] = {}
        self._index: dict[int, Segment] = {}
        self._ckpt_seg: Segment | None = None
        self._ckpt_seq = 0
        # what the last checkpoint written claims (index, end offset); with lean syncs
        # (`sync(full=False)`) it may lag the durable index
        self._ckpt_index = -1
        self._ckpt_end = 0
        self._dirty: dict[str, Segment] = {}
        self._begin = 0
        # (term, chainCrc, end offset) of entry begin-1, kept when a prefix is reset.
        self._bprev = (0, 0, 0)
        self._last_index = -1
        self._last_term = 0
        self._last_chain = 0
        self._write_pos = 0
        self._last_pos = 0
        self._durable = -1
        self._failed: str | None = None
        self._opened = False
        # Facts about what recovery did, for logs and tests.
        self.recovery_notes: list[str] = []

    # --- properties --------------------------------------------------------------------
    @property
    def begin_index(self) -> int:
        return self._begin

    @property
    def last_index(self) -> int:
        return self._last_index

    @property
    def last_term(self) -> int:
        return self._last_term

    @property
    def last_chain_crc(self) -> int:
        return self._last_chain

    @property
    def write_pos(self) -> int:
        """The log offset right after the last entry."""
        return self._write_pos

    @property
    def durable_index(self) -> int:
        """The highest index covered by the last completed `sync()`."""
        return self._durable

    # --- file helpers ------------------------------------------------------------------
    def _data_seg(self, start: int, *, create: bool) -> Segment | None:
        seg = self._data.get(start)
        if seg is None and create:
            seg = self.disk.open_segment(f"{self.data_dir}/{_name(start)}", self.data_file_size)
            self._data[start] = seg
        return seg

    def _index_seg(self, base: int, *, create: bool) -> Segment | None:
        seg = self._index.get(base)
        if seg is None and create:
            seg = self.disk.open_segment(
                f"{self.index_dir}/{_name(base)}",
                self.index_file_size,
                reserve=self.index_file_size,
            )
            self._index[base] = seg
        return seg

    def _index_loc(self, index: int) -> tuple[int, int]:
        byte = index * INDEX_SIZE
        base = byte - byte % self.index_file_size
        return base, byte - base

    def _read_index(self, index: int) -> tuple[int, int, int, int, int] | None:
        base, off = self._index_loc(index)
        seg = self._index_seg(base, create=False)
        if seg is None:
            return None
        return seg.read_struct(off, INDEX)

    def read_data(self, pos: int, size: int) -> bytes | None:
        """`size` raw bytes of the data files from log offset `pos` (e.g. the body of an
        entry whose header is at pos - 48); None where no file holds them."""
        dfs = self.data_file_size
        start = pos - pos % dfs
        if size < 0 or pos % dfs + size > dfs or pos + size > self._write_pos:
            return None
        seg = self._data.get(start)
        if seg is None:
            return None
        try:
            return seg.read(pos - start, size)
        except DiskError:
            return None

    def place(self, pos: int, size: int) -> int:
        """Where an entry of `size` bytes (header included) goes if the log ends at
        `pos`: there, or at the start of the next data file when it does not fit."""
        return self._place(pos, size)

    def _place(self, pos: int, size: int) -> int:
        """Where an entry of `size` bytes goes if the log currently ends at `pos`."""
        off = pos % self.data_file_size
        if off + size <= self.data_file_size:
            return pos
        return pos - off + self.data_file_size

    # --- open and recovery ------------------------------------------------------------
    def open(self) -> EntryStore:
        if self._opened:
            return self
        d = self.disk
        d.makedirs(self.data_dir)
        d.makedirs(self.index_dir)
        for name in d.listdir(self.data_dir):
            if len(name) == 20 and name.isdigit():
                start = int(name)
                if start % self.data_file_size:
                    raise StoreError(f"data file {name} is not aligned to {self.data_file_size}")
                self._data_seg(start, create=True)
        for name in d.listdir(self.index_dir):
            if len(name) == 20 and name.isdigit():
                self._index_seg(int(name), create=True)
        self._ckpt_seg = d.open_segment(f"{self.root}/checkpoint", _CKPT_FILE_SIZE)
        ckpt = self._read_checkpoint()
        self._opened = True
        try:
            self._recover(ckpt)
        except BaseException:
            self.close()
            raise
        return self

    def _read_checkpoint(self) -> _Checkpoint | None:
        assert self._ckpt_seg is not None
        best: _Checkpoint | None = None
        for slot in (0, 1):
            raw = self._ckpt_seg.read(slot * _CKPT_SLOT, _CKPT_BODY.size + _CKPT_CRC.size)
            body, crc = raw[: _CKPT_BODY.size], raw[_CKPT_BODY.size :]
            if len(crc) < 4 or _CKPT_CRC.unpack(crc)[0] != zlib.crc32(body):
                continue
            c = _Checkpoint(*_CKPT_BODY.unpack(body))
            if c.seq > 0 and (best is None or c.seq > best.seq):
                best = c
        if best is not None:
            self._ckpt_seq = best.seq
        return best

    def _write_checkpoint(self, index: int, pos: int, term: int, chain: int, end: int = 0) -> None:
        assert self._ckpt_seg is not None
        self._ckpt_seq += 1
        body = _CKPT_BODY.pack(
            self._ckpt_seq, index, pos, term, chain, self._begin, *self._bprev, end
        )
        self._ckpt_seg.write(
            (self._ckpt_seq % 2) * _CKPT_SLOT, body + _CKPT_CRC.pack(zlib.crc32(body))
        )
        self._ckpt_seg.sync()
        self._ckpt_index, self._ckpt_end = index, end

    def _first_entry_index(self, start: int) -> int | None:
        seg = self._data[start]
        try:
            e, _ = decode_entry(seg.buffer(), 0)
        except EntryDecodeError:
            return None
        return e.index

    def _recover(self, ckpt: _Checkpoint | None) -> None:
        starts = sorted(self._data)
        if ckpt is not None:
            self._begin = ckpt.begin
            self._bprev = (ckpt.bprev_term, ckpt.bprev_chain, ckpt.bprev_end)
        durable = ckpt.index if ckpt is not None and ckpt.index >= ckpt.begin else -1
        if not starts:
            if durable >= 0:
                raise StoreCorruptError(
                    f"{self.data_dir}: no data files, but entries up to {durable} were synced"
                )
            self._last_index = self._begin - 1
            self._last_term, self._last_chain, self._write_pos = self._bprev
            self._durable = self._last_index
            return
        # Where to start scanning.
        first, first_off = 0, 0
        anchored = False
        if durable >= 0:
            assert ckpt is not None
            anchor_start = ckpt.pos - ckpt.pos % self.data_file_size
            if anchor_start not in self._data:
                raise StoreCorruptError(f"data file {_name(anchor_start)} (synced) is missing")
            first = max(0, starts.index(anchor_start) - max(0, self.recover_files - 1))
            anchored = self.recover_files == 0
            # Missing index files below the anchor: rebuild from the first data file.
            base = self._index_loc(max(self._begin, 0))[0]
            top = self._index_loc(durable)[0]
            while base <= top:
                if base not in self._index:
                    self.recovery_notes.append(f"index file {_name(base)} missing: rebuilding")
                    first, anchored = 0, False
                    break
                base += self.index_file_size
        # Scan.
        last_index: int | None = None
        last_pos = 0
        last_term = 0
        last_chain: int | None = None
        last_end = starts[first]
        init: tuple[int, int, int, int] | None = None
        if anchored:
            # Start right after the last fsynced entry (the checkpoint holds its index,
            # term, chainCrc and end); entries up to it are verified when read.
            assert ckpt is not None
            init = (ckpt.index, ckpt.term, ckpt.chain, ckpt.end)
            last_pos = ckpt.pos
        elif self._begin > 0 or first == 0:
            # Start right after entry begin-1 (begin 0: at the very start, index 0 with
            # chain 0 expected); entries below begin need no checking.
            init = (self._begin - 1, *self._bprev)
        if init is not None:
            bend = init[3]
            bfile = bend - bend % self.data_file_size
            later = [k for k, st in enumerate(starts) if st >= bfile]
            if not later or starts[first] <= starts[later[0]]:
                first = later[0] if later else len(starts)
                if later and starts[first] == bfile:
                    first_off = bend - bfile
                last_index, last_term, last_chain, last_end = init
        repaired = 0
        cut_reason = ""
        i = first
        while i < len(starts):
            start = starts[i]
            buf = self._data[start].buffer()
            off = first_off if i == first else 0
            next_file = False
            while not next_file:
                if self.data_file_size - off < BLANK_SIZE:
                    next_file = True
                    break
                if (
                    peek_magic(buf, off) == MAGIC_BLANK
                    and last_index is not None
                    and BLANK.unpack_from(buf, off)[1] == self.data_file_size - off
                ):
                    next_file = True
                    break
                prev = last_chain
                if prev is None:
                    prev = self._known_prev_chain(buf, off)
                try:
                    e, end = decode_entry(buf, off, prev_chain_crc=prev)
                    if last_index is not None and e.index != last_index + 1:
                        raise EntryDecodeError(f"index {e.index} after {last_index}", pos=off)
                    if e.term < last_term:
                        raise EntryDecodeError(f"term {e.term} after {last_term}", pos=off)
                    if e.pos != start + off:
                        raise EntryDecodeError(f"pos {e.pos} != offset {start + off}", pos=off)
                except EntryDecodeError as err:
                    if (
                        last_index is not None
                        and i + 1 < len(starts)
                        and starts[i + 1] == start + self.data_file_size
                        and self._continues(starts[i + 1], last_index, last_term, last_chain)
                    ):
                        # The tail of this file is damaged padding: the next file goes on.
                        if self.data_file_size - off >= BLANK_SIZE:
                            self._data[start].write(
                                off, BLANK.pack(MAGIC_BLANK, self.data_file_size - off)
                            )
                            self._dirty[self._data[start].path] = self._data[start]
                        self.recovery_notes.append(f"repaired padding at {start + off}: {err}")
                        next_file = True
                        break
                    cut_reason = str(err)
                    i = len(starts)
                    break
                if (
                    ckpt is not None
                    and e.index == durable
                    and (e.pos != ckpt.pos or e.chain_crc != ckpt.chain)
                ):
                    raise StoreCorruptError(
                        f"entry {durable} differs from the checkpoint "
                        f"(pos {e.pos}/{ckpt.pos}, chainCrc {e.chain_crc}/{ckpt.chain})"
                    )
                if e.index >= self._begin and self._repair_index(e):
                    repaired += 1
                last_index, last_term, last_chain = e.index, e.term, e.chain_crc
                last_pos, last_end = e.pos, start + end
                off = end
            i += 1
        if last_index is None:
            # Nothing valid in the scanned files.
            if first > 0 or durable >= 0:
                raise StoreCorruptError(
                    f"no valid entry from data file {_name(starts[first])}: {cut_reason}"
                )
            last_index = self._begin - 1
            last_term, last_chain, last_end = self._bprev
        if last_index < durable:
            raise StoreCorruptError(
                f"entries {last_index + 1}..{durable} were synced but do not verify "
                f"at offset {last_end}: {cut_reason}"
            )
        if repaired:
            self.recovery_notes.append(f"rewrote {repaired} index entries from data")
        self._last_index = last_index
        self._last_term = last_term
        self._last_chain = last_chain or 0
        self._write_pos = last_end
        self._last_pos = last_pos
        if last_index < self._begin - 1:
            raise StoreCorruptError(
                f"log ends at {last_index} below its begin index {self._begin}: {cut_reason}"
            )
        self._cut_after(last_end, last_index + 1)
        if cut_reason and last_index >= 0:
            self.recovery_notes.append(f"cut after entry {last_index}: {cut_reason}")
        # Everything left was verified; make it (and the cut) durable.
        self._durable = -1
        self._sync_all()
        if self._last_index >= self._begin:
            self._write_checkpoint(last_index, last_pos, last_term, last_chain or 0, last_end)
        self._durable = self._last_index

    def _known_prev_chain(self, buf: object, off: int) -> int | None:
        """The chain before the first scanned entry, when known (index 0 or begin)."""
        try:
            e, _ = decode_entry(buf, off)
        except EntryDecodeError:
            return None
        if e.index == 0:
            return 0
        if e.index == self._begin:
            return self._bprev[1]
        return None

    def _continues(self, start: int, last_index: int, last_term: int, chain: int | None) -> bool:
        try:
            e, _ = decode_entry(self._data[start].buffer(), 0, prev_chain_crc=chain)
        except EntryDecodeError:
            return False
        return e.index == last_index + 1 and e.term >= last_term and e.pos == start

    def _repair_index(self, e: Entry) -> bool:
        want = (e.magic, e.pos, e.size, e.index, e.term)
        base, off = self._index_loc(e.index)
        seg = self._index_seg(base, create=True)
        assert seg is not None
        if seg.read_struct(off, INDEX) == want:
            return False
        seg.write_struct(off, INDEX, *want)
        self._dirty[seg.path] = seg
        return True

    def _cut_after(self, end_pos: int, from_index: int) -> None:
        """Discards data from log offset `end_pos` and index entries from `from_index`."""
        self._settle_zero()
        self._zero_end = 0
        dfs = self.data_file_size
        keep, off = end_pos - end_pos % dfs, end_pos % dfs
        removed = self._drop(self._data, lambda s: s > keep or (s == keep and off == 0))
        seg = self._data.get(keep)
        if seg is not None:
            seg.truncate(off)
            self._dirty[seg.path] = seg
        base, ioff = self._index_loc(max(from_index, 0))
        removed |= self._drop(self._index, lambda b: b > base or (b == base and ioff == 0))
        iseg = self._index.get(base)
        if iseg is not None:
            iseg.truncate(ioff)
            self._dirty[iseg.path] = iseg
        if removed:
            self.disk.sync_dir(self.data_dir)
            self.disk.sync_dir(self.index_dir)

    def _drop(self, table: dict[int, Segment], doomed: Callable[[int], bool]) -> bool:
        self._settle_zero()
        removed = False
        for start in sorted(table):
            if doomed(start):
                seg = table.pop(start)
                if self._dirty.pop(seg.path, None) is not None:
                    # Settle its pending writes before unlinking: FaultyDisk.crash() would
                    # otherwise replay them onto a later file of the same name.
                    seg.sync()
                seg.close()
                self.disk.remove(seg.path)
                removed = True
        if removed:
            self._zero_end = 0
        return removed

    # --- appends ------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if not self._opened:
            raise StoreError("store is not open")
        if self._failed is not None:
            raise StoreError(f"store failed earlier and must be reopened: {self._failed}")

    def append(
        self, term: int, body: bytes, *, magic: int = MAGIC_NORMAL, channel: int = 0
    ) -> Entry:
        """Leader append: index = last + 1, pos = the local write position."""
        return self.append_batch(term, (body,), magic=magic, channel=channel)[0]

    def append_batch(
        self,
        term: int,
        bodies: Iterable[bytes],
        *,
        magic: int = MAGIC_NORMAL,
        channel: int = 0,
    ) -> list[Entry]:
        """Appends several bodies in one term with one data write per file touched."""
        self._check_writable()
        if term < self._last_term:
            raise StoreError(f"term {term} is below the last term {self._last_term}")
        if magic not in ENTRY_MAGICS:
            raise ValueError(f"bad entry magic {magic}")
        if term < 0:
            raise ValueError(f"negative term {term}")
        entries: list[Entry] = []
        index, pos, chain = self._last_index + 1, self._write_pos, self._last_chain
        dfs = self.data_file_size
        for body in bodies:
            if type(body) is not bytes:
                body = bytes(body)
            size = HEADER_SIZE + len(body)
            if size > dfs:
                raise StoreError(f"entry of {size} bytes exceeds data file size")
            off = pos % dfs
            if off + size > dfs:
                pos += dfs - off  # the rest of this file is padding (see _place)
            e = make_entry_unchecked(index, term, pos, body, chain, magic, channel)
            entries.append(e)
            index, pos, chain = index + 1, pos + size, e.chain_crc
        self._persist(entries)
        return entries

    def append_bodies(self, term: int, bodies: Sequence[bytes], magic: int = MAGIC_NORMAL) -> None:
        """`append_batch` for the replication hot path: the same bytes on disk, but no
        Entry objects and the CRC arithmetic kept unsigned (the stored bytes of a signed
        and an unsigned int32 are the same). Batches that would cross into another data
        or index file take the general path."""
        n = len(bodies)
        if not n:
            return
        index, pos = self._last_index + 1, self._write_pos
        dfs, ifs = self.data_file_size, self.index_file_size
        size_all = HEADER_SIZE * n
        for body in bodies:
            if type(body) is not bytes:
                size_all = -1
                break
            size_all += len(body)
        if (
            size_all < 0
            or pos % dfs + size_all > dfs
            or index * INDEX_SIZE % ifs + n * INDEX_SIZE > ifs
            or term < self._last_term
            or magic not in ENTRY_MAGICS
            or not self._opened
            or self._failed is not None
        ):
            self.append_batch(term, bodies, magic=magic)  # checks and raises as usual
            return
        crc32 = zlib.crc32
        chain_pack = _CHAIN_U.pack
        header_pack = _HEADER_U.pack
        index_pack = INDEX.pack
        chain = self._last_chain & 0xFFFFFFFF
        data: list[bytes] = []
        indexes: list[bytes] = []
        at = pos
        for body in bodies:
            blen = len(body)
            size = HEADER_SIZE + blen
            bcrc = crc32(body)
            chain = crc32(chain_pack(chain, magic, size, index, term, at, 0, bcrc, blen))
            data.append(header_pack(magic, size, index, term, at, 0, chain, bcrc, blen))
            data.append(body)
            indexes.append(index_pack(magic, at, size, index, term))
            index += 1
            at += size
        self._write_run(
            pos,
            data,
            indexes,
            index - n,
            term,
            chain - 0x100000000 if chain & 0x80000000 else chain,
        )

    def _write_run(
        self,
        pos: int,
        data: list[bytes],
        indexes: list[bytes],
        first_index: int,
        term: int,
        last_chain: int,
    ) -> None:
        """Writes encoded entries that all fall in one data file and one index file."""
        end = pos + sum(len(b) for b in data)
        if self._zero_job is not None and (
            end > self._zero_range[0]
            or pos // self.data_file_size != self._write_pos // self.data_file_size
        ):
            self._settle_zero()
        created: list[Segment] = []
        touched: list[Segment] = []
        last_index = first_index + len(indexes) - 1
        try:
            self._flush_chunk(pos, data, created, touched)
            base, off = self._index_loc(first_index)
            self._write_index(base, off, indexes, created, touched)
        except DiskError as err:
            raise self._append_failed(err, pos, first_index, last_index, created) from err
        self._appended(
            touched, last_index, term, last_chain, end - len(data[-1]) - HEADER_SIZE, end
        )

    def append_entry(self, entry: Entry) -> Entry:
        """Follower append of the leader's entry; see `append_entries`."""
        return self.append_entries((entry,))[0]

    def append_entries(self, entries: Sequence[Entry]) -> list[Entry]:
        """Follower append: each entry must have index == last + 1, pos == the local
        write position (after padding), a non-decreasing term, a valid bodyCrc and a
        chainCrc continuing the local chain. Raises AppendMismatchError and writes
        nothing otherwise."""
        self._check_writable()
        index, pos, chain, term = (
            self._last_index + 1,
            self._write_pos,
            self._last_chain,
            self._last_term,
        )
        for e in entries:
            if e.index != index:
                raise AppendMismatchError(f"entry index {e.index}, expected {index}")
            if e.size > self.data_file_size:
                raise AppendMismatchError(f"entry {e.index} of {e.size} bytes exceeds file size")
            want = self._place(pos, e.size)
            if e.pos != want:
                raise AppendMismatchError(f"entry {e.index} pos {e.pos}, local position {want}")
            if e.term < term:
                raise AppendMismatchError(f"entry {e.index} term {e.term} below {term}")
            why = e.verify(chain)
            if why is not None:
                raise AppendMismatchError(f"entry {e.index}: {why}")
            index, pos, chain, term = index + 1, want + e.size, e.chain_crc, e.term
        entries = list(entries)
        self._persist(entries)
        return entries

    def _persist(self, entries: list[Entry]) -> None:
        if not entries:
            return
        dfs = self.data_file_size
        old_pos = self._write_pos
        if self._zero_job is not None and (
            entries[-1].pos + entries[-1].size > self._zero_range[0]
            or entries[-1].pos // dfs != old_pos // dfs
        ):
            self._settle_zero()
        created: list[Segment] = []
        touched: list[Segment] = []
        try:
            # Data: one write per file (plus a blank marker when rolling over).
            cur = old_pos
            chunk: list[bytes] = []
            chunk_at = cur
            for e in entries:
                if e.pos != cur or (chunk and e.pos % dfs == 0):  # a new file starts
                    self._flush_chunk(chunk_at, chunk, created, touched)
                    chunk = []
                    rest = dfs - cur % dfs
                    if e.pos != cur and cur % dfs and rest >= BLANK_SIZE:
                        # Pad the rest of the current file.
                        self._flush_chunk(cur, [BLANK.pack(MAGIC_BLANK, rest)], created, touched)
                    chunk_at = e.pos
                chunk.append(encode_header(e))
                chunk.append(e.body)
                cur = e.pos + HEADER_SIZE + len(e.body)
            self._flush_chunk(chunk_at, chunk, created, touched)
            # Index: one write per index file.
            ichunk: list[bytes] = []
            ibase, ioff = self._index_loc(entries[0].index)
            for e in entries:
                b, o = self._index_loc(e.index)
                if b != ibase:
                    self._write_index(ibase, ioff, ichunk, created, touched)
                    ibase, ioff, ichunk = b, o, []
                ichunk.append(encode_index(e))
            self._write_index(ibase, ioff, ichunk, created, touched)
        except DiskError as err:
            raise self._append_failed(
                err, old_pos, entries[0].index, entries[-1].index, created
            ) from err
        last = entries[-1]
        self._appended(
            touched, last.index, last.term, last.chain_crc, last.pos, last.pos + last.size
        )

    def _append_failed(
        self, err: DiskError, old_pos: int, first: int, last: int, created: list[Segment]
    ) -> StoreError:
        """Undoes a failed append and says why (the caller raises it)."""
        self._rollback(old_pos, first, created)
        if isinstance(err, DiskFullError):
            return StoreFullError(
                f"disk full appending entries {first}..{last}: "
                f"{err}; the log still ends at {self._last_index}"
            )
        return StoreError(f"append failed: {err}")

    def _appended(
        self, touched: list[Segment], index: int, term: int, chain: int, pos: int, end: int
    ) -> None:
        """The log now ends with the entry at `pos` (index, term, chainCrc) before `end`."""
        for seg in touched:
            self._dirty[seg.path] = seg
        self._last_index = index
        self._last_term = term
        self._last_chain = chain
        self._write_pos = end
        self._last_pos = pos

    def _flush_chunk(
        self, at: int, chunk: list[bytes], created: list[Segment], touched: list[Segment]
    ) -> None:
        if not chunk:
            return
        start = at - at % self.data_file_size
        seg = self._data.get(start)
        if seg is None:
            seg = self._data_seg(start, create=True)
            assert seg is not None
            created.append(seg)
        touched.append(seg)
        seg.write(at - start, b"".join(chunk) if len(chunk) > 1 else chunk[0])

    def _write_index(
        self,
        base: int,
        off: int,
        chunk: list[bytes],
        created: list[Segment],
        touched: list[Segment],
    ) -> None:
        seg = self._index.get(base)
        if seg is None:
            seg = self._index_seg(base, create=True)
            assert seg is not None
            created.append(seg)
        touched.append(seg)
        seg.write(off, b"".join(chunk) if len(chunk) > 1 else chunk[0])

    def _rollback(self, old_pos: int, first_index: int, created: list[Segment]) -> None:
        """Best effort after a failed append: forget what it wrote (truncate frees blocks)."""
        try:
            self._settle_zero()
        except StoreError:
            pass
        self._zero_end = 0
        try:
            for seg in created:
                for table in (self._data, self._index):
                    for k, v in list(table.items()):
                        if v is seg:
                            del table[k]
                # Settle before unlinking (see _drop); failure here is harmless.
                try:
                    seg.sync()
                except DiskError:
                    pass
                seg.close()
                self.disk.remove(seg.path)
            start = old_pos - old_pos % self.data_file_size
            seg = self._data.get(start)
            if seg is not None:
                seg.truncate(old_pos - start)
                self._dirty[seg.path] = seg
            base, off = self._index_loc(first_index)
            iseg = self._index.get(base)
            if iseg is not None:
                iseg.truncate(off)
                self._dirty[iseg.path] = iseg
        except DiskError as err:
            self._failed = f"rollback after a failed append failed: {err}"

    # --- reads ------------------------------------------------------------------------
    def get(self, index: int) -> Entry:
        """The entry at `index`, verified: bodyCrc, agreement with the index entry, and the
        chainCrc against the previous entry's (when that one is still stored)."""
        if not self._begin <= index <= self._last_index:
            raise EntryNotFoundError(f"index {index} outside [{self._begin}, {self._last_index}]")
        rec = self._read_index(index)
        if rec is None or rec[3] != index:
            raise StoreCorruptError(f"index entry {index} is missing or wrong: {rec}")
        magic, pos, size, _, term = rec
        seg, off = self._data_at(pos, index)
        try:
            e, _ = decode_entry(seg.read(off, size), 0)
        except EntryDecodeError as err:
            raise StoreCorruptError(f"entry {index}: {err}") from err
        if (e.index, e.pos, e.term, e.magic, e.size) != (index, pos, term, magic, size):
            raise StoreCorruptError(f"entry at {pos} does not match index entry {index}: {rec}")
        prev = self._prev_chain(index)
        if prev is not None and e.expected_chain_crc(prev) != e.chain_crc:
            raise StoreCorruptError(f"entry {index}: chainCrc mismatch")
        return e

    def indexes_with_magic(self, magic: int, lo: int | None = None) -> list[int]:
        """Indexes >= `lo` (default begin) of the stored entries whose index entry has
        `magic` (e.g. the rare config entries), found by a strided scan of the index
        files' magic bytes at C speed. Candidates are checked against the full index
        entry; read them with `get()` to verify the data."""
        if not 0 <= magic <= 0xFF:
            raise ValueError(f"magic {magic} cannot be scanned for")
        lo = self._begin if lo is None else max(lo, self._begin)
        hi = self._last_index + 1
        out: list[int] = []
        want = bytes((magic,))
        per_file = self.index_file_size // INDEX_SIZE
        i = lo
        while i < hi:
            base, off = self._index_loc(i)
            n = min(hi - i, per_file - off // INDEX_SIZE)
            seg = self._index_seg(base, create=False)
            if seg is not None:
                # the low byte of each big-endian magic, one per 32-byte entry
                lows = seg.read(off, n * INDEX_SIZE)[3::INDEX_SIZE]
                k = lows.find(want)
                while k >= 0:
                    rec = self._read_index(i + k)
                    if rec is not None and rec[0] == magic and rec[3] == i + k:
                        out.append(i + k)
                    k = lows.find(want, k + 1)
            i += n
        return out

    def _data_at(self, pos: int, index: int) -> tuple[Segment, int]:
        start = pos - pos % self.data_file_size
        seg = self._data.get(start)
        if seg is None:
            raise StoreCorruptError(f"data file {_name(start)} for entry {index} is missing")
        return seg, pos - start

    def _prev_chain(self, index: int) -> int | None:
        if index == 0:
            return 0
        if index == self._begin:
            return self._bprev[1]
        if index - 1 < self._begin:
            return None
        rec = self._read_index(index - 1)
        if rec is None or rec[3] != index - 1:
            return None
        seg, off = self._data_at(rec[1], index - 1)
        return _I32.unpack(seg.read(off + 36, 4))[0]

    def term_at(self, index: int) -> int:
        """The term of entry `index`; also of begin_index - 1 (the snapshot boundary)."""
        if index == self._last_index:
            return self._last_term
        if index == self._begin - 1:
            return self._bprev[0]
        if not self._begin <= index <= self._last_index:
            raise EntryNotFoundError(f"index {index} outside [{self._begin}, {self._last_index}]")
        rec = self._read_index(index)
        if rec is None or rec[3] != index:
            raise StoreCorruptError(f"index entry {index} is missing or wrong: {rec}")
        return rec[4]

    # --- truncation -----------------------------------------------------------------------
    def truncate_suffix(self, from_index: int) -> None:
        """Drops entries >= from_index (a follower's conflict), durably.

        The checkpoint is lowered first (if it covers a dropped entry), then data and
        index are cut and fsynced, so a crash at any point recovers a consistent log that
        never claims a dropped entry as durable."""
        self._check_writable()
        if from_index > self._last_index:
            return
        if from_index < self._begin:
            raise StoreError(f"cannot truncate at {from_index}: log begins at {self._begin}")
        if from_index > self._begin:
            prev = self.get(from_index - 1)
            end, term, chain, last_pos = prev.pos + prev.size, prev.term, prev.chain_crc, prev.pos
        else:
            # Back to an empty log after a prefix reset.
            (term, chain, end), last_pos = self._bprev, 0
        try:
            if self._durable >= from_index:
                if self._ckpt_index < from_index - 1:
                    # lean syncs left index entries below the new checkpoint unsynced
                    self._sync_all()
                if from_index > self._begin:
                    self._write_checkpoint(from_index - 1, last_pos, term, chain, end)
                else:
                    self._write_checkpoint(-1, 0, 0, 0)
                self._durable = from_index - 1
            self._cut_after(end, from_index)
            self._sync_all()
        except DiskError as err:
            self._failed = f"truncate_suffix failed: {err}"
            raise StoreError(f"truncate_suffix({from_index}) failed: {err}") from err
        self._last_index = from_index - 1
        self._last_term = term
        self._last_chain = chain
        self._last_pos = last_pos
        self._write_pos = end

    def boundary(self, index: int) -> tuple[int, int, int]:
        """(term, chainCrc, end offset) of entry `index` (or of begin_index - 1): what a
        snapshot ending at `index` must carry so a follower can `reset_prefix` to it."""
        if index == self._begin - 1:
            return self._bprev
        e = self.get(index)
        return (e.term, e.chain_crc, e.pos + e.size)

    def reset_prefix(self, before_index: int, *, prev: tuple[int, int, int] | None = None) -> None:
        """Snapshot hook: entries < before_index are no longer needed.

        Without `prev` (compaction after a local snapshot): records the new begin index
        durably (checkpoint) and deletes data and index files holding only entries below
        it; `before_index` may not exceed last_index + 1.

        With `prev` = the leader's `boundary(before_index - 1)` (InstallSnapshot): if the
        local entry before_index - 1 matches it, the same as above; otherwise (a conflict,
        or the snapshot is beyond the local log) the whole log is discarded and the next
        entry is expected at index before_index, right after `prev`'s end offset."""
        self._check_writable()
        if prev is not None and not self._matches(before_index - 1, prev):
            self._discard_all(before_index, prev)
            return
        if before_index <= self._begin:
            return
        if before_index > self._last_index + 1:
            raise StoreError(
                f"reset_prefix({before_index}) beyond last index {self._last_index} needs prev"
            )
        self.sync()
        p = self.get(before_index - 1)
        self._begin = before_index
        self._bprev = (p.term, p.chain_crc, p.pos + p.size)
        if self._last_index >= before_index:
            le = self.get(self._last_index)
            self._write_checkpoint(le.index, le.pos, le.term, le.chain_crc, le.pos + le.size)
        else:
            self._write_checkpoint(-1, 0, 0, 0)
        # Drop whole data files whose successor starts at or below before_index.
        starts = sorted(self._data)
        doomed: set[int] = set()
        for s, nxt in itertools.pairwise(starts):
            fi = self._first_entry_index(nxt)
            if fi is None or fi > before_index:
                break
            doomed.add(s)
        keep_base = self._index_loc(before_index)[0]
        removed = self._drop(self._data, doomed.__contains__)
        removed |= self._drop(self._index, lambda b: b < keep_base)
        if removed:
            self.disk.sync_dir(self.data_dir)
            self.disk.sync_dir(self.index_dir)

    def _matches(self, index: int, prev: tuple[int, int, int]) -> bool:
        if index < self._begin - 1 or index > self._last_index:
            return False
        try:
            return self.boundary(index) == tuple(prev)
        except EntryNotFoundError:
            return False

    def _discard_all(self, before_index: int, prev: tuple[int, int, int]) -> None:
        term, chain, end = prev
        if before_index < 1 or end < 0 or term < 0:
            raise StoreError(f"bad snapshot boundary {before_index} {prev}")
        # New begin first (durable), then the files: a crash in between recovers an
        # empty log at before_index (old entries no longer chain to `prev`).
        self._begin = before_index
        self._bprev = (term, chain, end)
        self._durable = before_index - 1
        self._write_checkpoint(-1, 0, 0, 0)
        self._drop(self._data, lambda _s: True)
        self._drop(self._index, lambda _b: True)
        self.disk.sync_dir(self.data_dir)
        self.disk.sync_dir(self.index_dir)
        self._last_index = before_index - 1
        self._last_term, self._last_chain, self._write_pos = term, chain, end
        self._last_pos = 0

    # --- durability -----------------------------------------------------------------------
    def _sync_all(self) -> None:
        dirty = list(self._dirty.values())
        for seg in dirty:
            if not seg.closed:
                seg.sync()
        self._dirty.clear()

    def sync(self, *, full: bool = True) -> int:
        """fsyncs data then index, then checkpoints; returns the new durable index.

        ``full=False`` (the replication hot path) fsyncs only the data files: usually one
        fdatasync instead of three. The entries are durable all the same: recovery scans
        the data after the checkpoint, verifies it and rewrites the index entries from
        it. The index files and the checkpoint catch up in the next full sync, which a
        lean one does itself once `LAZY_CHECKPOINT_BYTES` or `LAZY_CHECKPOINT_ENTRIES`
        piled up since the checkpoint, so recovery never has much to scan."""
        self._check_writable()
        last = self._last_index
        if self._durable == last and not self._dirty:
            if self.zero_ahead:
                self._zero_ahead()
            return self._durable
        if not full and (
            self._write_pos - self._ckpt_end < LAZY_CHECKPOINT_BYTES
            and last - self._ckpt_index < LAZY_CHECKPOINT_ENTRIES
        ):
            data_dir = self.data_dir
            try:
                for path, seg in list(self._dirty.items()):
                    if path.startswith(data_dir):
                        if not seg.closed:
                            seg.sync()
                        del self._dirty[path]
            except DiskError as err:
                self._failed = f"sync failed: {err}"
                raise StoreError(f"sync failed, store must be reopened: {err}") from err
            self._durable = last
            if self.zero_ahead:
                self._zero_ahead()
            return last
        try:
            self._sync_all()
            if self._last_index >= self._begin and self._ckpt_index != self._last_index:
                self._write_checkpoint(
                    self._last_index,
                    self._last_pos,
                    self._last_term,
                    self._last_chain,
                    self._write_pos,
                )
        except DiskError as err:
            # After a failed fsync the page cache state is unknown (fsyncgate): stop.
            self._failed = f"sync failed: {err}"
            raise StoreError(f"sync failed, store must be reopened: {err}") from err
        self._durable = self._last_index
        if self.zero_ahead:
            self._zero_ahead()
        return self._durable

    # --- zero-fill ahead -----------------------------------------------------------------
    def _settle_zero(self) -> None:
        """Waits for a running zero-fill job and takes in its result."""
        job = self._zero_job
        if job is None:
            return
        self._zero_job = None
        try:
            job.result()
        except DiskFullError:
            self.zero_ahead = 0  # no room to fill ahead: writes allocate as they go
            return
        except DiskError as err:
            # its fdatasync may have taken the error meant for the writer's (fsyncgate)
            self._failed = f"zero fill failed: {err}"
            raise StoreError(f"zero fill failed, store must be reopened: {err}") from err
        self._zero_end = self._zero_range[1]

    def _zero_ahead(self) -> None:
        """Called after a sync: when less than half the window of zeros is left ahead of
        the write position, fills the next stretch (to the window's end, within the
        current data file) in a background thread. The writer waits for the job only
        if it catches up with it (see `_persist`)."""
        job = self._zero_job
        if job is not None:
            if not job.done():
                return
            self._settle_zero()
        wp = self._write_pos
        window = self.zero_ahead
        if not window or self._zero_end - wp >= window // 2:
            return
        dfs = self.data_file_size
        fstart = wp - wp % dfs
        lo = max(self._zero_end, -(-wp // _PAGE) * _PAGE)
        hi = min(wp + window, fstart + dfs)
        if lo >= hi or lo < fstart:
            return
        seg = self._data.get(fstart)
        if seg is None or seg.closed:
            return
        if self._zero_pool is None:
            self._zero_pool = ThreadPoolExecutor(1, thread_name_prefix="dledger-zero-fill")
        self._zero_range = (lo, hi)
        self._zero_job = self._zero_pool.submit(seg.zero_fill, lo - fstart, hi - lo)

    def close(self) -> None:
        try:
            self._settle_zero()
        except StoreError:
            pass
        if self._zero_pool is not None:
            self._zero_pool.shutdown(wait=True)
            self._zero_pool = None
        self._zero_end = 0
        for seg in [*self._data.values(), *self._index.values()]:
            seg.close()
        if self._ckpt_seg is not None:
            self._ckpt_seg.close()
            self._ckpt_seg = None
        self._data.clear()
        self._index.clear()
        self._dirty.clear()
        self._opened = False


class HardStateFile:
    """Raft hard state in ``<root>/currterm`` (properties: currTerm, voteLeader,
    committedIndex), replaced atomically: tmp, fsync, rename, fsync of the directory."""

    def __init__(self, disk: Disk, path: str) -> None:
        self.disk = disk
        self.path = path
        self.term = 0
        self.vote = ""
        self.commit_index = -1

    @classmethod
    def for_store(cls, store: EntryStore) -> HardStateFile:
        return cls(store.disk, f"{store.root}/currterm")

    def load(self) -> HardStateFile:
        raw = self.disk.read_file(self.path)
        if raw is None:
            return self
        props: dict[str, str] = {}
        for line in raw.decode("utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            props[k.strip()] = v.strip()
        try:
            self.term = int(props.get("currTerm", "0"))
            self.vote = props.get("voteLeader", "")
            self.commit_index = int(props.get("committedIndex", "-1"))
        except ValueError as err:
            raise StoreError(f"{self.path}: bad hard state: {err}") from err
        return self

    def save(self, term: int, vote: str, commit_index: int | None = None) -> None:
        if commit_index is None:
            commit_index = self.commit_index
        if "\n" in vote or "=" in vote:
            raise ValueError(f"bad voteLeader {vote!r}")
        data = f"currTerm={term}\nvoteLeader={vote}\ncommittedIndex={commit_index}\n"
        self.disk.replace_file(self.path, data.encode("utf-8"))
        self.term, self.vote, self.commit_index = term, vote, commit_index
