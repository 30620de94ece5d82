"""The messages the transaction machinery writes, built from what was stored (pure).

- half message: the producer's message moved to RMQ_SYS_TRANS_HALF_TOPIC queue 0, its
  destination kept in REAL_TOPIC / REAL_QID;
- check copy: a half message put again at the end of the half queue with its check count
  raised (TRANSACTION_CHECK_TIMES), so the checker's progress lives in the log;
- op record: a message in RMQ_SYS_TRANS_OP_HALF_TOPIC, tag "d", whose body lists the half
  queue offsets a commit or rollback settled ("12" or "12,40");
- commit: the half message restored to its real topic and queue;
- parked: a half message checked too often, moved to TRANS_CHECK_MAX_TIME_TOPIC.
"""

from __future__ import annotations

from collections.abc import Iterable

from ledgermq.broker.topics import TRANS_CHECK_MAX_TIME_TOPIC, TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC
from ledgermq.common.message import (
    PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS,
    PROPERTY_DELAY,
    PROPERTY_PGROUP,
    PROPERTY_REAL_QID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_TAGS,
    PROPERTY_TRAN_MSG,
    PROPERTY_TRAN_PREPARED_QUEUE_OFFSET,
    PROPERTY_TRANSACTION_CHECK_TIMES,
    PROPERTY_UNIQ_KEY,
    SYSFLAG_TX_COMMIT,
    TX_TYPE_MASK,
    MessageExt,
)
from ledgermq.store.message_store import MessageToStore

# The system consumer group whose offsets hold the checker's progress on the half and
# op queues (MixAll.CID_SYS_RMQ_TRANS; note the value's word order).
TRANS_CONSUMER_GROUP = "CID_RMQ_SYS_TRANS"
# The tag of an op record that settles half messages.
OP_REMOVE_TAG = "d"
OP_OFFSET_SEPARATOR = ","
HALF_QUEUE_ID = 0

# Properties only the broker's bookkeeping uses; a committed message goes out without them.
_BOOKKEEPING = (
    PROPERTY_REAL_TOPIC,
    PROPERTY_REAL_QID,
    PROPERTY_TRAN_PREPARED_QUEUE_OFFSET,
    PROPERTY_TRANSACTION_CHECK_TIMES,
    # TRAN_MSG stays, as upstream's does: consumers read the transaction id when it is
    # set, the proxy reports the message as TRANSACTION, and clients clear it themselves
    # before sending a message back for retry
)


def is_half_send(properties: dict[str, str]) -> bool:
    return properties.get(PROPERTY_TRAN_MSG) == "true"


def to_half(msg: MessageToStore, producer_group: str) -> MessageToStore:
    """Moves a producer's prepared message to the half queue, in place."""
    props = msg.properties
    props[PROPERTY_REAL_TOPIC] = msg.topic
    props[PROPERTY_REAL_QID] = str(msg.queue_id)
    props.setdefault(PROPERTY_PGROUP, producer_group)
    # A delay would divert the half message itself into the schedule topic; Java's
    # transactional producer drops DELAY before sending, so do the same here.
    props.pop(PROPERTY_DELAY, None)
    # stored as a plain record: the half queue's own ConsumeQueue indexes it
    msg.sys_flag &= ~TX_TYPE_MASK
    msg.topic = TRANS_HALF_TOPIC
    msg.queue_id = HALF_QUEUE_ID
    msg.properties_text = None
    return msg


def real_queue_id(props: dict[str, str]) -> int:
    raw = props.get(PROPERTY_REAL_QID, "")
    return int(raw) if raw.isdigit() else 0


def commit_from_half(half: MessageExt) -> MessageToStore:
    """The message a commit puts to the real topic and queue."""
    props = dict(half.properties)
    topic = props.get(PROPERTY_REAL_TOPIC) or half.topic
    queue_id = real_queue_id(props)
    for key in _BOOKKEEPING:
        props.pop(key, None)
    return MessageToStore(
        topic=topic,
        queue_id=queue_id,
        body=half.body,
        flag=half.flag,
        properties=props,
        sys_flag=(half.sys_flag & ~TX_TYPE_MASK) | SYSFLAG_TX_COMMIT,
        born_timestamp=half.born_timestamp,
        born_host=half.born_host,
        reconsume_times=half.reconsume_times,
        prepared_transaction_offset=half.commit_log_offset,
    )


