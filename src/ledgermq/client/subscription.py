"""Subscription expressions (TAG type) and client-side tag filtering."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ledgermq.common.message import java_string_hash

SUB_ALL = "*"


@dataclass(slots=True)
class SubscriptionData:
    topic: str
    sub_string: str = SUB_ALL
    tags_set: frozenset[str] = field(default_factory=frozenset)
    code_set: frozenset[int] = field(default_factory=frozenset)
    # Brokers keep the newest subscription per group; a timestamp orders them.
    sub_version: int = 0
    expression_type: str = "TAG"

    @classmethod
    def build(cls, topic: str, expression: str | None = SUB_ALL) -> SubscriptionData:
        expr = (expression or "").strip()
        if not expr or expr == SUB_ALL:
            return cls(topic, SUB_ALL, sub_version=_version())
        tags = frozenset(t.strip() for t in expr.split("||") if t.strip())
        return cls(
            topic,
            expr,
            tags,
            frozenset(java_string_hash(t) for t in tags),
            sub_version=_version(),
        )

    def matches(self, tags: str | None) -> bool:
        if not self.tags_set or SUB_ALL in self.tags_set:
            return True
        return tags is not None and tags in self.tags_set

    def to_json(self) -> dict[str, Any]:
        return {
            "classFilterMode": False,
            "codeSet": sorted(self.code_set),
            "expressionType": self.expression_type,
            "subString": self.sub_string,
            "subVersion": self.sub_version,
            "tagsSet": sorted(self.tags_set),
            "topic": self.topic,
        }


def _version() -> int:
    # Nanoseconds would overflow Java's long-based comparisons nowhere, but brokers
    # compare against their stored ms versions; Java uses currentTimeMillis.
    return int(time.time() * 1000)


def retry_topic(group: str) -> str:
    return f"%RETRY%{group}"


def dlq_topic(group: str) -> str:
    return f"%DLQ%{group}"


def is_retry_topic(topic: str) -> bool:
    return topic.startswith("%RETRY%")
