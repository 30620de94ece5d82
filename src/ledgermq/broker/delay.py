"""Delay levels: rewriting a DELAY message into SCHEDULE_TOPIC_XXXX and back.

Level n (1-based) lives in queue n-1 of SCHEDULE_TOPIC_XXXX with the real destination
in REAL_TOPIC/REAL_QID; its ConsumeQueue tagsCode is the delivery time.
"""

from __future__ import annotations

from ledgermq.broker.topics import SCHEDULE_TOPIC
from ledgermq.common.message import (
    PROPERTY_DELAY,
    PROPERTY_REAL_QID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_TAGS,
    SYSFLAG_TX_PREPARED,
    SYSFLAG_TX_ROLLBACK,
    MessageExt,
    tags_code,
    transaction_type,
)
from ledgermq.store.message_store import MessageToStore


def delay_level_of(msg: MessageToStore) -> int:
    raw = msg.properties.get(PROPERTY_DELAY)
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        return 0


def divert_to_schedule(msg: MessageToStore, max_level: int) -> int:
    """If `msg` asks for a delay, moves it to the schedule topic in place.

    Returns the level used (0 = not delayed). Prepared and rolled-back transaction
    records are never delayed: only their commit is.
    """
    level = delay_level_of(msg)
    if level <= 0:
        return 0
    tx = transaction_type(msg.sys_flag)
    if tx in (SYSFLAG_TX_PREPARED, SYSFLAG_TX_ROLLBACK):
        return 0
    level = min(level, max_level)
    msg.properties[PROPERTY_DELAY] = str(level)
    msg.properties[PROPERTY_REAL_TOPIC] = msg.topic
    msg.properties[PROPERTY_REAL_QID] = str(msg.queue_id)
    msg.topic = SCHEDULE_TOPIC
    msg.queue_id = level - 1
    return level


def restore_from_schedule(stored: MessageExt) -> MessageToStore:
    """The message to deliver when a scheduled record is due."""
    props = dict(stored.properties)
    props.pop(PROPERTY_DELAY, None)
    return MessageToStore(
        topic=props.get(PROPERTY_REAL_TOPIC, stored.topic),
        queue_id=int(props.get(PROPERTY_REAL_QID, "0") or 0),
        body=stored.body,
        flag=stored.flag,
        properties=props,
        sys_flag=stored.sys_flag,
        born_timestamp=stored.born_timestamp,
        born_host=stored.born_host,
        reconsume_times=stored.reconsume_times,
    )


def recovery_tags_code(levels_ms: list[int]):
    """tagsCode for a record re-dispatched at recovery: the delivery time for the
    schedule topic (as when it was first put), the TAGS hash otherwise."""

    def tags_code_of(msg: MessageExt) -> int:
        if msg.topic == SCHEDULE_TOPIC:
            level = min(max(msg.queue_id + 1, 1), len(levels_ms))
            return msg.store_timestamp + levels_ms[level - 1]
        return tags_code(msg.properties.get(PROPERTY_TAGS))

    return tags_code_of
