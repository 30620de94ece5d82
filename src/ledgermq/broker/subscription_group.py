"""Subscription group configs, persisted as config/subscriptionGroup.json."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledgermq.broker.config_file import JsonConfigFile
from ledgermq.common.route_data import DataVersion

# Groups the broker and tools use internally; they always exist.
SYSTEM_GROUPS = (
    "TOOLS_CONSUMER",
    "FILTERSRV_CONSUMER",
    "__MONITOR_CONSUMER",
    "CLIENT_INNER_PRODUCER",
    "SELF_TEST_P_GROUP",
    "SELF_TEST_C_GROUP",
    "CID_ONS-HTTP-PROXY",
    "CID_ONSAPI_PERMISSION",
    "CID_ONSAPI_OWNER",
    "CID_ONSAPI_PULL",
    "CID_RMQ_SYS_TRANS",
)


@dataclass(slots=True)
class SubscriptionGroupConfig:
    group_name: str
    consume_enable: bool = True
    consume_from_min_enable: bool = True
    consume_broadcast_enable: bool = True
    consume_message_orderly: bool = False
    retry_queue_nums: int = 1
    retry_max_times: int = 16
    broker_id: int = 0
    which_broker_when_consume_slowly: int = 1
    notify_consumer_ids_changed_enable: bool = True
    group_sys_flag: int = 0
    consume_timeout_minute: int = 15
    attributes: dict[str, str] = field(default_factory=dict)

    _KEYS = (
        ("groupName", "group_name", str),
        ("consumeEnable", "consume_enable", bool),
        ("consumeFromMinEnable", "consume_from_min_enable", bool),
        ("consumeBroadcastEnable", "consume_broadcast_enable", bool),
        ("consumeMessageOrderly", "consume_message_orderly", bool),
        ("retryQueueNums", "retry_queue_nums", int),
        ("retryMaxTimes", "retry_max_times", int),
        ("brokerId", "broker_id", int),
        ("whichBrokerWhenConsumeSlowly", "which_broker_when_consume_slowly", int),
        ("notifyConsumerIdsChangedEnable", "notify_consumer_ids_changed_enable", bool),
        ("groupSysFlag", "group_sys_flag", int),
        ("consumeTimeoutMinute", "consume_timeout_minute", int),
    )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: getattr(self, attr) for key, attr, _ in self._KEYS}
        out["attributes"] = dict(self.attributes)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SubscriptionGroupConfig:
        cfg = cls(str(obj["groupName"]))
        for key, attr, kind in cls._KEYS[1:]:
            if obj.get(key) is not None:
                raw = obj[key]
                if kind is bool and isinstance(raw, str):
                    value: Any = raw.lower() == "true"
                else:
                    value = kind(raw)
                setattr(cfg, attr, value)
        cfg.attributes = {str(k): str(v) for k, v in (obj.get("attributes") or {}).items()}
        return cfg


class SubscriptionGroupManager:
    def __init__(
        self,
        file: JsonConfigFile,
        clock_ms: Callable[[], int],
        auto_create: bool,
    ) -> None:
        self._file = file
        self._clock_ms = clock_ms
        self.auto_create = auto_create
        self.table: dict[str, SubscriptionGroupConfig] = {
            g: SubscriptionGroupConfig(g) for g in SYSTEM_GROUPS
        }
        self.data_version = DataVersion()

    def load(self) -> None:
        obj = self._file.load()
        if obj is None:
            return
        for name, raw in (obj.get("subscriptionGroupTable") or {}).items():
            self.table[name] = SubscriptionGroupConfig.from_json({"groupName": name, **raw})
        self.data_version = DataVersion.from_json(obj.get("dataVersion"))

    def to_json(self) -> dict[str, Any]:
        return {
            "subscriptionGroupTable": {n: c.to_json() for n, c in self.table.items()},
            "dataVersion": self.data_version.to_json(),
        }

    def _changed(self) -> None:
        self.data_version.next_version(self._clock_ms())
        self._file.save(self.to_json())

    def get(self, group: str) -> SubscriptionGroupConfig | None:
        return self.table.get(group)

    def find_or_create(self, group: str) -> SubscriptionGroupConfig | None:
        cfg = self.table.get(group)
        if cfg is None and self.auto_create:
            cfg = SubscriptionGroupConfig(group)
            self.table[group] = cfg
            self._changed()
        return cfg

    def update(self, cfg: SubscriptionGroupConfig) -> None:
        self.table[cfg.group_name] = cfg
        self._changed()

    def delete(self, group: str) -> bool:
        if self.table.pop(group, None) is None:
            return False
        self._changed()
        return True

    def replace_all(
        self, table: dict[str, SubscriptionGroupConfig], data_version: DataVersion
    ) -> bool:
        """Adopts a master's groups and DataVersion unchanged (SlaveSynchronize). The
        built-in SYSTEM_GROUPS stay even if the master lacks them: every broker has them
        from construction. Returns False when the versions already matched."""
        if data_version == self.data_version:
            return False
        kept = {g: self.table[g] for g in SYSTEM_GROUPS if g not in table and g in self.table}
        self.table.clear()
        self.table.update(table)
        self.table.update(kept)
        self.data_version = DataVersion(
            data_version.state_version, data_version.timestamp, data_version.counter
        )
        self._file.save(self.to_json())
        return True
