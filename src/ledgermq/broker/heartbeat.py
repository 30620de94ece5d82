"""HeartbeatData parsing for both dialects (PROTOCOL.md §2.2).

Java and Node clients send enum names; the C++ core sends ordinals and a string
subVersion. Everything is normalised to Java's enum names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ledgermq.broker.subscription import SubscriptionData, build_subscription

CONSUME_TYPES = ("CONSUME_ACTIVELY", "CONSUME_PASSIVELY", "CONSUME_POP")
MESSAGE_MODELS = ("BROADCASTING", "CLUSTERING")
CONSUME_FROM = (
    "CONSUME_FROM_LAST_OFFSET",
    "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST",
    "CONSUME_FROM_MIN_OFFSET",
    "CONSUME_FROM_MAX_OFFSET",
    "CONSUME_FROM_FIRST_OFFSET",
    "CONSUME_FROM_TIMESTAMP",
)


class HeartbeatError(ValueError):
    pass


@dataclass(slots=True)
class ConsumerData:
    group_name: str
    consume_type: str = "CONSUME_PASSIVELY"
    message_model: str = "CLUSTERING"
    consume_from_where: str = "CONSUME_FROM_LAST_OFFSET"
    unit_mode: bool = False
    subscriptions: list[SubscriptionData] = field(default_factory=list)


@dataclass(slots=True)
class HeartbeatData:
    client_id: str
    producer_groups: list[str] = field(default_factory=list)
    consumers: list[ConsumerData] = field(default_factory=list)


def _enum(value: Any, names: tuple[str, ...], default: str) -> str:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit()):
        index = int(value)
        return names[index] if 0 <= index < len(names) else default
    text = str(value).upper()
    return text if text in names else default


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def parse_heartbeat(body: bytes) -> HeartbeatData:
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeartbeatError(f"heartbeat body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise HeartbeatError("heartbeat body is not a JSON object")
    client_id = obj.get("clientID") or obj.get("clientId")
    if not client_id:
        raise HeartbeatError("heartbeat has no clientID")
    hb = HeartbeatData(str(client_id))
    for producer in obj.get("producerDataSet") or ():
        if isinstance(producer, dict) and producer.get("groupName"):
            hb.producer_groups.append(str(producer["groupName"]))
    for consumer in obj.get("consumerDataSet") or ():
        if not isinstance(consumer, dict) or not consumer.get("groupName"):
            continue
        data = ConsumerData(
            str(consumer["groupName"]),
            _enum(consumer.get("consumeType"), CONSUME_TYPES, "CONSUME_PASSIVELY"),
            _enum(consumer.get("messageModel"), MESSAGE_MODELS, "CLUSTERING"),
            _enum(consumer.get("consumeFromWhere"), CONSUME_FROM, "CONSUME_FROM_LAST_OFFSET"),
            bool(consumer.get("unitMode", False)),
        )
        for sub in consumer.get("subscriptionDataSet") or ():
            if not isinstance(sub, dict) or not sub.get("topic"):
                continue
            data.subscriptions.append(
                build_subscription(
                    str(sub["topic"]),
                    sub.get("subString"),
                    _int(sub.get("subVersion")),
                    sub.get("expressionType"),
                )
            )
        hb.consumers.append(data)
    return hb
