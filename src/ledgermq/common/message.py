"""Message codec: CommitLog records, properties, ids, batch bodies (PROTOCOL.md §3).

Pure functions over bytes; no I/O. The store calls `encode_record_parts` on the hot path,
so the fixed-size head of a record is packed by one precompiled `struct.Struct` per host
family combination.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import NamedTuple


class MessageDecodeError(ValueError):
    """Raised for any malformed record, properties string, id or batch body."""


# --- sysflag bits (PROTOCOL.md §3.1) ---------------------------------------------------
class MessageFlag:
    COMPRESSED = 0x1
    MULTI_TAGS = 0x2
    TRANSACTION_NOT_TYPE = 0x0
    TRANSACTION_PREPARED_TYPE = 0x4
    TRANSACTION_COMMIT_TYPE = 0x8
    TRANSACTION_ROLLBACK_TYPE = 0xC
    BORNHOST_V6 = 0x10
    STOREHOST_V6 = 0x20
    NEED_UNWRAP = 0x40
    INNER_BATCH = 0x80
    COMPRESSION_TYPE_MASK = 0x700  # bits 8-10


SYSFLAG_COMPRESSED = MessageFlag.COMPRESSED
SYSFLAG_MULTI_TAGS = MessageFlag.MULTI_TAGS
SYSFLAG_TX_PREPARED = MessageFlag.TRANSACTION_PREPARED_TYPE
SYSFLAG_TX_COMMIT = MessageFlag.TRANSACTION_COMMIT_TYPE
SYSFLAG_TX_ROLLBACK = MessageFlag.TRANSACTION_ROLLBACK_TYPE
SYSFLAG_BORNHOST_V6 = MessageFlag.BORNHOST_V6
SYSFLAG_STOREHOST_V6 = MessageFlag.STOREHOST_V6
SYSFLAG_NEED_UNWRAP = MessageFlag.NEED_UNWRAP
SYSFLAG_INNER_BATCH = MessageFlag.INNER_BATCH
TX_TYPE_MASK = 0xC


def transaction_type(sys_flag: int) -> int:
    return sys_flag & TX_TYPE_MASK


# --- magic codes -------------------------------------------------------------------------
MAGIC_V1 = 0xDAA320A7
MAGIC_V2 = 0xDAA320AB
MAGIC_BLANK = 0xCBD43194

# --- property keys (PROTOCOL.md §3.2) -----------------------------------------------------
PROPERTY_TAGS = "TAGS"
PROPERTY_KEYS = "KEYS"
PROPERTY_UNIQ_KEY = "UNIQ_KEY"
PROPERTY_WAIT = "WAIT"
PROPERTY_DELAY = "DELAY"
PROPERTY_RETRY_TOPIC = "RETRY_TOPIC"
PROPERTY_REAL_TOPIC = "REAL_TOPIC"
PROPERTY_REAL_QID = "REAL_QID"
PROPERTY_RECONSUME_TIME = "RECONSUME_TIME"
PROPERTY_MAX_RECONSUME_TIMES = "MAX_RECONSUME_TIMES"
PROPERTY_ORIGIN_MESSAGE_ID = "ORIGIN_MESSAGE_ID"
PROPERTY_MIN_OFFSET = "MIN_OFFSET"
PROPERTY_MAX_OFFSET = "MAX_OFFSET"
PROPERTY_TRAN_MSG = "TRAN_MSG"
PROPERTY_PGROUP = "PGROUP"
PROPERTY_TRANSACTION_ID = "__transactionId__"
PROPERTY_TRAN_PREPARED_QUEUE_OFFSET = "TRAN_PREPARED_QUEUE_OFFSET"
PROPERTY_TRANSACTION_CHECK_TIMES = "TRANSACTION_CHECK_TIMES"
PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS = "CHECK_IMMUNITY_TIME_IN_SECONDS"
PROPERTY_TIMER_DELIVER_MS = "TIMER_DELIVER_MS"
PROPERTY_TIMER_DELAY_SEC = "TIMER_DELAY_SEC"
PROPERTY_CONSUME_START_TIME = "CONSUME_START_TIME"
PROPERTY_MSG_REGION = "MSG_REGION"
PROPERTY_TRACE_ON = "TRACE_ON"
PROPERTY_CLUSTER = "CLUSTER"
PROPERTY_MSG_TYPE = "MSG_TYPE"
PROPERTY_POP_CK = "POP_CK"
PROPERTY_FIRST_POP_TIME = "1ST_POP_TIME"
PROPERTY_SHARDING_KEY = "__SHARDINGKEY"
PROPERTY_TRACE_CONTEXT = "TRACE_CONTEXT"
PROPERTY_BORN_HOST = "__BORNHOST"
PROPERTY_BORN_TIMESTAMP = "BORN_TIMESTAMP"
PROPERTY_INNER_NUM = "INNER_NUM"
PROPERTY_INNER_BASE = "INNER_BASE"
TRANSIENT_PREFIX = "__RMQ.TRANSIENT."

NAME_VALUE_SEPARATOR = "\x01"
PROPERTY_SEPARATOR = "\x02"

# Java's Short.MAX_VALUE bounds the stored properties length field.
MAX_PROPERTIES_LENGTH = 0x7FFF
# V1 stores the topic length in one signed byte, hence the switch to V2 above 127.
MAX_V1_TOPIC_LENGTH = 127
MAX_TOPIC_LENGTH = 0x7FFF


# --- properties ----------------------------------------------------------------------------
def encode_properties(properties: dict[str, str] | None) -> str:
    """`k\\x01v\\x02` repeated. Transient keys are never stored or sent."""
    if not properties:
        return ""
    return "".join(
        f"{k}\x01{v}\x02" for k, v in properties.items() if not k.startswith(TRANSIENT_PREFIX)
    )


def decode_properties(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if not text:
        return out
    for item in text.split(PROPERTY_SEPARATOR):
        k, sep, v = item.partition(NAME_VALUE_SEPARATOR)
        # Entries without a separator are skipped, as the Java decoder does.
        if sep and k:
            out[k] = v
    return out


# --- hosts and ids -------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def pack_ip(ip: str) -> bytes:
    """4 bytes for IPv4, 16 for IPv6 (memoised: hosts repeat on the hot path)."""
    try:
        return ipaddress.ip_address(ip).packed
    except ValueError as e:
        raise ValueError(f"not an IP address: {ip!r}") from e


def _pack_ip_v6(ip: str) -> bytes:
    raw = pack_ip(ip)
    return raw if len(raw) == 16 else b"\x00" * 10 + b"\xff\xff" + raw


def _pack_ip_v4(ip: str) -> bytes:
    raw = pack_ip(ip)
    if len(raw) != 4:
        # struct's "4s" would silently truncate an IPv6 address.
        raise ValueError(f"IPv6 host {ip!r} needs the V6 sysflag bit (see host_sys_flag)")
    return raw


def unpack_ip(raw: bytes) -> str:
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if raw[:12] == b"\x00" * 10 + b"\xff\xff":
        # IPv4-mapped: show as dotted quad so ids match what the producer sees.
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def is_ipv6(ip: str) -> bool:
    return ":" in ip


_OFF_ID_V4 = struct.Struct(">4siq")
_OFF_ID_V6 = struct.Struct(">16siq")


def offset_msg_id(store_host: tuple[str, int], commit_log_offset: int) -> str:
    ip, port = store_host
    raw = pack_ip(ip)
    st = _OFF_ID_V4 if len(raw) == 4 else _OFF_ID_V6
    return st.pack(raw, port, commit_log_offset).hex().upper()


def offset_msg_id_prefix(store_host: tuple[str, int]) -> str:
    """The host part of every offset message id of `store_host`: a store stamps many ids
    and only the 16 offset digits differ (``prefix + f"{offset:016X}"``)."""
    ip, port = store_host
    raw = pack_ip(ip)
    st = _OFF_ID_V4 if len(raw) == 4 else _OFF_ID_V6
    return st.pack(raw, port, 0).hex().upper()[:-16]


def parse_offset_msg_id(msg_id: str) -> tuple[str, int, int]:
    """-> (ip, port, commit_log_offset)."""
    try:
        raw = bytes.fromhex(msg_id)
    except ValueError as e:
        raise MessageDecodeError(f"offset msg id is not hex: {msg_id!r}") from e
    if len(raw) == _OFF_ID_V4.size:
        ip_b, port, off = _OFF_ID_V4.unpack(raw)
    elif len(raw) == _OFF_ID_V6.size:
        ip_b, port, off = _OFF_ID_V6.unpack(raw)
    else:
        raise MessageDecodeError(f"offset msg id has wrong length {len(msg_id)}: {msg_id!r}")
    return unpack_ip(ip_b), port, off


def java_string_hash(s: str) -> int:
    """Java `String.hashCode()`: over UTF-16 code units, wrapped to signed 32 bits."""
    h = 0
    if s.isascii():
        for c in s.encode("ascii"):
            h = (31 * h + c) & 0xFFFFFFFF
    else:
        units = s.encode("utf-16-be", "surrogatepass")
        for (c,) in struct.iter_unpack(">H", units):
            h = (31 * h + c) & 0xFFFFFFFF
    return h - 0x100000000 if h & 0x80000000 else h


@lru_cache(maxsize=4096)
def _tags_hash(tags: str) -> int:
    return java_string_hash(tags)


def tags_code(tags: str | None) -> int:
    """ConsumeQueue tagsCode for a TAGS property (0 when untagged).

    Memoised: a topic has few distinct tags, and the hash is a Python loop per character.
    """
    return _tags_hash(tags) if tags else 0


# --- MessageQueue --------------------------------------------------------------------------
@dataclass(slots=True, frozen=True, order=True)
class MessageQueue:
    """One queue of a topic on one broker; shared by the client, the broker and the
    fastjson codec (which reads and writes it as an object map key)."""

    # Field order = Java's MessageQueue.compareTo order (topic, broker, queue id), which
    # allocation relies on when it sorts the queue list.
    topic: str
    broker_name: str
    queue_id: int

    def to_json(self) -> dict[str, object]:
        return {"brokerName": self.broker_name, "queueId": self.queue_id, "topic": self.topic}

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> MessageQueue:
        # A missing brokerName reads as "" (some lock bodies leave it out).
        return cls(str(obj["topic"]), str(obj.get("brokerName") or ""), int(obj["queueId"]))  # type: ignore[call-overload]

    def __str__(self) -> str:
        return f"{self.topic}@{self.broker_name}#{self.queue_id}"


# --- MessageExt ----------------------------------------------------------------------------
@dataclass(slots=True)
class MessageExt:
    topic: str = ""
    body: bytes = b""
    flag: int = 0
    properties: dict[str, str] = field(default_factory=dict)
    queue_id: int = 0
    queue_offset: int = 0
    commit_log_offset: int = 0
    sys_flag: int = 0
    born_timestamp: int = 0
    born_host: tuple[str, int] = ("127.0.0.1", 0)
    store_timestamp: int = 0
    store_host: tuple[str, int] = ("127.0.0.1", 0)
    reconsume_times: int = 0
    prepared_transaction_offset: int = 0
    body_crc: int = 0
    store_size: int = 0

    @property
    def tags(self) -> str | None:
        return self.properties.get(PROPERTY_TAGS)

    @property
    def keys(self) -> list[str]:
        raw = self.properties.get(PROPERTY_KEYS)
        return raw.split() if raw else []

    @property
    def offset_msg_id(self) -> str:
        return offset_msg_id(self.store_host, self.commit_log_offset)

    @property
    def msg_id(self) -> str:
        return self.properties.get(PROPERTY_UNIQ_KEY) or self.offset_msg_id


# --- CommitLog record ----------------------------------------------------------------------
# Head = everything up to and including the body length field. Field order, PROTOCOL §3.1:
# TOTALSIZE MAGIC BODYCRC QUEUEID FLAG QUEUEOFFSET PHYSICALOFFSET SYSFLAG BORNTIMESTAMP
# BORNHOST(ip,port) STORETIMESTAMP STOREHOST(ip,port) RECONSUMETIMES PREPAREDTXOFFSET BODYLEN
def _head(born_ip: int, store_ip: int) -> struct.Struct:
    return struct.Struct(f">iIiiiqqiq{born_ip}siq{store_ip}siiqi")


# Indexed by (sys_flag >> 4) & 3: bit0 = born v6, bit1 = store v6.
_HEADS = (_head(4, 4), _head(16, 4), _head(4, 16), _head(16, 16))
RECORD_BASE_SIZE = 91  # V1, IPv4 hosts, empty body/topic/properties


def record_head(sys_flag: int) -> struct.Struct:
    """The fixed head of a record (TOTALSIZE .. BODYLEN) for the sys_flag's host families;
    for writers that pack records straight into one buffer."""
    return _HEADS[(sys_flag >> 4) & 3]


def pack_host(ip: str, v6: bool) -> bytes:
    """A host's address bytes as the record stores them (4, or 16 when v6)."""
    return _pack_ip_v6(ip) if v6 else _pack_ip_v4(ip)


