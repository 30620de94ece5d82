"""DataVersion: how NameServers and slaves tell that broker metadata changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class DataVersion:
    state_version: int = 0
    timestamp: int = 0
    counter: int = 0

    def next_version(self, now_ms: int, state_version: int | None = None) -> None:
        self.timestamp = now_ms
        self.counter += 1
        if state_version is not None:
            self.state_version = state_version

    def to_json(self) -> dict[str, Any]:
        return {
            "stateVersion": self.state_version,
            "timestamp": self.timestamp,
            "counter": self.counter,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any] | None) -> DataVersion:
        obj = obj or {}
        return cls(
            int(obj.get("stateVersion", 0) or 0),
            int(obj.get("timestamp", 0) or 0),
            int(obj.get("counter", 0) or 0),
        )
