"""DLedger data and index entry layouts (PROTOCOL.md §5.1), with CRCs that are checked.

Pure: no I/O. All integers are big-endian (Java's ByteBuffer order).

Data entry, 48-byte header then the body::

    0  magic    int32   1 normal, 2 NOOP, 3 config, -1 blank padding at a file's end
    4  size     int32   48 + bodyLen
    8  index    int64
    16 term     int64
    24 pos      int64   physical offset of this header in the log (same on every replica)
    32 channel  int32
    36 chainCrc int32
    40 bodyCrc  int32
    44 bodyLen  int32
    48 body

Blank padding is just `magic=-1, size=<bytes to the end of the file>` (8 bytes); it is
only written when at least 8 bytes remain.

Index entry, 32 bytes: `magic int32 | pos int64 | size int32 | index int64 | term int64`.

CRCs (DLedger leaves both 0; here both are computed and verified), as *signed* int32
values of `zlib.crc32` (reinterpret the unsigned 32-bit result as two's complement):

* ``bodyCrc  = crc32(body)``
* ``chainCrc = crc32(pack(">iiiqqqiii", prevChainCrc, magic, size, index, term, pos,
  channel, bodyCrc, bodyLen))`` -- i.e. the previous entry's chainCrc (4 bytes,
  big-endian) followed by this entry's whole 48-byte header with the chainCrc field
  (bytes 36..39) left out. ``prevChainCrc`` is 0 for the entry at index 0.

So every header byte is covered, the body is covered through bodyCrc, and the chain
ties each entry to the whole history before it: two replicas whose entry *i* has the
same chainCrc hold (with CRC-32 confidence) the same log up to *i*, including `pos`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

MAGIC_NORMAL = 1
MAGIC_NOOP = 2
MAGIC_CONFIG = 3
MAGIC_BLANK = -1
ENTRY_MAGICS = frozenset({MAGIC_NORMAL, MAGIC_NOOP, MAGIC_CONFIG})

HEADER = struct.Struct(">iiqqqiiii")
HEADER_SIZE = HEADER.size  # 48
INDEX = struct.Struct(">iqiqq")
INDEX_SIZE = INDEX.size  # 32
BLANK = struct.Struct(">ii")
BLANK_SIZE = BLANK.size  # 8
_CHAIN = struct.Struct(">iiiqqqiii")
_I32 = struct.Struct(">i")

MAX_ENTRY_SIZE = 0x7FFFFFFF
MAX_BODY_SIZE = MAX_ENTRY_SIZE - HEADER_SIZE

assert HEADER_SIZE == 48 and INDEX_SIZE == 32


class EntryDecodeError(ValueError):
    """Bytes that are not a valid entry; `pos` is where the entry was expected."""

    def __init__(self, message: str, *, pos: int = 0) -> None:
        super().__init__(f"{message} (at {pos})")
        self.pos = pos


def _s32(v: int) -> int:
    return v - 0x100000000 if v & 0x80000000 else v


def body_crc(body: bytes | bytearray | memoryview) -> int:
    """bodyCrc as stored: zlib.crc32 of the body as a signed int32."""
    return _s32(zlib.crc32(body))


def chain_crc(
    prev_chain_crc: int,
    magic: int,
    size: int,
    index: int,
    term: int,
    pos: int,
    channel: int,
    bcrc: int,
    body_len: int,
) -> int:
    """chainCrc as stored (see the module doc)."""
    return _s32(
        zlib.crc32(
            _CHAIN.pack(prev_chain_crc, magic, size, index, term, pos, channel, bcrc, body_len)
        )
    )


# Not frozen: a frozen dataclass pays an object.__setattr__ per field when built, and
# one is built per appended entry on every replica. Never mutate one: logs and caches
# share them.
@dataclass(slots=True)
class Entry:
    index: int
    term: int
    pos: int
    body: bytes
    magic: int = MAGIC_NORMAL
    channel: int = 0
    chain_crc: int = 0
    body_crc: int = 0

    @property
    def size(self) -> int:
        return HEADER_SIZE + len(self.body)

    def expected_chain_crc(self, prev_chain_crc: int) -> int:
        return chain_crc(
            prev_chain_crc,
            self.magic,
            self.size,
            self.index,
            self.term,
            self.pos,
            self.channel,
            self.body_crc,
            len(self.body),
        )

    def verify(self, prev_chain_crc: int | None = None) -> str | None:
        """None if the CRCs hold (the chain only when `prev_chain_crc` is given), else why."""
        if body_crc(self.body) != self.body_crc:
            return "bodyCrc mismatch"
        if prev_chain_crc is not None and self.expected_chain_crc(prev_chain_crc) != self.chain_crc:
            return "chainCrc mismatch"
        return None


def make_entry(
    *,
    index: int,
    term: int,
    pos: int,
    body: bytes,
    prev_chain_crc: int,
    magic: int = MAGIC_NORMAL,
    channel: int = 0,
) -> Entry:
    """An Entry with both CRCs computed."""
    if magic not in ENTRY_MAGICS:
        raise ValueError(f"bad entry magic {magic}")
    if len(body) > MAX_BODY_SIZE:
        raise ValueError(f"body of {len(body)} bytes is too large")
    if index < 0 or term < 0 or pos < 0:
        raise ValueError(f"negative index/term/pos: {index}/{term}/{pos}")
    body = bytes(body)
    bcrc = body_crc(body)
    ccrc = chain_crc(
        prev_chain_crc, magic, HEADER_SIZE + len(body), index, term, pos, channel, bcrc, len(body)
    )
    return Entry(index, term, pos, body, magic, channel, ccrc, bcrc)


def make_entry_unchecked(
    index: int, term: int, pos: int, body: bytes, prev_chain_crc: int, magic: int, channel: int
) -> Entry:
    """`make_entry` for batches on the hot path: positional, and the caller has checked
    what make_entry checks (magic, sizes, non-negative numbers; `body` is bytes)."""
    blen = len(body)
    bcrc = zlib.crc32(body)
    if bcrc & 0x80000000:
        bcrc -= 0x100000000
    ccrc = zlib.crc32(
        _CHAIN.pack(
            prev_chain_crc, magic, HEADER_SIZE + blen, index, term, pos, channel, bcrc, blen
        )
    )
    if ccrc & 0x80000000:
        ccrc -= 0x100000000
    return Entry(index, term, pos, body, magic, channel, ccrc, bcrc)


def encode_header(entry: Entry) -> bytes:
    """The entry's 48 header bytes (`encode` = these + the body)."""
    blen = len(entry.body)
    return HEADER.pack(
        entry.magic,
        HEADER_SIZE + blen,
        entry.index,
        entry.term,
        entry.pos,
        entry.channel,
        entry.chain_crc,
        entry.body_crc,
        blen,
    )