OFF_TOTALSIZE = 0
OFF_MAGIC = 4
OFF_BODYCRC = 8
OFF_QUEUEID = 12
OFF_FLAG = 16
OFF_QUEUEOFFSET = 20
OFF_PHYSICALOFFSET = 28
OFF_SYSFLAG = 36
OFF_BORNTIMESTAMP = 40
OFF_BORNHOST = 48

_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_I16 = struct.Struct(">h")
_SIZE_MAGIC = struct.Struct(">iI")


def store_timestamp_offset(sys_flag: int) -> int:
    """Byte offset of STORETIMESTAMP inside a record; depends on the born host family."""
    return 68 if sys_flag & SYSFLAG_BORNHOST_V6 else 56


def record_size(body_len: int, topic_len: int, props_len: int, sys_flag: int) -> int:
    size = RECORD_BASE_SIZE + body_len + topic_len + props_len
    if sys_flag & SYSFLAG_BORNHOST_V6:
        size += 12
    if sys_flag & SYSFLAG_STOREHOST_V6:
        size += 12
    if topic_len > MAX_V1_TOPIC_LENGTH:
        size += 1
    return size


def host_sys_flag(sys_flag: int, born_ip: str, store_ip: str) -> int:
    """Sets the V6 bits when a host is IPv6 (a v4 host under a set bit is v4-mapped)."""
    if is_ipv6(born_ip):
        sys_flag |= SYSFLAG_BORNHOST_V6
    if is_ipv6(store_ip):
        sys_flag |= SYSFLAG_STOREHOST_V6
    return sys_flag


