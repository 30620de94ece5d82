"""POP's text formats on the wire: the receipt handle (POP_CK / extraInfo), the three
`*Info` response headers and the BATCH_ACK_MESSAGE body (PROTOCOL.md 2.7).

Pure functions and frozen dataclasses: the broker parses what clients send with them and
our client builds what it sends with them, so a round-trip test covers both sides. Every
parse failure is a `HandleError` naming what was wrong, never a bare ValueError/KeyError.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

RETRY_PREFIX = "%RETRY%"
# extraInfo field 4: where the message was popped from
TOPIC_TYPE_NORMAL = "0"
TOPIC_TYPE_RETRY = "1"  # %RETRY%<group>_<topic>
TOPIC_TYPE_RETRY_V2 = "2"  # %RETRY%<group>+<topic>
TOPIC_TYPES = frozenset({TOPIC_TYPE_NORMAL, TOPIC_TYPE_RETRY, TOPIC_TYPE_RETRY_V2})
# reviveQid of a handle from an orderly (FIFO) pop: no checkpoint was written for it
ORDER_REVIVE_QID = 999
_V1_SEPARATOR = "_"
_V2_SEPARATOR = "+"
_LONG_MAX = (1 << 63) - 1
_INT_MAX = (1 << 31) - 1
# a batch-ack bit is an offset relative to its checkpoint's start; a checkpoint spans at
# most a few thousand offsets even with a tag filter, so this bounds the bitset's size
MAX_BIT = (1 << 20) - 1
_MAX_BITSET_BASE64 = 4 * ((MAX_BIT + 1) // 8 + 2) // 3 + 4  # base64 of MAX_BIT + 1 bits


class HandleError(ValueError):
    """A receipt handle, info header or batch-ack body that cannot be understood."""


# --- topics ----------------------------------------------------------------------------
def pop_retry_topic(topic: str, group: str) -> str:
    """Where POP redelivers a group's unacked messages of `topic` (KeyBuilder, V1 form)."""
    return f"{RETRY_PREFIX}{group}{_V1_SEPARATOR}{topic}"


def topic_type_of(topic: str) -> str:
    if not topic.startswith(RETRY_PREFIX):
        return TOPIC_TYPE_NORMAL
    return TOPIC_TYPE_RETRY_V2 if _V2_SEPARATOR in topic else TOPIC_TYPE_RETRY


def real_topic(topic: str, group: str, topic_type: str) -> str:
    """The topic a handle's message was stored in, from the topic the client names and
    the handle's topic type (clients name the original topic of a retried message)."""
    if topic_type == TOPIC_TYPE_NORMAL or topic.startswith(RETRY_PREFIX):
        return topic
    if topic_type == TOPIC_TYPE_RETRY:
        return pop_retry_topic(topic, group)
    if topic_type == TOPIC_TYPE_RETRY_V2:
        return f"{RETRY_PREFIX}{group}{_V2_SEPARATOR}{topic}"
    raise HandleError(f"unknown topic type {topic_type!r}")


def original_topic(retry_topic: str, group: str) -> str:
    """The normal topic behind a pop retry topic (the inverse of `pop_retry_topic`)."""
    for sep in (_V1_SEPARATOR, _V2_SEPARATOR):
        prefix = f"{RETRY_PREFIX}{group}{sep}"
        if retry_topic.startswith(prefix):
            return retry_topic[len(prefix) :]
    return retry_topic


