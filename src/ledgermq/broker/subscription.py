"""Tag subscriptions (`*`, `a || b`) and the filter the pull path applies with them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledgermq.common.message import java_string_hash

SUB_ALL = "*"


@dataclass(slots=True)
class SubscriptionData:
    topic: str
    sub_string: str = SUB_ALL
    tags_set: frozenset[str] = frozenset()
    code_set: frozenset[int] = frozenset()
    sub_version: int = 0
    expression_type: str = "TAG"
    class_filter_mode: bool = False
    # Cached so the pull path does no per-message work for `*`.
    match_all: bool = field(default=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "subString": self.sub_string,
            "tagsSet": sorted(self.tags_set),
            "codeSet": sorted(self.code_set),
            "subVersion": self.sub_version,
            "expressionType": self.expression_type,
            "classFilterMode": self.class_filter_mode,
        }

    def matches_code(self, tags_code: int) -> bool:
        """First, cheap stage: the ConsumeQueue's tagsCode (hash collisions pass)."""
        return self.match_all or tags_code in self.code_set

    def matches_tags(self, tags: str | None) -> bool:
        """Second stage on the record's TAGS property: rules out hash collisions."""
        if self.match_all:
            return True
        return tags is not None and tags in self.tags_set


def build_subscription(
    topic: str, sub_string: str | None, sub_version: int = 0, expression_type: str | None = None
) -> SubscriptionData:
    """Parses a TAG expression; anything blank or `*` subscribes to every tag."""
    text = (sub_string or "").strip()
    expr_type = (expression_type or "TAG").upper() or "TAG"
    if not text or text == SUB_ALL:
        return SubscriptionData(topic, SUB_ALL, sub_version=sub_version, expression_type=expr_type)
    tags = frozenset(tag.strip() for tag in text.split("||") if tag.strip())
    if not tags:
        return SubscriptionData(topic, SUB_ALL, sub_version=sub_version, expression_type=expr_type)
    return SubscriptionData(
        topic,
        text,
        tags,
        frozenset(java_string_hash(tag) for tag in tags),
        sub_version,
        expr_type,
        match_all=False,
    )