def encode_record_parts(
    topic_b: bytes,
    body: bytes,
    props_b: bytes,
    *,
    queue_id: int,
    flag: int,
    queue_offset: int,
    physical_offset: int,
    sys_flag: int,
    born_timestamp: int,
    born_host: tuple[str, int],
    store_timestamp: int,
    store_host: tuple[str, int],
    reconsume_times: int = 0,
    prepared_transaction_offset: int = 0,
    body_crc: int | None = None,
) -> bytes:
    """Encodes one record from pre-encoded topic/properties bytes.

    `sys_flag` must already carry the host V6 bits (see `host_sys_flag`); the store computes
    it once per message so `record_size` and this function agree.
    """
    tlen = len(topic_b)
    plen = len(props_b)
    if plen > MAX_PROPERTIES_LENGTH:
        raise ValueError(f"properties too long: {plen} > {MAX_PROPERTIES_LENGTH}")
    if tlen > MAX_TOPIC_LENGTH:
        raise ValueError(f"topic too long: {tlen}")
    v2 = tlen > MAX_V1_TOPIC_LENGTH
    born_v6 = sys_flag & SYSFLAG_BORNHOST_V6
    store_v6 = sys_flag & SYSFLAG_STOREHOST_V6
    size = record_size(len(body), tlen, plen, sys_flag)
    if body_crc is None:
        body_crc = zlib.crc32(body) & 0x7FFFFFFF
    head = _HEADS[(sys_flag >> 4) & 3].pack(
        size,
        MAGIC_V2 if v2 else MAGIC_V1,
        body_crc,
        queue_id,
        flag,
        queue_offset,
        physical_offset,
        sys_flag,
        born_timestamp,
        _pack_ip_v6(born_host[0]) if born_v6 else _pack_ip_v4(born_host[0]),
        born_host[1],
        store_timestamp,
        _pack_ip_v6(store_host[0]) if store_v6 else _pack_ip_v4(store_host[0]),
        store_host[1],
        reconsume_times,
        prepared_transaction_offset,
        len(body),
    )
    tl = tlen.to_bytes(2 if v2 else 1, "big")
    return b"".join((head, body, tl, topic_b, plen.to_bytes(2, "big"), props_b))