def _copy(half: MessageExt, topic: str, queue_id: int, props: dict[str, str]) -> MessageToStore:
    return MessageToStore(
        topic=topic,
        queue_id=queue_id,
        body=half.body,
        flag=half.flag,
        properties=props,
        sys_flag=half.sys_flag,
        born_timestamp=half.born_timestamp,
        born_host=half.born_host,
        reconsume_times=half.reconsume_times,
    )


def chain_root(half: MessageExt) -> int:
    """The half queue offset of the first copy of this transaction's half message."""
    raw = half.properties.get(PROPERTY_TRAN_PREPARED_QUEUE_OFFSET, "")
    return int(raw) if raw.isdigit() else half.queue_offset


def check_times(half: MessageExt) -> int:
    raw = half.properties.get(PROPERTY_TRANSACTION_CHECK_TIMES, "")
    return int(raw) if raw.isdigit() else 0


def check_copy(half: MessageExt, times: int) -> MessageToStore:
    """The half message again at the end of the half queue with `times` checks counted
    and the offset of its first copy, so any copy leads back to the whole chain."""
    props = dict(half.properties)
    props[PROPERTY_TRANSACTION_CHECK_TIMES] = str(times)
    props[PROPERTY_TRAN_PREPARED_QUEUE_OFFSET] = str(chain_root(half))
    return _copy(half, TRANS_HALF_TOPIC, HALF_QUEUE_ID, props)


def parked(half: MessageExt) -> MessageToStore:
    """A half message that will not be checked again, kept for operators."""
    return _copy(half, TRANS_CHECK_MAX_TIME_TOPIC, 0, dict(half.properties))


def immunity_ms(half: MessageExt, transaction_timeout_ms: int) -> tuple[int, bool]:
    """How long after its birth a half message is left alone, and whether the producer
    asked for that itself (CHECK_IMMUNITY_TIME_IN_SECONDS, never below the timeout)."""
    raw = half.properties.get(PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS)
    if raw is None:
        return transaction_timeout_ms, False
    try:
        asked = int(raw) * 1000
    except ValueError:
        return transaction_timeout_ms, False
    return max(asked, transaction_timeout_ms), True


def encode_op_body(half_offsets: Iterable[int]) -> bytes:
    return OP_OFFSET_SEPARATOR.join(str(o) for o in half_offsets).encode()


def decode_op_body(body: bytes) -> list[int]:
    """The half offsets an op record settles; junk items are skipped (as upstream does,
    which reads them as -1)."""
    out: list[int] = []
    for item in body.decode("utf-8", "replace").split(OP_OFFSET_SEPARATOR):
        item = item.strip()
        if item.isdigit():
            out.append(int(item))
    return out


def op_record(
    half_offsets: Iterable[int], store_host: tuple[str, int], now_ms: int
) -> MessageToStore:
    return MessageToStore(
        topic=TRANS_OP_HALF_TOPIC,
        queue_id=HALF_QUEUE_ID,
        body=encode_op_body(half_offsets),
        properties={PROPERTY_TAGS: OP_REMOVE_TAG},
        born_timestamp=now_ms,
        born_host=store_host,
    )


def op_offsets_of(record: MessageExt) -> list[int]:
    """The half offsets a stored op record settles ([] for anything else)."""
    if record.properties.get(PROPERTY_TAGS) != OP_REMOVE_TAG:
        return []
    return decode_op_body(record.body)


def amend_half_reply(half: MessageToStore, reply_fields: dict[str, str]) -> None:
    """A half message's send reply names the queue the producer chose (not the half
    queue) and the transaction id, as upstream's SendMessageProcessor does."""
    if "queueId" in reply_fields:
        reply_fields["queueId"] = str(real_queue_id(half.properties))
    uniq = half.properties.get(PROPERTY_UNIQ_KEY)
    if uniq:
        reply_fields["transactionId"] = uniq