def encode(entry: Entry) -> bytes:
    """The entry's bytes, with the CRC fields exactly as held by `entry`."""
    return (
        HEADER.pack(
            entry.magic,
            entry.size,
            entry.index,
            entry.term,
            entry.pos,
            entry.channel,
            entry.chain_crc,
            entry.body_crc,
            len(entry.body),
        )
        + entry.body
    )


def encode_entry(
    *,
    index: int,
    term: int,
    pos: int,
    body: bytes,
    prev_chain_crc: int,
    magic: int = MAGIC_NORMAL,
    channel: int = 0,
) -> bytes:
    return encode(
        make_entry(
            index=index,
            term=term,
            pos=pos,
            body=body,
            prev_chain_crc=prev_chain_crc,
            magic=magic,
            channel=channel,
        )
    )


def peek_magic(buf: Any, pos: int) -> int | None:
    """The magic at `pos`, or None if fewer than 4 bytes remain."""
    if pos < 0 or pos + 4 > len(buf):
        return None
    return _I32.unpack_from(buf, pos)[0]


def decode_entry(buf: Any, pos: int = 0, *, prev_chain_crc: int | None = None) -> tuple[Entry, int]:
    """Decodes and verifies the entry at `pos`; returns it and the offset after it.

    `buf` is bytes, bytearray, memoryview or mmap. bodyCrc is always verified; the
    chainCrc when `prev_chain_crc` is given. Anything else raises EntryDecodeError
    (including blank padding, which is not an entry).
    """
    n = len(buf)
    if pos < 0 or pos + HEADER_SIZE > n:
        raise EntryDecodeError(f"truncated header: {max(0, n - pos)} of 48 bytes", pos=pos)
    magic, size, index, term, epos, channel, ccrc, bcrc, blen = HEADER.unpack_from(buf, pos)
    if magic not in ENTRY_MAGICS:
        what = "blank padding" if magic == MAGIC_BLANK else f"bad magic {magic}"
        raise EntryDecodeError(what, pos=pos)
    if blen < 0 or size != HEADER_SIZE + blen:
        raise EntryDecodeError(f"size {size} != 48 + bodyLen {blen}", pos=pos)
    if index < 0 or term < 0 or epos < 0:
        raise EntryDecodeError(f"negative index/term/pos {index}/{term}/{epos}", pos=pos)
    end = pos + size
    if end > n:
        raise EntryDecodeError(f"truncated body: {n - pos - HEADER_SIZE} of {blen} bytes", pos=pos)
    body = bytes(buf[pos + HEADER_SIZE : end])
    entry = Entry(index, term, epos, body, magic, channel, ccrc, bcrc)
    why = entry.verify(prev_chain_crc)
    if why is not None:
        raise EntryDecodeError(f"{why} in entry {index}", pos=pos)
    return entry, end


def encode_index(entry: Entry) -> bytes:
    return INDEX.pack(entry.magic, entry.pos, entry.size, entry.index, entry.term)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    magic: int
    pos: int
    size: int
    index: int
    term: int


def decode_index(buf: Any, pos: int = 0) -> IndexEntry:
    """Decodes a 32-byte index entry; EntryDecodeError if it cannot describe an entry."""
    if pos < 0 or pos + INDEX_SIZE > len(buf):
        raise EntryDecodeError("truncated index entry", pos=pos)
    magic, epos, size, index, term = INDEX.unpack_from(buf, pos)
    if magic not in ENTRY_MAGICS or size < HEADER_SIZE or epos < 0 or index < 0 or term < 0:
        raise EntryDecodeError(f"bad index entry {(magic, epos, size, index, term)}", pos=pos)
    return IndexEntry(magic, epos, size, index, term)