def encode_record(msg: MessageExt) -> bytes:
    """Byte-exact CommitLog record for `msg` (V2 when its topic is over 127 bytes)."""
    sys_flag = host_sys_flag(msg.sys_flag, msg.born_host[0], msg.store_host[0])
    return encode_record_parts(
        msg.topic.encode(),
        msg.body,
        encode_properties(msg.properties).encode(),
        queue_id=msg.queue_id,
        flag=msg.flag,
        queue_offset=msg.queue_offset,
        physical_offset=msg.commit_log_offset,
        sys_flag=sys_flag,
        born_timestamp=msg.born_timestamp,
        born_host=msg.born_host,
        store_timestamp=msg.store_timestamp,
        store_host=msg.store_host,
        reconsume_times=msg.reconsume_times,
        prepared_transaction_offset=msg.prepared_transaction_offset,
    )


def stamp_record(
    buf: bytearray | memoryview,
    pos: int,
    *,
    queue_offset: int | None = None,
    physical_offset: int | None = None,
    store_timestamp: int | None = None,
) -> None:
    """Overwrites the store-assigned fields of an encoded record in place."""
    if queue_offset is not None:
        _I64.pack_into(buf, pos + OFF_QUEUEOFFSET, queue_offset)
    if physical_offset is not None:
        _I64.pack_into(buf, pos + OFF_PHYSICALOFFSET, physical_offset)
    if store_timestamp is not None:
        sys_flag = _I32.unpack_from(buf, pos + OFF_SYSFLAG)[0]
        _I64.pack_into(buf, pos + store_timestamp_offset(sys_flag), store_timestamp)


