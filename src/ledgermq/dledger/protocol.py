"""DLedger request and response bodies on the RocketMQ remoting transport (pure, no I/O).

DLedger's codes (PROTOCOL.md 5.2) travel as remoting commands. The header's extFields
carry the addressing (``group``, ``remoteId`` = the member asked, ``localId`` = the
sender) and small arguments; bodies on the hot path are compact binary with the
precompiled `struct` layouts below (big-endian), instead of DLedger's base64 JSON.

Result codes. A reply's remoting ``code`` *is* the DLedger code (200 SUCCESS, 404
NOT_LEADER, ...; `Code`), ``remark`` says why in words, and extFields carry ``leaderId``,
``leaderAddr`` and ``term`` when known (a NOT_LEADER reply names where to go). DLedger
itself always answers remoting code 0 and hides its code in the JSON body; one number
is simpler for every client.

Index numbering. Everything a client sees (APPEND replies, GET, METADATA) uses DLedger's
0-based indexes: the first entry is 0, an empty log ends at -1. Peer (Raft) messages carry
the Raft core's 1-based positions, where 0 means "before the first entry"
(``dledger_index = raft_index - 1``).

Raft messages. Every message between members is a *oneway* request (the reply is itself
a Raft message travelling the other way); a request that expects a reply on the same
codes is a client request (only LEADERSHIP_TRANSFER has both):

    VOTE 51001                  PRE_VOTE, PRE_VOTE_RESP, VOTE, VOTE_RESP
    HEART_BEAT 51002            HEARTBEAT, HEARTBEAT_RESP
    PUSH 51004                  APPEND, APPEND_RESP
    LEADERSHIP_TRANSFER 51005   TIMEOUT_NOW (the leader tells the transferee to campaign)
    INSTALL_SNAPSHOT 51006      INSTALL_SNAPSHOT, INSTALL_SNAPSHOT_RESP (chunks)

Raft body (``RAFT_HEAD``, 62 bytes, then ``n`` entries, then the snapshot tail if flag 4)::

    type u8 | flags u8 (1 reject, 2 force, 4 tail, 8 done, 16 meta) | term q | index q
    | log_term q | commit q | hint_index q | hint_term q | context q | n u32

Entry (``ENTRY_HEAD``, 21 bytes, then the data)::

    index q | term q | kind u8 (1 normal, 2 NOOP, 3 config) | length u32 | data

Snapshot tail (``SNAP_TAIL``, 36 bytes; snapshot chunks and their answers)::

    meta_index q | meta_term q | offset q | checksum u32 | data_len u32 | voters u16
    | learners u16, then each member id as len u16 + UTF-8, then (flag 16: a meta is
    present) the meta's context as len u16 + bytes (for the DLedger store: the store
    boundary of the snapshot's last entry and the members' addresses, snapshot.py),
    then the chunk's data

Client bodies:

    APPEND request    count u32, then per entry: length u32 | bytes
    APPEND reply      first_index q | count u32   (the batch is contiguous)
    GET request       extFields ``index`` (0-based), optional ``count`` (default 1)
    GET reply         count u32, then entries (ENTRY_HEAD, 0-based index)
    METADATA reply    JSON object (not on the hot path)
    INSTALL_SNAPSHOT  as a client request (not oneway): last_index q | last_term q
                      | crc32 u32 | data; servers answer 303 UNSUPPORTED for now
    CHANGE_MEMBERSHIP 51007 (ours; DLedger has no membership change): extFields
                      ``changeType`` (add-learner | add-voter | promote | remove),
                      ``nodeId``, ``address`` (host:port, for the two adds); empty
                      body. Served by the leader (others answer 404 with the leader);
                      the reply (once the change is committed and applied on the
                      leader) is JSON {"index": 0-based index of the config entry,
                      "voters": [...], "learners": [...], "peers": {id: address}}.
                      504 ILLEGAL_MEMBER_STATE for a change that does not fit the
                      configuration, 505 LEADER_NOT_READY while another change is
                      not committed yet, 417 FALL_BEHIND_TOO_MUCH for a promotion of
                      a learner that does not catch up.
    USER_DEFINE       extFields ``requestTypeCode``; the body belongs to the state machine

Malformed bodies raise `BodyError` (a ValueError) that names what is wrong.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

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


class RequestCode(IntEnum):
    METADATA = 50000
    APPEND = 50001
    GET = 50002
    VOTE = 51001
    HEART_BEAT = 51002
    PULL = 51003
    PUSH = 51004
    LEADERSHIP_TRANSFER = 51005
    INSTALL_SNAPSHOT = 51006
    CHANGE_MEMBERSHIP = 51007  # ours: see the module doc
    USER_DEFINE = 59999


class Code(IntEnum):
    """DLedgerResponseCode (PROTOCOL.md 5.2)."""

    UNKNOWN = -1
    SUCCESS = 200
    TIMEOUT = 300
    METADATA_ERROR = 301
    NETWORK_ERROR = 302
    UNSUPPORTED = 303
    UNKNOWN_GROUP = 400
    UNKNOWN_MEMBER = 401
    UNEXPECTED_MEMBER = 402
    EXPIRED_TERM = 403
    NOT_LEADER = 404
    NOT_FOLLOWER = 405
    INCONSISTENT_STATE = 406
    INCONSISTENT_TERM = 407
    INCONSISTENT_INDEX = 408
    INCONSISTENT_LEADER = 409
    INDEX_OUT_OF_RANGE = 410
    UNEXPECTED_ARGUMENT = 411
    REPEATED_REQUEST = 412
    REPEATED_PUSH = 413
    DISK_ERROR = 414
    DISK_FULL = 415
    TERM_NOT_READY = 416
    FALL_BEHIND_TOO_MUCH = 417
    TAKE_LEADERSHIP_FAILED = 418
    INDEX_LESS_THAN_LOCAL_BEGIN = 419
    REQUEST_WITH_EMPTY_BODYS = 420
    PUSH_REQUEST_IS_FULL = 421
    NEWER_INSTALL_SNAPSHOT_REQUEST_EXIST = 422
    INTERNAL_ERROR = 500
    TERM_CHANGED = 501
    WAIT_QUORUM_ACK_TIMEOUT = 502
    LEADER_PENDING_FULL = 503
    ILLEGAL_MEMBER_STATE = 504
    LEADER_NOT_READY = 505
    LEADER_TRANSFERRING = 506
    LOAD_SNAPSHOT_ERROR = 507
    INSTALL_SNAPSHOT_ERROR = 508


def code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return str(code)


class BodyError(ValueError):
    """A request or response body that does not decode; the message says why."""


# ---- Raft messages -------------------------------------------------------------------

RAFT_HEAD = struct.Struct(">BBqqqqqqqI")
ENTRY_HEAD = struct.Struct(">qqBI")
_U32 = struct.Struct(">I")
_APPEND_REPLY = struct.Struct(">qI")
_SNAPSHOT_HEAD = struct.Struct(">qqI")
_FLAG_REJECT = 1
_FLAG_FORCE = 2
_FLAG_TAIL = 4  # a snapshot tail follows the entries
_FLAG_DONE = 8
_FLAG_META = 16  # the tail carries a SnapshotMeta (else Message.snapshot is None)
_KINDS = frozenset({ENTRY_NORMAL, ENTRY_NOOP, ENTRY_CONFIG})
SNAP_TAIL = struct.Struct(">qqqIIHH")
_U16 = struct.Struct(">H")
MAX_ENTRIES = 1 << 20  # sanity bound on counts read from the wire

_TYPE_ID = {
    MsgType.APPEND: 1,
    MsgType.APPEND_RESP: 2,
    MsgType.HEARTBEAT: 3,
    MsgType.HEARTBEAT_RESP: 4,
    MsgType.PRE_VOTE: 5,
    MsgType.PRE_VOTE_RESP: 6,
    MsgType.VOTE: 7,
    MsgType.VOTE_RESP: 8,
    MsgType.TIMEOUT_NOW: 9,
    MsgType.INSTALL_SNAPSHOT: 10,
    MsgType.INSTALL_SNAPSHOT_RESP: 11,
}
_TYPE_BY_ID = {v: k for k, v in _TYPE_ID.items()}

RAFT_CODE: dict[MsgType, RequestCode] = {
    MsgType.PRE_VOTE: RequestCode.VOTE,
    MsgType.PRE_VOTE_RESP: RequestCode.VOTE,
    MsgType.VOTE: RequestCode.VOTE,
    MsgType.VOTE_RESP: RequestCode.VOTE,
    MsgType.HEARTBEAT: RequestCode.HEART_BEAT,
    MsgType.HEARTBEAT_RESP: RequestCode.HEART_BEAT,
    MsgType.APPEND: RequestCode.PUSH,
    MsgType.APPEND_RESP: RequestCode.PUSH,
    MsgType.TIMEOUT_NOW: RequestCode.LEADERSHIP_TRANSFER,
    MsgType.INSTALL_SNAPSHOT: RequestCode.INSTALL_SNAPSHOT,
    MsgType.INSTALL_SNAPSHOT_RESP: RequestCode.INSTALL_SNAPSHOT,
}
RAFT_CODES = frozenset(RAFT_CODE.values())


def _entry_parts(entries, parts: list[bytes], index_offset: int = 0) -> None:
    pack = ENTRY_HEAD.pack
    for e in entries:
        data = e.data
        parts.append(pack(e.index + index_offset, e.term, e.kind, len(data)))
        parts.append(data)


def _decode_entries(buf: memoryview, pos: int, n: int, what: str) -> tuple[list[Entry], int]:
    if n > MAX_ENTRIES:
        raise BodyError(f"{what}: entry count {n} exceeds {MAX_ENTRIES}")
    unpack = ENTRY_HEAD.unpack_from
    head = ENTRY_HEAD.size
    total = len(buf)
    out: list[Entry] = []
    for i in range(n):
        if pos + head > total:
            raise BodyError(f"{what}: entry {i} of {n} is cut off (body of {total} bytes)")
        index, term, kind, length = unpack(buf, pos)
        pos += head
        if pos + length > total:
            raise BodyError(f"{what}: entry {i} claims {length} data bytes, {total - pos} left")
        if kind not in _KINDS:
            raise BodyError(f"{what}: entry {i} has unknown kind {kind}")
        if term < 0:
            raise BodyError(f"{what}: entry {i} has negative term {term}")
        out.append(Entry(index, term, bytes(buf[pos : pos + length]), kind))
        pos += length
    return out, pos


def _has_tail(m: Message) -> bool:
    return bool(m.snapshot is not None or m.data or m.offset or m.done or m.checksum)


def _tail_parts(m: Message, parts: list[bytes]) -> None:
    meta = m.snapshot or SnapshotMeta()
    voters = [v.encode() for v in meta.conf.voters]
    learners = [v.encode() for v in meta.conf.learners]
    parts.append(
        SNAP_TAIL.pack(
            meta.index, meta.term, m.offset, m.checksum, len(m.data), len(voters), len(learners)
        )
    )
    for name in (*voters, *learners):
        parts.append(_U16.pack(len(name)))
        parts.append(name)
    if m.snapshot is not None:  # flag 16: the meta's context follows the member names
        ctx = bytes(meta.context)
        if len(ctx) > 0xFFFF:
            raise ValueError(f"snapshot context of {len(ctx)} bytes exceeds 65535")
        parts.append(_U16.pack(len(ctx)))
        parts.append(ctx)
    parts.append(bytes(m.data))


def _decode_tail(buf: memoryview, pos: int, what: str, has_meta: bool) -> tuple[dict, int]:
    total = len(buf)
    if pos + SNAP_TAIL.size > total:
        raise BodyError(f"{what}: snapshot section is cut off")
    index, term, offset, checksum, dlen, nv, nl = SNAP_TAIL.unpack_from(buf, pos)
    pos += SNAP_TAIL.size
    names: list[str] = []
    for _ in range(nv + nl):
        if pos + 2 > total:
            raise BodyError(f"{what}: member list is cut off")
        (n,) = _U16.unpack_from(buf, pos)
        pos += 2
        if pos + n > total:
            raise BodyError(f"{what}: member name is cut off")
        try:
            names.append(bytes(buf[pos : pos + n]).decode())
        except UnicodeDecodeError:
            raise BodyError(f"{what}: member name is not UTF-8") from None
        pos += n
    context = b""
    if has_meta:
        if pos + 2 > total:
            raise BodyError(f"{what}: snapshot context is cut off")
        (n,) = _U16.unpack_from(buf, pos)
        pos += 2
        if pos + n > total:
            raise BodyError(f"{what}: snapshot context claims {n} bytes, {total - pos} left")
        context = bytes(buf[pos : pos + n])
        pos += n
    if pos + dlen > total:
        raise BodyError(f"{what}: snapshot data claims {dlen} bytes, {total - pos} left")
    if index < 0 or term < 0 or offset < 0:
        raise BodyError(f"{what}: negative snapshot index, term or offset")
    fields = {
        "meta": SnapshotMeta(index, term, ConfState(tuple(names[:nv]), tuple(names[nv:])), context),
        "offset": offset,
        "checksum": checksum,
        "data": bytes(buf[pos : pos + dlen]),
    }
    return fields, pos + dlen


def encode_raft(m: Message) -> bytes:
    flags = (_FLAG_REJECT if m.reject else 0) | (_FLAG_FORCE if m.force else 0)
    tail = _has_tail(m)
    if tail:
        flags |= _FLAG_TAIL | (_FLAG_DONE if m.done else 0)
        flags |= _FLAG_META if m.snapshot is not None else 0
    head = RAFT_HEAD.pack(
        _TYPE_ID[m.type],
        flags,
        m.term,
        m.index,
        m.log_term,
        m.commit,
        m.hint_index,
        m.hint_term,
        m.context,
        len(m.entries),
    )
    if not m.entries and not tail:
        return head
    parts = [head]
    _entry_parts(m.entries, parts)
    if tail:
        _tail_parts(m, parts)
    return b"".join(parts)


def decode_raft(body: bytes, src: str, dst: str, code: int | None = None) -> Message:
    """The Message in a peer request; `code`, if given, must be the one its type uses."""
    if len(body) < RAFT_HEAD.size:
        raise BodyError(f"raft message body of {len(body)} bytes, need {RAFT_HEAD.size}")
    (type_id, flags, term, index, log_term, commit, hint_index, hint_term, context, n) = (
        RAFT_HEAD.unpack_from(body, 0)
    )
    mtype = _TYPE_BY_ID.get(type_id)
    if mtype is None:
        raise BodyError(f"unknown raft message type {type_id}")
    if code is not None and RAFT_CODE[mtype] != code:
        raise BodyError(f"raft {mtype.value} does not travel on code {code}")
    if term < 0 or index < 0 or log_term < 0 or commit < 0:
        raise BodyError(f"raft {mtype.value}: negative term/index/commit")
    entries: list[Entry] = []
    pos = RAFT_HEAD.size
    what = f"raft {mtype.value}"
    if n:
        entries, pos = _decode_entries(memoryview(body), pos, n, what)
    snap: dict = {}
    if flags & _FLAG_TAIL:
        tail, pos = _decode_tail(memoryview(body), pos, what, bool(flags & _FLAG_META))
        snap = {
            "snapshot": tail["meta"] if flags & _FLAG_META else None,
            "data": tail["data"],
            "offset": tail["offset"],
            "checksum": tail["checksum"],
            "done": bool(flags & _FLAG_DONE),
        }
    if pos != len(body):
        raise BodyError(f"{what}: {len(body) - pos} trailing bytes")
    return Message(
        mtype,
        src,
        dst,
        term,
        index=index,
        log_term=log_term,
        entries=tuple(entries),
        commit=commit,
        reject=bool(flags & _FLAG_REJECT),
        hint_index=hint_index,
        hint_term=hint_term,
        force=bool(flags & _FLAG_FORCE),
        context=context,
        **snap,
    )


# ---- client APPEND / GET ---------------------------------------------------------------


def encode_append_request(bodies: list[bytes]) -> bytes:
    parts = [_U32.pack(len(bodies))]
    pack = _U32.pack
    for b in bodies:
        parts.append(pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def decode_append_request(body: bytes) -> list[bytes]:
    if len(body) < 4:
        raise BodyError(f"append body of {len(body)} bytes has no entry count")
    (n,) = _U32.unpack_from(body, 0)
    if n == 1 and len(body) >= 8 and _U32.unpack_from(body, 4)[0] == len(body) - 8:
        return [body[8:]]  # the common case: one entry
    if n == 0:
        raise BodyError("append request carries no entries")
    if n > MAX_ENTRIES:
        raise BodyError(f"append request: entry count {n} exceeds {MAX_ENTRIES}")
    mv = memoryview(body)
    pos, total = 4, len(body)
    out: list[bytes] = []
    for i in range(n):
        if pos + 4 > total:
            raise BodyError(f"append request: entry {i} of {n} is cut off")
        (length,) = _U32.unpack_from(body, pos)
        pos += 4
        if pos + length > total:
            raise BodyError(f"append request: entry {i} claims {length} bytes, {total - pos} left")
        out.append(bytes(mv[pos : pos + length]))
        pos += length
    if pos != total:
        raise BodyError(f"append request: {total - pos} trailing bytes")
    return out


def encode_append_reply(first_index: int, count: int) -> bytes:
    return _APPEND_REPLY.pack(first_index, count)


def decode_append_reply(body: bytes) -> list[int]:
    if len(body) != _APPEND_REPLY.size:
        raise BodyError(f"append reply of {len(body)} bytes, expected {_APPEND_REPLY.size}")
    first, count = _APPEND_REPLY.unpack(body)
    return list(range(first, first + count))


@dataclass(frozen=True, slots=True)
class LogEntry:
    """An entry as a client sees it: DLedger's 0-based index."""

    index: int
    term: int
    data: bytes
    kind: int = ENTRY_NORMAL

    @property
    def is_noop(self) -> bool:
        return self.kind == ENTRY_NOOP


