"""A replicated key-value store on DLedger: the example state machine.

Writes (put, delete, compare-and-set) are log entries; every member applies them in log
order. Reads are linearizable without touching the log: the leader runs ReadIndex
(confirms with a heartbeat round that it still leads, then waits until it has applied
its commit index as of the request) and answers from its own map.

Clients reach it through USER_DEFINE (59999) with ``requestTypeCode`` = `KV_REQUEST`.
Command (an entry's data, and the request body), big-endian::

    op u8 (1 put, 2 get, 3 cas, 4 delete) | flags u8 (1: cas expects the key absent)
    | key_len u16 | a_len u32 | b_len u32 | key | a | b

``a`` is the value for put, the expected value for cas; ``b`` is cas's new value.

Result (the reply body)::

    ok u8 | found u8 | value_len u32 | value

put: ok, found = the key existed, value = the previous value. get: found, value.
cas: ok = swapped, found = the key existed before, value = the value now.
delete: found = it existed, value = the removed value.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledgermq.dledger.protocol import BodyError

if TYPE_CHECKING:
    from ledgermq.dledger.member import Member

KV_REQUEST = 1

OP_PUT = 1
OP_GET = 2
OP_CAS = 3
OP_DELETE = 4
_OPS = frozenset({OP_PUT, OP_GET, OP_CAS, OP_DELETE})
FLAG_EXPECT_ABSENT = 1

_CMD = struct.Struct(">BBHII")
_RESULT = struct.Struct(">BBI")
_SNAP = struct.Struct(">HI")
_COUNT = struct.Struct(">I")
MAX_KEY = 0xFFFF


@dataclass(frozen=True, slots=True)
class KVCommand:
    op: int
    key: bytes
    a: bytes = b""
    b: bytes = b""
    expect_absent: bool = False


@dataclass(frozen=True, slots=True)
class KVResult:
    ok: bool
    found: bool
    value: bytes | None


def encode_command(c: KVCommand) -> bytes:
    if len(c.key) > MAX_KEY:
        raise ValueError(f"key of {len(c.key)} bytes exceeds {MAX_KEY}")
    flags = FLAG_EXPECT_ABSENT if c.expect_absent else 0
    return _CMD.pack(c.op, flags, len(c.key), len(c.a), len(c.b)) + c.key + c.a + c.b


def decode_command(data: bytes) -> KVCommand:
    if len(data) < _CMD.size:
        raise BodyError(f"kv command of {len(data)} bytes, need {_CMD.size}")
    op, flags, klen, alen, blen = _CMD.unpack_from(data, 0)
    if op not in _OPS:
        raise BodyError(f"unknown kv op {op}")
    if _CMD.size + klen + alen + blen != len(data):
        raise BodyError(
            f"kv command lengths {klen}+{alen}+{blen} do not match its {len(data)} bytes"
        )
    p = _CMD.size
    key = bytes(data[p : p + klen])
    a = bytes(data[p + klen : p + klen + alen])
    b = bytes(data[p + klen + alen :])
    return KVCommand(op, key, a, b, bool(flags & FLAG_EXPECT_ABSENT))


def encode_result(r: KVResult) -> bytes:
    value = r.value or b""
    return _RESULT.pack(int(r.ok), int(r.found), len(value)) + value


def decode_result(data: bytes) -> KVResult:
    if len(data) < _RESULT.size:
        raise BodyError(f"kv result of {len(data)} bytes, need {_RESULT.size}")
    ok, found, vlen = _RESULT.unpack_from(data, 0)
    if _RESULT.size + vlen != len(data):
        raise BodyError("kv result length does not match")
    value = bytes(data[_RESULT.size :]) if found else None
    return KVResult(bool(ok), bool(found), value)


class KVStateMachine:
    """The map, plus the USER_DEFINE handler that serves it."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    # ---- StateMachine ----------------------------------------------------------------

    def apply(self, index: int, data: bytes) -> bytes:
        try:
            c = decode_command(data)
        except BodyError as exc:
            # validated before proposing, so only a foreign entry gets here: skip it
            return encode_result(KVResult(False, False, str(exc).encode()))
        return encode_result(self.execute(c))

    def execute(self, c: KVCommand) -> KVResult:
        d = self.data
        old = d.get(c.key)
        if c.op == OP_PUT:
            d[c.key] = c.a
            return KVResult(True, old is not None, old)
        if c.op == OP_GET:
            return KVResult(True, old is not None, old)
        if c.op == OP_DELETE:
            d.pop(c.key, None)
            return KVResult(True, old is not None, old)
        # cas
        matches = old is None if c.expect_absent else old == c.a
        if matches:
            d[c.key] = c.b
            return KVResult(True, old is not None, c.b)
        return KVResult(False, old is not None, old)

    def snapshot(self) -> bytes:
        parts = [_COUNT.pack(len(self.data))]
        for k, v in self.data.items():
            parts.append(_SNAP.pack(len(k), len(v)))
            parts.append(k)
            parts.append(v)
        return b"".join(parts)

    def restore(self, data: bytes) -> None:
        self.data = {}
        if not data:
            return
        (n,) = _COUNT.unpack_from(data, 0)
        p = _COUNT.size
        for _ in range(n):
            klen, vlen = _SNAP.unpack_from(data, p)
            p += _SNAP.size
            k = bytes(data[p : p + klen])
            p += klen
            self.data[k] = bytes(data[p : p + vlen])
            p += vlen

    # ---- UserRequestHandler ------------------------------------------------------------

    async def handle_user_request(self, member: Member, type_code: int, body: bytes) -> bytes:
        if type_code != KV_REQUEST:
            raise BodyError(f"unknown requestTypeCode {type_code} (kv takes {KV_REQUEST})")
        c = decode_command(body)
        if c.op == OP_GET:
            generation = member.generation
            index = await member.read_index()
            member.ensure_fresh(generation, index)  # no await between this and the read
            return encode_result(self.execute(c))
        _, result = await member.propose(body)
        assert isinstance(result, bytes)
        return result