def encode_blank(size: int) -> bytes:
    """The 8 meaningful bytes of an end-of-file blank record of `size` bytes."""
    return _SIZE_MAGIC.pack(size, MAGIC_BLANK)


def peek_size_magic(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    if pos < 0 or len(buf) - pos < 8:
        raise MessageDecodeError("need 8 bytes for size and magic")
    return _SIZE_MAGIC.unpack_from(buf, pos)


def record_physical_offset(buf: bytes | memoryview, pos: int = 0) -> int:
    """PHYSICALOFFSET of the record at `pos` without decoding the rest."""
    if len(buf) - pos < OFF_PHYSICALOFFSET + 8:
        raise MessageDecodeError("record too short for its physical offset")
    return _I64.unpack_from(buf, pos + OFF_PHYSICALOFFSET)[0]


def record_store_timestamp(buf: bytes | memoryview, pos: int = 0) -> int:
    """STORETIMESTAMP of the record at `pos` without decoding the rest."""
    if len(buf) - pos < 80:
        raise MessageDecodeError("record too short for store timestamp")
    sys_flag = _I32.unpack_from(buf, pos + OFF_SYSFLAG)[0]
    return _I64.unpack_from(buf, pos + store_timestamp_offset(sys_flag))[0]


def decode_record(
    buf: bytes | bytearray | memoryview,
    pos: int = 0,
    *,
    verify_crc: bool = False,
    decode_body: bool = True,
    decode_hosts: bool = True,
) -> tuple[MessageExt, int]:
    """Decodes the record at `pos`; returns it and the position after it. Without
    `decode_hosts` the hosts' addresses are left "" (only their ports are kept): the
    store's dispatch needs neither, and formatting them is most of a decode's cost."""
    try:
        return _decode_record(buf, pos, verify_crc, decode_body, decode_hosts)
    except MessageDecodeError:
        raise
    except (struct.error, IndexError, ValueError, UnicodeDecodeError, OverflowError) as e:
        raise MessageDecodeError(f"malformed record at {pos}: {e}") from e


def _decode_record(
    buf, pos: int, verify_crc: bool, decode_body: bool, decode_hosts: bool = True
) -> tuple[MessageExt, int]:
    n = len(buf)
    if pos < 0 or n - pos < 8:
        raise MessageDecodeError(f"truncated record at {pos}: {n - pos} bytes left")
    total, magic = _SIZE_MAGIC.unpack_from(buf, pos)
    if magic == MAGIC_BLANK:
        raise MessageDecodeError(f"blank (end of file) record at {pos}")
    if magic not in (MAGIC_V1, MAGIC_V2):
        raise MessageDecodeError(f"bad magic {magic:#010x} at {pos}")
    if total < RECORD_BASE_SIZE or total > n - pos:
        raise MessageDecodeError(f"bad TOTALSIZE {total} at {pos} ({n - pos} bytes left)")
    end = pos + total
    sys_flag = _I32.unpack_from(buf, pos + OFF_SYSFLAG)[0]
    head = _HEADS[(sys_flag >> 4) & 3]
    if head.size > total:
        raise MessageDecodeError(f"TOTALSIZE {total} shorter than its head at {pos}")
    (
        _t,
        _m,
        body_crc,
        queue_id,
        flag,
        queue_offset,
        physical_offset,
        _sf,
        born_ts,
        born_ip,
        born_port,
        store_ts,
        store_ip,
        store_port,
        reconsume,
        prepared,
        body_len,
    ) = head.unpack_from(buf, pos)
    p = pos + head.size
    if body_len < 0 or p + body_len > end:
        raise MessageDecodeError(f"bad body length {body_len} at {pos}")
    body_view = buf[p : p + body_len]
    p += body_len
    if verify_crc and (zlib.crc32(body_view) & 0x7FFFFFFF) != body_crc:
        raise MessageDecodeError(f"body CRC mismatch at {pos}")
    if magic == MAGIC_V2:
        if p + 2 > end:
            raise MessageDecodeError(f"truncated topic length at {pos}")
        tlen = int.from_bytes(buf[p : p + 2], "big")
        p += 2
    else:
        if p + 1 > end:
            raise MessageDecodeError(f"truncated topic length at {pos}")
        tlen = buf[p]
        p += 1
    if p + tlen + 2 > end:
        raise MessageDecodeError(f"bad topic length {tlen} at {pos}")
    topic = bytes(buf[p : p + tlen]).decode()
    p += tlen
    plen = _I16.unpack_from(buf, p)[0]
    p += 2
    if plen < 0 or p + plen != end:
        raise MessageDecodeError(f"properties length {plen} does not match TOTALSIZE at {pos}")
    props = decode_properties(bytes(buf[p:end]).decode()) if plen else {}
    msg = MessageExt(
        topic=topic,
        body=bytes(body_view) if decode_body else b"",
        flag=flag,
        properties=props,
        queue_id=queue_id,
        queue_offset=queue_offset,
        commit_log_offset=physical_offset,
        sys_flag=sys_flag,
        born_timestamp=born_ts,
        born_host=(unpack_ip(born_ip) if decode_hosts else "", born_port),
        store_timestamp=store_ts,
        store_host=(unpack_ip(store_ip) if decode_hosts else "", store_port),
        reconsume_times=reconsume,
        prepared_transaction_offset=prepared,
        body_crc=body_crc,
        store_size=total,
    )
    return msg, end


_DISPATCH_FIXED = struct.Struct(">iIiiiqqi")  # TOTALSIZE .. SYSFLAG
_U16 = struct.Struct(">H")


def decode_for_dispatch(record: bytes) -> MessageExt:
    """What dispatching one whole record to its ConsumeQueue and the index needs: topic,
    queue id and offset, physical offset, sys flag, store time, properties and size. The
    body, hosts and the other fields stay at their defaults. A DLedger follower runs
    this once per replicated message; it costs about a third of `decode_record`."""
    try:
        total, magic, _crc, queue_id, _flag, queue_offset, phy, sys_flag = (
            _DISPATCH_FIXED.unpack_from(record, 0)
        )
        if magic != MAGIC_V1 and magic != MAGIC_V2:
            raise MessageDecodeError(f"bad magic {magic:#010x}")
        if total != len(record):
            raise MessageDecodeError(f"TOTALSIZE {total} is not the record's {len(record)} bytes")
        hosts = (sys_flag >> 4) & 3
        p = _HEADS[hosts].size
        store_ts = _I64.unpack_from(record, store_timestamp_offset(sys_flag))[0]
        body_len = _I32.unpack_from(record, p - 4)[0]
        if body_len < 0:
            raise MessageDecodeError(f"bad body length {body_len}")
        p += body_len
        if magic == MAGIC_V2:
            tlen = _U16.unpack_from(record, p)[0]
            p += 2
        else:
            tlen = record[p]
            p += 1
        topic = record[p : p + tlen].decode()
        p += tlen
        plen = _I16.unpack_from(record, p)[0]
        p += 2
        if plen < 0 or p + plen != total:
            raise MessageDecodeError(f"topic/properties lengths do not match TOTALSIZE {total}")
        props = decode_properties(record[p:total].decode()) if plen else {}
    except MessageDecodeError:
        raise
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        raise MessageDecodeError(f"malformed record: {e}") from e
    return MessageExt(
        topic=topic,
        properties=props,
        queue_id=queue_id,
        queue_offset=queue_offset,
        commit_log_offset=phy,
        sys_flag=sys_flag,
        store_timestamp=store_ts,
        store_size=total,
    )


def decode_records(
    body: bytes | bytearray | memoryview, *, verify_crc: bool = False
) -> list[MessageExt]:
    """Decodes concatenated records (a PULL response body)."""
    out: list[MessageExt] = []
    pos = 0
    n = len(body)
    while pos < n:
        msg, pos = decode_record(body, pos, verify_crc=verify_crc)
        out.append(msg)
    return out


def verify_record(buf: bytes | memoryview, pos: int, expected_offset: int | None = None) -> int:
    """Checks one stored record (size, magic, layout, BODYCRC, PHYSICALOFFSET if given).

    Returns its size; raises MessageDecodeError. Used by recovery to find the torn tail.
    """
    msg, end = decode_record(buf, pos, verify_crc=True, decode_body=False)
    if expected_offset is not None and msg.commit_log_offset != expected_offset:
        raise MessageDecodeError(
            f"PHYSICALOFFSET {msg.commit_log_offset} != position {expected_offset}"
        )
    return end - pos


# --- batch body (SEND_BATCH_MESSAGE) ---------------------------------------------------------
class BatchItem(NamedTuple):
    body: bytes
    flag: int
    properties: dict[str, str]
    # the item's properties exactly as sent, so the broker can store them without
    # re-encoding the dict (it only appends CLUSTER)
    properties_text: str = ""


_BATCH_HEAD = struct.Struct(">iiiii")  # TOTALSIZE MAGIC BODYCRC FLAG BODYLEN
BATCH_ITEM_BASE_SIZE = _BATCH_HEAD.size + 2


def encode_batch(items: Iterable[tuple[bytes, int, dict[str, str]]]) -> bytes:
    return encode_batch_encoded(
        (body, flag, encode_properties(props).encode()) for body, flag, props in items
    )


def encode_batch_encoded(items: Iterable[tuple[bytes, int, bytes]]) -> bytes:
    """A batch body from (body, flag, already encoded properties) items."""
    parts: list[bytes] = []
    for body, flag, pb in items:
        if len(pb) > MAX_PROPERTIES_LENGTH:
            raise ValueError(f"properties too long: {len(pb)}")
        total = BATCH_ITEM_BASE_SIZE + len(body) + len(pb)
        parts.append(_BATCH_HEAD.pack(total, 0, 0, flag, len(body)))
        parts.append(body)
        parts.append(_I16.pack(len(pb)))
        parts.append(pb)
    return b"".join(parts)


def decode_batch(data: bytes | bytearray | memoryview) -> list[BatchItem]:
    out: list[BatchItem] = []
    pos = 0
    n = len(data)
    try:
        while pos < n:
            if n - pos < BATCH_ITEM_BASE_SIZE:
                raise MessageDecodeError(f"truncated batch item at {pos}")
            total, _magic, _crc, flag, blen = _BATCH_HEAD.unpack_from(data, pos)
            end = pos + total
            if total < BATCH_ITEM_BASE_SIZE or end > n or blen < 0:
                raise MessageDecodeError(f"bad batch item size {total} at {pos}")
            p = pos + _BATCH_HEAD.size
            if p + blen + 2 > end:
                raise MessageDecodeError(f"bad batch body length {blen} at {pos}")
            body = bytes(data[p : p + blen])
            p += blen
            plen = _I16.unpack_from(data, p)[0]
            p += 2
            if plen < 0 or p + plen != end:
                raise MessageDecodeError(f"bad batch properties length {plen} at {pos}")
            text = bytes(data[p:end]).decode()
            out.append(BatchItem(body, flag, decode_properties(text), text))
            pos = end
    except (struct.error, UnicodeDecodeError) as e:
        raise MessageDecodeError(f"malformed batch at {pos}: {e}") from e
    return out


# --- UNIQ_KEY ---------------------------------------------------------------------------------
def _month_start_ms(now_ms: int) -> tuple[int, int]:
    """(start of this UTC month, start of next) in epoch ms."""
    d = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    start = datetime(d.year, d.month, 1, tzinfo=UTC)
    nxt = datetime(d.year + (d.month == 12), d.month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp() * 1000), int(nxt.timestamp() * 1000)


class UniqueIdGenerator:
    """UNIQ_KEY ids: IP + pid(2) + hash(4) + ms since month start(4) + counter(2), hex.

    Clock, pid, IP and hash are injected so two generators in one process (two clients in a
    test) stay independent and tests are deterministic.
    """

    __slots__ = ("_clock", "_counter", "_month_end", "_month_start", "_prefix")

    def __init__(
        self, ip: str | bytes, pid: int, clock: Callable[[], int], instance_hash: int = 0
    ) -> None:
        ip_b = pack_ip(ip) if isinstance(ip, str) else bytes(ip)
        self._prefix = (
            (ip_b + struct.pack(">H", pid & 0xFFFF) + struct.pack(">I", instance_hash & 0xFFFFFFFF))
            .hex()
            .upper()
        )
        self._clock = clock
        self._counter = 0
        self._month_start, self._month_end = _month_start_ms(clock())

    def next_id(self) -> str:
        now = self._clock()
        if now >= self._month_end or now < self._month_start:
            self._month_start, self._month_end = _month_start_ms(now)
        self._counter = (self._counter + 1) & 0xFFFF
        tail = struct.pack(">IH", (now - self._month_start) & 0xFFFFFFFF, self._counter)
        return self._prefix + tail.hex().upper()


__all__: Sequence[str] = [
    "MAGIC_BLANK",
    "MAGIC_V1",
    "MAGIC_V2",
    "BatchItem",
    "MessageDecodeError",
    "MessageExt",
    "MessageFlag",
    "MessageQueue",
    "UniqueIdGenerator",
    "decode_batch",
    "decode_properties",
    "decode_record",
    "decode_records",
    "encode_batch",
    "encode_properties",
    "encode_record",
    "encode_record_parts",
    "java_string_hash",
    "offset_msg_id",
    "parse_offset_msg_id",
    "record_size",
    "stamp_record",
]
