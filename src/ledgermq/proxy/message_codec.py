"""v2 Message -> what a remoting SEND_MESSAGE_V2 carries (pure, no I/O).

The mapping follows the Java proxy: message_id becomes UNIQ_KEY (and is echoed back
as the send result's id), message_group becomes __SHARDINGKEY, a transaction sets
sysFlag TX_PREPARED with TRAN_MSG/PGROUP, the tag and keys become TAGS/KEYS. A
delivery timestamp becomes a DELAY level because our brokers deliver by level.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from ledgermq.common import message as m
from ledgermq.proxy import validation
from ledgermq.proxy.protocol import definition_pb2 as pb
from ledgermq.proxy.status import Code, ProxyError


@dataclass(frozen=True, slots=True)
class SendLimits:
    max_body_size: int
    user_property_max_num: int = 128
    max_user_property_size: int = 16 * 1024
    max_message_group_size: int = 64
    max_delay_ms: int = 24 * 3_600_000
    # messageDelayLevel in ms, level n at index n-1.
    delay_levels_ms: Sequence[int] = ()


@dataclass(slots=True)
class OutgoingMessage:
    topic: str
    body: bytes
    message_id: str
    message_type: int
    sys_flag: int
    born_timestamp_ms: int
    properties: dict[str, str] = field(default_factory=dict)
    message_group: str | None = None
    delay_level: int = 0

    @property
    def is_transaction(self) -> bool:
        return self.message_type == pb.TRANSACTION


def timestamp_ms(ts: object) -> int:
    return int(ts.seconds) * 1000 + int(ts.nanos) // 1_000_000  # type: ignore[attr-defined]


def delay_level_for(delay_ms: int, levels_ms: Sequence[int]) -> int:
    """The first level (1-based) whose delay is >= delay_ms: never deliver early.

    0 for a delay that is already due; -1 when even the longest level is too short.
    """
    if delay_ms <= 0:
        return 0
    for index, level_ms in enumerate(levels_ms):
        if level_ms >= delay_ms:
            return index + 1
    return -1


def consistent_bucket(key_hash: int, buckets: int) -> int:
    """Guava's Hashing.consistentHash(long, int), which the Java proxy uses to map a
    message group's String.hashCode to a write queue: same group, same queue, and
    few groups move when the queue count changes."""
    if buckets <= 0:
        raise ValueError("buckets must be positive")
    state = key_hash & 0xFFFFFFFFFFFFFFFF
    candidate = 0
    while True:
        state = (2862933555777941757 * state + 1) & 0xFFFFFFFFFFFFFFFF
        # (int)(state >>> 33) + 1, as a Java int, over 2^31
        top = state >> 33
        if top & 0x80000000:
            top -= 0x100000000
        next_double = (top + 1) / 2147483648.0
        nxt = int((candidate + 1) / next_double)
        if 0 <= nxt < buckets:
            candidate = nxt
        else:
            return candidate


def queue_for_group(message_group: str, queue_count: int) -> int:
    return consistent_bucket(m.java_string_hash(message_group), queue_count)


def _body(msg: pb.Message, limits: SendLimits) -> tuple[bytes, int]:
    """The body to store and its sysFlag bits."""
    body = bytes(msg.body)
    encoding = msg.system_properties.body_encoding
    if encoding == pb.GZIP:
        # Stored plain: remoting consumers only know zlib for the COMPRESSED flag.
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise ProxyError(
                Code.MESSAGE_CORRUPTED, f"gzip body does not decompress: {exc}"
            ) from exc
    if not body:
        raise ProxyError(Code.MESSAGE_BODY_EMPTY, "message body is empty")
    if len(body) > limits.max_body_size:
        raise ProxyError(
            Code.MESSAGE_BODY_TOO_LARGE,
            f"message body of {len(body)} bytes exceeds the limit of {limits.max_body_size}",
        )
    return body, 0


def _message_type(sp: pb.SystemProperties) -> int:
    declared = sp.message_type
    has_group = sp.HasField("message_group") and bool(sp.message_group)
    has_delivery = sp.HasField("delivery_timestamp")
    if declared == pb.MESSAGE_TYPE_UNSPECIFIED:
        if has_group:
            return pb.FIFO
        return pb.DELAY if has_delivery else pb.NORMAL
    if declared == pb.FIFO and not has_group:
        raise ProxyError(
            Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, "a FIFO message needs a message_group"
        )
    if declared != pb.FIFO and has_group:
        raise ProxyError(
            Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE,
            f"message_group is only for FIFO messages, not {pb.MessageType.Name(declared)}",
        )
    if declared == pb.DELAY and not has_delivery:
        raise ProxyError(
            Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, "a DELAY message needs a delivery_timestamp"
        )
    if declared == pb.TRANSACTION and has_delivery:
        raise ProxyError(
            Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE,
            "a TRANSACTION message cannot have a delivery_timestamp",
        )
    if declared not in (pb.NORMAL, pb.FIFO, pb.DELAY, pb.TRANSACTION):
        raise ProxyError(
            Code.UNSUPPORTED, f"message type {pb.MessageType.Name(declared)} is not supported"
        )
    return declared


def to_outgoing(msg: pb.Message, limits: SendLimits, now_ms: int) -> OutgoingMessage:
    """Validates one v2 message and maps it; raises ProxyError with the v2 code."""
    topic = validation.check_topic(msg.topic.name)
    sp = msg.system_properties
    if not sp.message_id:
        raise ProxyError(Code.ILLEGAL_MESSAGE_ID, "message_id is empty")
    body, sys_flag = _body(msg, limits)
    message_type = _message_type(sp)
    user = dict(msg.user_properties)
    validation.check_user_properties(
        user, limits.user_property_max_num, limits.max_user_property_size
    )
    props = user
    if sp.HasField("tag"):
        validation.check_tag(sp.tag)
        props[m.PROPERTY_TAGS] = sp.tag
    if sp.keys:
        for key in sp.keys:
            validation.check_key(key)
        props[m.PROPERTY_KEYS] = " ".join(sp.keys)
    props[m.PROPERTY_UNIQ_KEY] = sp.message_id
    props[m.PROPERTY_WAIT] = "true"
    if sp.HasField("trace_context") and sp.trace_context:
        props[m.PROPERTY_TRACE_CONTEXT] = sp.trace_context
    if sp.HasField("delivery_attempt") and sp.delivery_attempt > 0:
        props[m.PROPERTY_RECONSUME_TIME] = str(sp.delivery_attempt)

    group: str | None = None
    if message_type == pb.FIFO:
        group = sp.message_group
        validation.check_message_group(group, limits.max_message_group_size)
        props[m.PROPERTY_SHARDING_KEY] = group

    level = 0
    if message_type == pb.DELAY:
        level = _delay_level(timestamp_ms(sp.delivery_timestamp), now_ms, limits)
        if level > 0:
            props[m.PROPERTY_DELAY] = str(level)

    if message_type == pb.TRANSACTION:
        sys_flag |= m.SYSFLAG_TX_PREPARED
        props[m.PROPERTY_TRAN_MSG] = "true"
        # The Java proxy uses the topic as the producer group, so the broker's
        # transaction check reaches whichever proxy client publishes the topic.
        props[m.PROPERTY_PGROUP] = topic
        if sp.HasField("orphaned_transaction_recovery_duration"):
            seconds = sp.orphaned_transaction_recovery_duration.seconds
            props[m.PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS] = str(max(0, seconds))

    born = timestamp_ms(sp.born_timestamp) if sp.HasField("born_timestamp") else now_ms
    return OutgoingMessage(
        topic=topic,
        body=body,
        message_id=sp.message_id,
        message_type=message_type,
        sys_flag=sys_flag,
        born_timestamp_ms=born or now_ms,
        properties=props,
        message_group=group,
        delay_level=level,
    )


def _delay_level(deliver_at_ms: int, now_ms: int, limits: SendLimits) -> int:
    delay = deliver_at_ms - now_ms
    if delay > limits.max_delay_ms:
        raise ProxyError(
            Code.ILLEGAL_DELIVERY_TIME,
            f"delivery time is {delay} ms away, more than the maximum {limits.max_delay_ms} ms",
        )
    level = delay_level_for(delay, limits.delay_levels_ms)
    if level < 0:
        longest = max(limits.delay_levels_ms)
        raise ProxyError(
            Code.ILLEGAL_DELIVERY_TIME,
            f"delivery time is {delay} ms away; the brokers' longest delay level is {longest} ms",
        )
    return level


def _ts(ms: int) -> object:
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


# Properties shown as system fields (or internal to the broker), not as user properties.
_SYSTEM_ONLY = validation.RESERVED_PROPERTY_KEYS


def to_v2_message(msg: m.MessageExt, *, topic: str | None = None) -> pb.Message:
    """A stored message as the v2 clients expect it (PROTOCOL.md 10.3 item 4): MD5 body
    digest in uppercase hex, IDENTITY encoding, the broker's ids and timestamps."""
    import hashlib

    props = msg.properties
    body = msg.body
    if msg.sys_flag & m.SYSFLAG_COMPRESSED:
        try:
            body = zlib.decompress(body)
        except zlib.error:
            pass
    if props.get(m.PROPERTY_TRAN_MSG) == "true":
        mtype = pb.TRANSACTION
    elif props.get(m.PROPERTY_SHARDING_KEY):
        mtype = pb.FIFO
    elif props.get(m.PROPERTY_DELAY) or props.get(m.PROPERTY_TIMER_DELIVER_MS):
        mtype = pb.DELAY
    else:
        mtype = pb.NORMAL
    sp = pb.SystemProperties(
        keys=[k for k in props.get(m.PROPERTY_KEYS, "").split(" ") if k],
        message_id=props.get(m.PROPERTY_UNIQ_KEY) or msg.offset_msg_id,
        body_digest=pb.Digest(type=pb.MD5, checksum=hashlib.md5(body).hexdigest().upper()),
        body_encoding=pb.IDENTITY,
        message_type=mtype,
        born_timestamp=_ts(msg.born_timestamp),
        born_host=msg.born_host[0],
        store_timestamp=_ts(msg.store_timestamp),
        store_host=f"{msg.store_host[0]}:{msg.store_host[1]}",
        queue_id=msg.queue_id,
        queue_offset=msg.queue_offset,
        delivery_attempt=msg.reconsume_times + 1,
    )
    if props.get(m.PROPERTY_TAGS):
        sp.tag = props[m.PROPERTY_TAGS]
    if props.get(m.PROPERTY_SHARDING_KEY):
        sp.message_group = props[m.PROPERTY_SHARDING_KEY]
    if props.get(m.PROPERTY_TRACE_CONTEXT):
        sp.trace_context = props[m.PROPERTY_TRACE_CONTEXT]
    user = {k: v for k, v in props.items() if k not in _SYSTEM_ONLY}
    return pb.Message(
        topic=pb.Resource(name=topic or msg.topic),
        user_properties=user,
        system_properties=sp,
        body=body,
    )