# --- numbers -------------------------------------------------------------------------
def _number(text: str, what: str, *, low: int = 0, high: int = _LONG_MAX) -> int:
    # int() alone would take " 7", "+7", "7_0" and "٣": a handle is ASCII digits only
    body = text[1:] if text.startswith("-") else text
    if not body or not body.isascii() or not body.isdigit():
        raise HandleError(f"{what} is not a number: {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise HandleError(f"{what} {value} is out of range [{low}, {high}]")
    return value


# --- the receipt handle --------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class ExtraInfo:
    """A popped message's receipt handle, property POP_CK and the `extraInfo` header:
    `ckQueueOffset popTime invisibleTime reviveQid topicType brokerName queueId
    queueOffset`, space-separated (the last field is absent in old 7-field handles)."""

    ck_queue_offset: int
    pop_time: int
    invisible_time: int
    revive_qid: int
    topic_type: str
    broker_name: str
    queue_id: int
    queue_offset: int | None = None

    @property
    def is_order(self) -> bool:
        return self.revive_qid == ORDER_REVIVE_QID

    @property
    def is_retry(self) -> bool:
        return self.topic_type != TOPIC_TYPE_NORMAL

    def format(self) -> str:
        fields = [
            str(self.ck_queue_offset),
            str(self.pop_time),
            str(self.invisible_time),
            str(self.revive_qid),
            self.topic_type,
            self.broker_name,
            str(self.queue_id),
        ]
        if self.queue_offset is not None:
            fields.append(str(self.queue_offset))
        return " ".join(fields)

    @classmethod
    def parse(cls, text: str | None) -> ExtraInfo:
        if text is None:
            raise HandleError("the receipt handle is missing")
        fields = text.split(" ")
        if len(fields) not in (7, 8):
            raise HandleError(
                f"a receipt handle has 7 or 8 space-separated fields, got {len(fields)}: "
                f"{text[:200]!r}"
            )
        topic_type = fields[4]
        if topic_type not in TOPIC_TYPES:
            raise HandleError(f"unknown topic type {topic_type!r} in receipt handle")
        broker_name = fields[5]
        if not broker_name:
            raise HandleError("the receipt handle names no broker")
        return cls(
            _number(fields[0], "ckQueueOffset"),
            _number(fields[1], "popTime"),
            _number(fields[2], "invisibleTime"),
            _number(fields[3], "reviveQid", high=_INT_MAX),
            topic_type,
            broker_name,
            _number(fields[6], "queueId", high=_INT_MAX),
            _number(fields[7], "queueOffset") if len(fields) == 8 else None,
        )


# --- startOffsetInfo / msgOffsetInfo / orderCountInfo ---------------------------------
# Each is `;`-joined entries `<topicType> <key> <value>`; the key is a queue id, or in
# orderCountInfo also `qo<queueId>%<queueOffset>` for a per-message count.
InfoKey = tuple[str, str]  # (topic type, key)
V = TypeVar("V")


def _format_info(entries: Iterable[tuple[str, str, str]]) -> str:
    return ";".join(f"{t} {k} {v}" for t, k, v in entries)


def _parse_info(text: str | None, what: str, value: Callable[[str], V]) -> dict[InfoKey, V]:
    if not text:
        return {}
    out: dict[InfoKey, V] = {}
    for entry in text.split(";"):
        fields = entry.split(" ")
        if len(fields) != 3 or not all(fields):
            raise HandleError(f"{what}: entry {entry!r} is not '<type> <queue> <value>'")
        topic_type, key, raw = fields
        if topic_type not in TOPIC_TYPES:
            raise HandleError(f"{what}: unknown topic type {topic_type!r}")
        if (topic_type, key) in out:
            raise HandleError(f"{what}: duplicate entry for {topic_type} {key}")
        out[(topic_type, key)] = value(raw)
    return out


def format_start_offset_info(entries: Iterable[tuple[str, int, int]]) -> str:
    return _format_info((t, str(q), str(o)) for t, q, o in entries)


def parse_start_offset_info(text: str | None) -> dict[InfoKey, int]:
    return _parse_info(text, "startOffsetInfo", lambda s: _number(s, "startOffset"))


def format_msg_offset_info(entries: Iterable[tuple[str, int, list[int]]]) -> str:
    return _format_info((t, str(q), ",".join(map(str, offs))) for t, q, offs in entries)


def parse_msg_offset_info(text: str | None) -> dict[InfoKey, list[int]]:
    return _parse_info(
        text,
        "msgOffsetInfo",
        lambda s: [_number(o, "msgOffset") for o in s.split(",")],
    )


def format_order_count_info(entries: Iterable[tuple[str, int, int]]) -> str:
    return _format_info((t, str(q), str(c)) for t, q, c in entries)


def parse_order_count_info(text: str | None) -> dict[InfoKey, int]:
    return _parse_info(text, "orderCountInfo", lambda s: _number(s, "count", high=_INT_MAX))


# --- BATCH_ACK_MESSAGE body ----------------------------------------------------------
def bitset_to_base64(positions: Iterable[int]) -> str:
    """Java's BitSet.toByteArray (little-endian: bit i is byte i//8, bit i%8) in base64,
    which is how fastjson writes the `b` field."""
    positions = sorted(set(positions))
    if positions and not 0 <= positions[0] <= positions[-1] <= MAX_BIT:
        raise HandleError(f"bit positions must be in [0, {MAX_BIT}]")
    raw = bytearray((positions[-1] // 8 + 1) if positions else 0)
    for p in positions:
        raw[p // 8] |= 1 << (p % 8)
    return base64.b64encode(bytes(raw)).decode()


def bitset_from_base64(text: str) -> list[int]:
    # checked before decoding: a frame's worth of base64 would otherwise become a list
    # of a hundred million ints
    if len(text) > _MAX_BITSET_BASE64:
        raise HandleError(f"bitSet longer than {MAX_BIT + 1} bits")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HandleError(f"bitSet is not base64: {text[:100]!r}") from None
    return [i * 8 + b for i, byte in enumerate(raw) for b in range(8) if byte >> b & 1]


@dataclass(slots=True, frozen=True)
class BatchAck:
    """One entry of a batch ack: the popped messages at `start_offset + i` for every i in
    `bits`, all from one checkpoint (same group, topic, queue, popTime)."""

    group: str
    topic: str  # as the client names it; with `topic_type`, `real_topic` gives the store's
    topic_type: str
    start_offset: int
    queue_id: int
    revive_qid: int
    pop_time: int
    invisible_time: int
    bits: tuple[int, ...]

    def offsets(self) -> list[int]:
        return [self.start_offset + b for b in self.bits]

    def to_json(self) -> dict[str, Any]:
        return {
            "c": self.group,
            "t": self.topic,
            "r": self.topic_type,
            "so": self.start_offset,
            "q": self.queue_id,
            "rq": self.revive_qid,
            "pt": self.pop_time,
            "it": self.invisible_time,
            "b": bitset_to_base64(self.bits),
        }


# short name (what Java writes) -> long name (the Java field; also accepted)
_BATCH_ACK_FIELDS = {
    "c": "consumerGroup",
    "t": "topic",
    "r": "retry",
    "so": "startOffset",
    "q": "queueId",
    "rq": "reviveQueueId",
    "pt": "popTime",
    "it": "invisibleTime",
    "b": "bitSet",
}


def _field(obj: dict[str, Any], short: str) -> Any:
    if short in obj:
        return obj[short]
    return obj.get(_BATCH_ACK_FIELDS[short])


def _int_field(obj: dict[str, Any], short: str, *, high: int = _LONG_MAX) -> int:
    raw = _field(obj, short)
    name = _BATCH_ACK_FIELDS[short]
    if isinstance(raw, bool) or raw is None:
        raise HandleError(f"batch ack: '{short}' ({name}) is missing or not a number")
    return _number(str(raw), name, high=high)


def _bits(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, str):
        return tuple(bitset_from_base64(raw))
    if isinstance(raw, list) and all(isinstance(b, int) and not isinstance(b, bool) for b in raw):
        # a list of set bit positions: easier for hand-written clients
        if any(b < 0 or b > MAX_BIT for b in raw):
            raise HandleError("batch ack: bit positions out of range")
        return tuple(sorted(set(raw)))
    raise HandleError("batch ack: 'b' (bitSet) must be a base64 string")


def _batch_ack(obj: Any) -> BatchAck:
    if not isinstance(obj, dict):
        raise HandleError("batch ack: every entry of 'acks' must be an object")
    group, topic = _field(obj, "c"), _field(obj, "t")
    if not isinstance(group, str) or not group:
        raise HandleError("batch ack: 'c' (consumerGroup) is missing")
    if not isinstance(topic, str) or not topic:
        raise HandleError("batch ack: 't' (topic) is missing")
    retry = _field(obj, "r")
    topic_type = TOPIC_TYPE_NORMAL if retry in (None, "") else str(retry)
    if topic_type not in TOPIC_TYPES:
        raise HandleError(f"batch ack: unknown 'r' (retry) value {retry!r}")
    return BatchAck(
        group,
        topic,
        topic_type,
        _int_field(obj, "so"),
        _int_field(obj, "q", high=_INT_MAX),
        _int_field(obj, "rq", high=_INT_MAX),
        _int_field(obj, "pt"),
        _int_field(obj, "it"),
        _bits(_field(obj, "b")),
    )


@dataclass(slots=True, frozen=True)
class BatchAckBody:
    broker_name: str | None
    acks: tuple[BatchAck, ...]

    def encode(self) -> bytes:
        return json.dumps(
            {"brokerName": self.broker_name, "acks": [a.to_json() for a in self.acks]}
        ).encode()


def parse_batch_ack_body(body: bytes | None) -> BatchAckBody:
    if not body:
        raise HandleError("batch ack: the body is empty")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HandleError(f"batch ack: the body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise HandleError("batch ack: the body must be a JSON object")
    acks = obj.get("acks")
    if not isinstance(acks, list):
        raise HandleError("batch ack: 'acks' must be a list")
    broker_name = obj.get("brokerName")
    return BatchAckBody(
        broker_name if isinstance(broker_name, str) else None,
        tuple(_batch_ack(a) for a in acks),
    )
