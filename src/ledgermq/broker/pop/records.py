"""What POP writes into the revive topic: checkpoints (tag `ck`) and acks (`ack`, `bAck`).

A checkpoint says "these messages of one queue were popped at popTime and are invisible
for invisibleTime"; an ack says "this one (or these) was consumed". Both are ordinary
messages in `rmq_sys_REVIVE_LOG_<cluster>`, so they are as durable as any message and a
DLedger group replicates them with everything else; the revive service reads them back
in order. JSON field names are RocketMQ's (PopCheckPoint, AckMsg, BatchAckMsg).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ledgermq.common.pop_handle import HandleError

REVIVE_TOPIC_PREFIX = "rmq_sys_REVIVE_LOG_"
# the revive service's progress per revive queue lives in the consumer offset table
REVIVE_GROUP = "CID_RMQ_SYS_REVIVE_GROUP"
CK_TAG = "ck"
ACK_TAG = "ack"
BATCH_ACK_TAG = "bAck"
DEFAULT_REVIVE_QUEUE_NUM = 8


def revive_topic(cluster_name: str) -> str:
    return REVIVE_TOPIC_PREFIX + cluster_name


class ReviveRecordError(HandleError):
    """A revive-topic record that is not a checkpoint or ack we can read."""


# (topic, group, queue id, start offset, pop time): what an ack names its checkpoint by
CkKey = tuple[str, str, int, int, int]


@dataclass(slots=True)
class CheckPoint:
    topic: str  # where the messages are stored (a pop retry topic for retried ones)
    group: str
    queue_id: int
    start_offset: int
    pop_time: int
    invisible_time: int
    # popped offsets as distances from start_offset (a tag filter leaves gaps)
    offset_diffs: list[int] = field(default_factory=list)
    broker_name: str = ""

    @property
    def revive_time(self) -> int:
        return self.pop_time + self.invisible_time

    @property
    def key(self) -> CkKey:
        return (self.topic, self.group, self.queue_id, self.start_offset, self.pop_time)

    def offsets(self) -> list[int]:
        return [self.start_offset + d for d in self.offset_diffs]

    def to_json(self) -> dict[str, Any]:
        return {
            "so": self.start_offset,
            "pt": self.pop_time,
            "it": self.invisible_time,
            "bm": 0,
            "n": len(self.offset_diffs),
            "q": self.queue_id,
            "t": self.topic,
            "c": self.group,
            "d": self.offset_diffs,
            "bn": self.broker_name,
        }


@dataclass(slots=True)
class AckRecord:
    topic: str
    group: str
    queue_id: int
    start_offset: int  # the checkpoint's, from the handle
    pop_time: int
    ack_offsets: list[int]
    broker_name: str = ""

    @property
    def key(self) -> CkKey:
        return (self.topic, self.group, self.queue_id, self.start_offset, self.pop_time)

    @property
    def tag(self) -> str:
        return ACK_TAG if len(self.ack_offsets) == 1 else BATCH_ACK_TAG

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "so": self.start_offset,
            "c": self.group,
            "t": self.topic,
            "q": self.queue_id,
            "pt": self.pop_time,
            "bn": self.broker_name,
        }
        if len(self.ack_offsets) == 1:
            obj["ao"] = self.ack_offsets[0]
        else:
            obj["aol"] = self.ack_offsets
        return obj


def encode_record_body(record: CheckPoint | AckRecord) -> bytes:
    return json.dumps(record.to_json(), separators=(",", ":")).encode()


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ReviveRecordError(f"field {key!r} is missing or not an integer")
    return value


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ReviveRecordError(f"field {key!r} is missing or not a string")
    return value


def decode_revive_record(tag: str | None, body: bytes) -> CheckPoint | AckRecord:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReviveRecordError(f"revive record body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ReviveRecordError("revive record body is not a JSON object")
    bn = obj.get("bn") if isinstance(obj.get("bn"), str) else ""
    if tag == CK_TAG:
        diffs = obj.get("d")
        if not isinstance(diffs, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in diffs
        ):
            raise ReviveRecordError("checkpoint field 'd' must be a list of offsets")
        return CheckPoint(
            _str(obj, "t"),
            _str(obj, "c"),
            _int(obj, "q"),
            _int(obj, "so"),
            _int(obj, "pt"),
            _int(obj, "it"),
            list(diffs),
            bn,
        )
    if tag in (ACK_TAG, BATCH_ACK_TAG):
        if "aol" in obj:
            offsets = obj["aol"]
            if not isinstance(offsets, list) or not all(
                isinstance(o, int) and not isinstance(o, bool) for o in offsets
            ):
                raise ReviveRecordError("ack field 'aol' must be a list of offsets")
        else:
            offsets = [_int(obj, "ao")]
        return AckRecord(
            _str(obj, "t"),
            _str(obj, "c"),
            _int(obj, "q"),
            _int(obj, "so"),
            _int(obj, "pt"),
            list(offsets),
            bn,
        )
    raise ReviveRecordError(f"unknown revive record tag {tag!r}")
