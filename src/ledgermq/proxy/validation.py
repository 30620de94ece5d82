"""Checks on names and message fields, each failing with the v2 code clients expect."""

from __future__ import annotations

import re

from ledgermq.common import message as m
from ledgermq.proxy.status import Code, ProxyError

TOPIC_MAX_LENGTH = 127
GROUP_MAX_LENGTH = 255
_VALID_NAME = re.compile(r"^[%|a-zA-Z0-9_-]+$")

# Topics clients may not produce to: the broker's own bookkeeping.
SYSTEM_TOPICS = frozenset(
    {
        "TBW102",
        "SCHEDULE_TOPIC_XXXX",
        "RMQ_SYS_TRANS_HALF_TOPIC",
        "RMQ_SYS_TRANS_OP_HALF_TOPIC",
        "TRANS_CHECK_MAX_TIME_TOPIC",
        "SELF_TEST_TOPIC",
        "OFFSET_MOVED_EVENT",
        "RMQ_SYS_TRACE_TOPIC",
        "rmq_sys_wheel_timer",
    }
)

# Property names the broker interprets: a user property must not smuggle them in.
RESERVED_PROPERTY_KEYS = frozenset(
    value
    for name, value in vars(m).items()
    if name.startswith("PROPERTY_") and isinstance(value, str) and name != "PROPERTY_SEPARATOR"
)


def check_topic(name: str) -> str:
    if not name or not name.strip():
        raise ProxyError(Code.ILLEGAL_TOPIC, "topic name is blank")
    if len(name) > TOPIC_MAX_LENGTH:
        raise ProxyError(
            Code.ILLEGAL_TOPIC, f"topic name is longer than {TOPIC_MAX_LENGTH} characters"
        )
    if not _VALID_NAME.match(name):
        raise ProxyError(
            Code.ILLEGAL_TOPIC,
            f"topic name {name!r} has illegal characters (allowed: ^[%|a-zA-Z0-9_-]+$)",
        )
    if name in SYSTEM_TOPICS or name.startswith("rmq_sys_"):
        raise ProxyError(Code.ILLEGAL_TOPIC, f"topic {name!r} is a system topic")
    return name


def check_group(name: str) -> str:
    if not name or not name.strip():
        raise ProxyError(Code.ILLEGAL_CONSUMER_GROUP, "consumer group name is blank")
    if len(name) > GROUP_MAX_LENGTH:
        raise ProxyError(
            Code.ILLEGAL_CONSUMER_GROUP,
            f"consumer group name is longer than {GROUP_MAX_LENGTH} characters",
        )
    if not _VALID_NAME.match(name):
        raise ProxyError(
            Code.ILLEGAL_CONSUMER_GROUP,
            f"consumer group name {name!r} has illegal characters (allowed: ^[%|a-zA-Z0-9_-]+$)",
        )
    return name


def check_tag(tag: str) -> None:
    if not tag.strip():
        raise ProxyError(Code.ILLEGAL_MESSAGE_TAG, "tag is blank")
    if "|" in tag:
        raise ProxyError(Code.ILLEGAL_MESSAGE_TAG, f"tag {tag!r} contains '|'")
    if any(ch in tag for ch in "\x01\x02"):
        raise ProxyError(Code.ILLEGAL_MESSAGE_TAG, "tag contains control characters")


def check_key(key: str) -> None:
    if not key.strip():
        raise ProxyError(Code.ILLEGAL_MESSAGE_KEY, "message key is blank")
    if any(ch in key for ch in "\x01\x02"):
        raise ProxyError(Code.ILLEGAL_MESSAGE_KEY, "message key contains control characters")


def check_message_group(group: str, max_size: int) -> None:
    if not group.strip():
        raise ProxyError(Code.ILLEGAL_MESSAGE_GROUP, "message group is blank")
    if len(group.encode()) > max_size:
        raise ProxyError(
            Code.ILLEGAL_MESSAGE_GROUP, f"message group is longer than {max_size} bytes"
        )


def check_user_properties(props: dict[str, str], max_num: int, max_bytes: int) -> None:
    if len(props) > max_num:
        raise ProxyError(
            Code.MESSAGE_PROPERTIES_TOO_LARGE,
            f"{len(props)} user properties, at most {max_num} are allowed",
        )
    total = 0
    for key, value in props.items():
        if not key:
            raise ProxyError(Code.ILLEGAL_MESSAGE_PROPERTY_KEY, "property key is empty")
        if key in RESERVED_PROPERTY_KEYS:
            raise ProxyError(
                Code.ILLEGAL_MESSAGE_PROPERTY_KEY, f"property key {key!r} is used by the system"
            )
        if any(ch in key + value for ch in "\x01\x02"):
            raise ProxyError(
                Code.ILLEGAL_MESSAGE_PROPERTY_KEY, f"property {key!r} contains control characters"
            )
        total += len(key.encode()) + len(value.encode())
    if total > max_bytes:
        raise ProxyError(
            Code.MESSAGE_PROPERTIES_TOO_LARGE,
            f"user properties take {total} bytes, at most {max_bytes} are allowed",
        )
