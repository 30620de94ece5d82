"""DLedger entry codec: layout, CRCs, and decoding arbitrary bytes safely."""

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgermq.dledger.store.entry_codec import (
    HEADER_SIZE,
    INDEX_SIZE,
    MAGIC_NOOP,
    MAGIC_NORMAL,
    EntryDecodeError,
    chain_crc,
    decode_entry,
    decode_index,
    encode,
    encode_entry,
    encode_index,
    make_entry,
)


def test_layout_matches_protocol():
    raw = encode_entry(index=7, term=3, pos=4096, body=b"hello", prev_chain_crc=0, channel=5)
    assert len(raw) == HEADER_SIZE + 5 and HEADER_SIZE == 48
    magic, size, index, term, pos, channel, ccrc, bcrc, blen = struct.unpack(">iiqqqiiii", raw[:48])
    assert (magic, size, index, term, pos, channel, blen) == (1, 53, 7, 3, 4096, 5, 5)
    assert bcrc == struct.unpack(">i", struct.pack(">I", zlib.crc32(b"hello")))[0]
    want_chain = zlib.crc32(struct.pack(">iiiqqqiii", 0, 1, 53, 7, 3, 4096, 5, bcrc, 5))
    assert ccrc == struct.unpack(">i", struct.pack(">I", want_chain))[0]
    assert raw[48:] == b"hello"


def test_index_layout():
    e = make_entry(index=9, term=2, pos=123, body=b"x" * 10, prev_chain_crc=0)
    raw = encode_index(e)
    assert len(raw) == INDEX_SIZE == 32
    assert struct.unpack(">iqiqq", raw) == (1, 123, 58, 9, 2)
    assert decode_index(raw).pos == 123
    with pytest.raises(EntryDecodeError):
        decode_index(bytes(32))


def test_round_trip_and_chain():
    a = make_entry(index=0, term=1, pos=0, body=b"a", prev_chain_crc=0)
    b = make_entry(index=1, term=1, pos=a.size, body=b"bb", prev_chain_crc=a.chain_crc)
    buf = encode(a) + encode(b)
    got_a, nxt = decode_entry(buf, 0, prev_chain_crc=0)
    got_b, end = decode_entry(buf, nxt, prev_chain_crc=got_a.chain_crc)
    assert (got_a, got_b, end) == (a, b, len(buf))
    with pytest.raises(EntryDecodeError, match="chainCrc"):
        decode_entry(buf, nxt, prev_chain_crc=a.chain_crc ^ 1)
    assert b.chain_crc == chain_crc(a.chain_crc, 1, b.size, 1, 1, a.size, 0, b.body_crc, 2)


@pytest.mark.parametrize("offset", [0, 4, 8, 16, 24, 32, 40, 44, 48, 52])
def test_every_bit_flip_is_detected(offset):
    e = make_entry(index=3, term=2, pos=0, body=b"body-data", prev_chain_crc=77)
    raw = bytearray(encode(e))
    for bit in range(8):
        flipped = bytearray(raw)
        flipped[offset] ^= 1 << bit
        with pytest.raises(EntryDecodeError):
            decode_entry(bytes(flipped), 0, prev_chain_crc=77)


def test_clear_errors():
    e = encode_entry(index=1, term=1, pos=0, body=b"abc", prev_chain_crc=0, magic=MAGIC_NOOP)
    with pytest.raises(EntryDecodeError, match="truncated header"):
        decode_entry(e[:20])
    with pytest.raises(EntryDecodeError, match="truncated body"):
        decode_entry(e[:-1])
    with pytest.raises(EntryDecodeError, match="blank padding"):
        decode_entry(struct.pack(">ii", -1, 100) + bytes(60))
    with pytest.raises(EntryDecodeError, match="bad magic 0"):
        decode_entry(bytes(64))
    with pytest.raises(ValueError):
        make_entry(index=-1, term=0, pos=0, body=b"", prev_chain_crc=0)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=-2, max_value=310))
def test_random_bytes_only_raise_decode_error(data, pos):
    try:
        _e, end = decode_entry(data, pos)
    except EntryDecodeError:
        return
    assert pos + HEADER_SIZE <= end <= len(data)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1),
    st.binary(max_size=200),
    st.sampled_from([1, 2, 3]),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.binary(max_size=20),
)
def test_round_trip_property(index, term, pos, body, magic, channel, prev, prefix):
    e = make_entry(
        index=index,
        term=term,
        pos=pos,
        body=body,
        prev_chain_crc=prev,
        magic=magic,
        channel=channel,
    )
    got, end = decode_entry(prefix + encode(e) + b"tail", len(prefix), prev_chain_crc=prev)
    assert got == e and end == len(prefix) + e.size
    assert got.magic == magic and MAGIC_NORMAL == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.data())
def test_mutations_of_valid_entries_never_crash(body, data):
    raw = bytearray(encode_entry(index=5, term=5, pos=5, body=body, prev_chain_crc=1))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255).filter(lambda v: v != raw[i]))
    with pytest.raises(EntryDecodeError):
        decode_entry(bytes(raw), 0, prev_chain_crc=1)


def test_codec_is_pure():
    import ast
    from pathlib import Path

    import ledgermq.dledger.store.entry_codec as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    assert not names & {"os", "io", "asyncio", "socket", "time", "random", "mmap", "ledgermq"}
