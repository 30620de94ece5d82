"""DLedger wire bodies: round trips (hypothesis), fuzzed garbage gives BodyError only."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgermq.dledger import kv
from ledgermq.dledger.core.types import (
    ENTRY_CONFIG,
    ENTRY_NOOP,
    ENTRY_NORMAL,
    ConfState,
    Entry,
    Message,
    MsgType,
    SnapshotMeta,
)
from ledgermq.dledger.protocol import (
    RAFT_CODE,
    RAFT_HEAD,
    BodyError,
    LogEntry,
    RequestCode,
    SnapshotChunk,
    decode_append_reply,
    decode_append_request,
    decode_get_reply,
    decode_install_snapshot,
    decode_metadata,
    decode_raft,
    encode_append_reply,
    encode_append_request,
    encode_get_reply,
    encode_install_snapshot,
    encode_metadata,
    encode_raft,
    format_peers,
    parse_peers,
)

u63 = st.integers(min_value=0, max_value=(1 << 63) - 1)
data = st.binary(max_size=300)

kinds = st.sampled_from([ENTRY_NORMAL, ENTRY_NOOP, ENTRY_CONFIG])
entries = st.lists(st.builds(Entry, u63, u63, data, kinds), max_size=8)
names = st.lists(st.text(min_size=1, max_size=8), max_size=4, unique=True)
metas = st.builds(
    SnapshotMeta,
    u63,
    u63,
    st.builds(lambda v, ln: ConfState(tuple(v), tuple(ln)), names, names),
)
messages = st.builds(
    Message,
    st.sampled_from(list(MsgType)),
    st.just("n0"),
    st.just("n1"),
    u63,
    index=u63,
    log_term=u63,
    entries=entries.map(tuple),
    commit=u63,
    reject=st.booleans(),
    hint_index=u63,
    hint_term=u63,
    force=st.booleans(),
    context=u63,
    snapshot=st.one_of(st.none(), metas),
    data=st.one_of(st.just(b""), data),
    offset=st.one_of(st.just(0), u63),
    done=st.booleans(),
    checksum=st.integers(min_value=0, max_value=(1 << 32) - 1),
)


@given(messages)
def test_raft_message_round_trip(m):
    body = encode_raft(m)
    assert decode_raft(body, "n0", "n1", RAFT_CODE[m.type]) == m


def test_raft_codes_follow_dledger():
    assert RAFT_CODE[MsgType.APPEND] == RequestCode.PUSH == 51004
    assert RAFT_CODE[MsgType.PRE_VOTE] == RAFT_CODE[MsgType.VOTE] == RequestCode.VOTE == 51001
    assert RAFT_CODE[MsgType.HEARTBEAT] == RequestCode.HEART_BEAT == 51002
    assert RAFT_CODE[MsgType.TIMEOUT_NOW] == RequestCode.LEADERSHIP_TRANSFER == 51005
    assert RAFT_CODE[MsgType.INSTALL_SNAPSHOT] == RequestCode.INSTALL_SNAPSHOT == 51006
    assert RAFT_HEAD.size == 62


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_raft_garbage_gives_body_error(raw):
    try:
        decode_raft(raw, "a", "b")
    except BodyError:
        pass


@given(messages, st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=4))
def test_raft_truncated_or_extended_is_rejected(m, cut, extra):
    body = encode_raft(m)
    if cut < len(body):
        with pytest.raises(BodyError):
            decode_raft(body[:cut], "n0", "n1")
    with pytest.raises(BodyError, match="trailing"):
        decode_raft(body + extra, "n0", "n1")


def test_raft_errors_name_the_problem():
    m = Message(MsgType.APPEND, "n0", "n1", 3, entries=(Entry(1, 3, b"abc"),))
    body = encode_raft(m)
    with pytest.raises(BodyError, match="does not travel on code"):
        decode_raft(body, "n0", "n1", RequestCode.VOTE)
    with pytest.raises(BodyError, match="unknown raft message type 99"):
        decode_raft(b"\x63" + body[1:], "n0", "n1")
    with pytest.raises(BodyError, match="claims 3 data bytes"):
        decode_raft(body[:-1], "n0", "n1")
    bad_kind = bytearray(body)
    bad_kind[RAFT_HEAD.size + 16] = 7
    with pytest.raises(BodyError, match="unknown kind 7"):
        decode_raft(bytes(bad_kind), "n0", "n1")


@given(st.lists(data, min_size=1, max_size=20))
def test_append_request_round_trip(bodies):
    assert decode_append_request(encode_append_request(bodies)) == bodies


@given(st.binary(max_size=100))
def test_append_request_garbage(raw):
    try:
        decode_append_request(raw)
    except BodyError:
        pass


def test_append_request_errors():
    with pytest.raises(BodyError, match="no entries"):
        decode_append_request(struct.pack(">I", 0))
    with pytest.raises(BodyError, match="no entry count"):
        decode_append_request(b"\0")
    with pytest.raises(BodyError, match="claims 5 bytes"):
        decode_append_request(struct.pack(">II", 1, 5) + b"abc")


@given(u63, st.integers(min_value=0, max_value=1000))
def test_append_reply_round_trip(first, count):
    assert decode_append_reply(encode_append_reply(first, count)) == list(
        range(first, first + count)
    )


@given(st.lists(st.builds(LogEntry, u63, u63, data, kinds), max_size=10))
def test_get_reply_round_trip(es):
    assert decode_get_reply(encode_get_reply(es)) == es


@given(st.binary(max_size=100))
def test_get_reply_garbage(raw):
    try:
        decode_get_reply(raw)
    except BodyError:
        pass


@given(u63, u63, st.binary(max_size=500))
def test_snapshot_round_trip_and_crc(index, term, payload):
    s = SnapshotChunk(index, term, payload)
    body = encode_install_snapshot(s)
    assert decode_install_snapshot(body) == s
    if payload:
        flipped = body[:-1] + bytes([body[-1] ^ 1])
        with pytest.raises(BodyError, match="crc32"):
            decode_install_snapshot(flipped)


def test_metadata_round_trip_and_errors():
    meta = {"group": "g", "leaderId": "n1", "term": 3, "peers": {"n0": "h:1"}}
    assert decode_metadata(encode_metadata(meta)) == meta
    with pytest.raises(BodyError, match="not JSON"):
        decode_metadata(b"{nope")
    with pytest.raises(BodyError, match="not a JSON object"):
        decode_metadata(b"[1]")


def test_parse_peers():
    text = "n0-127.0.0.1:40911;n1-127.0.0.1:40912; n2-localhost:40913"
    peers = parse_peers(text)
    assert peers == {"n0": "127.0.0.1:40911", "n1": "127.0.0.1:40912", "n2": "localhost:40913"}
    assert parse_peers(format_peers(peers)) == peers
    for bad in ("", "n0", "n0-host", "n0-host:x", "n0-h:1;n0-h:2"):
        with pytest.raises(ValueError):
            parse_peers(bad)


kv_commands = st.builds(
    kv.KVCommand,
    st.sampled_from([kv.OP_PUT, kv.OP_GET, kv.OP_CAS, kv.OP_DELETE]),
    st.binary(max_size=50),
    data,
    data,
    st.booleans(),
)


@given(kv_commands)
def test_kv_command_round_trip(c):
    assert kv.decode_command(kv.encode_command(c)) == c


@given(st.booleans(), st.one_of(st.none(), data))
def test_kv_result_round_trip(ok, value):
    r = kv.KVResult(ok, value is not None, value)
    assert kv.decode_result(kv.encode_result(r)) == r


@given(st.binary(max_size=60))
def test_kv_garbage(raw):
    try:
        kv.decode_command(raw)
    except BodyError:
        pass


@given(st.lists(st.tuples(st.binary(max_size=20), data), max_size=10))
def test_kv_state_machine_snapshot_restore(pairs):
    sm = kv.KVStateMachine()
    for i, (k, v) in enumerate(pairs):
        sm.apply(i, kv.encode_command(kv.KVCommand(kv.OP_PUT, k, v)))
    other = kv.KVStateMachine()
    other.restore(sm.snapshot())
    assert other.data == sm.data == dict(pairs)