def encode_get_reply(entries: list[LogEntry]) -> bytes:
    parts = [_U32.pack(len(entries))]
    _entry_parts(entries, parts)
    return b"".join(parts)


def decode_get_reply(body: bytes) -> list[LogEntry]:
    if len(body) < 4:
        raise BodyError(f"get reply of {len(body)} bytes has no entry count")
    (n,) = _U32.unpack_from(body, 0)
    entries, pos = _decode_entries(memoryview(body), 4, n, "get reply")
    if pos != len(body):
        raise BodyError(f"get reply: {len(body) - pos} trailing bytes")
    return [LogEntry(e.index, e.term, e.data, e.kind) for e in entries]


# ---- METADATA / INSTALL_SNAPSHOT ---------------------------------------------------------


def encode_metadata(meta: dict) -> bytes:
    return json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()


def decode_metadata(body: bytes) -> dict:
    try:
        meta = json.loads(body.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise BodyError(f"metadata body is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise BodyError("metadata body is not a JSON object")
    return meta


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    last_index: int
    last_term: int
    data: bytes


def encode_install_snapshot(s: SnapshotChunk) -> bytes:
    return _SNAPSHOT_HEAD.pack(s.last_index, s.last_term, zlib.crc32(s.data)) + s.data


def decode_install_snapshot(body: bytes) -> SnapshotChunk:
    if len(body) < _SNAPSHOT_HEAD.size:
        raise BodyError(f"snapshot body of {len(body)} bytes, need {_SNAPSHOT_HEAD.size}")
    last_index, last_term, crc = _SNAPSHOT_HEAD.unpack_from(body, 0)
    data = bytes(body[_SNAPSHOT_HEAD.size :])
    if zlib.crc32(data) != crc:
        raise BodyError("snapshot data does not match its crc32")
    if last_index < 0 or last_term < 0:
        raise BodyError("snapshot: negative index or term")
    return SnapshotChunk(last_index, last_term, data)


# ---- peers string -------------------------------------------------------------------------


def parse_peers(text: str) -> dict[str, str]:
    """``n0-127.0.0.1:40911;n1-127.0.0.1:40912`` -> {id: address}, in the given order."""
    peers: dict[str, str] = {}
    for item in text.replace(",", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        member, sep, addr = item.partition("-")
        host, colon, port = addr.rpartition(":")
        if not sep or not member or not colon or not host or not port.isdigit():
            raise ValueError(f"peer {item!r} is not id-host:port")
        if member in peers:
            raise ValueError(f"peer id {member!r} appears twice")
        peers[member] = addr
    if not peers:
        raise ValueError(f"no peers in {text!r}")
    return peers


def format_peers(peers: dict[str, str]) -> str:
    return ";".join(f"{k}-{v}" for k, v in peers.items())
