"""The topic table persisted as config/topics.json (TopicConfig is the shared wire type)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ledgermq.broker import topics as t
from ledgermq.broker.config import BrokerConfig
from ledgermq.broker.config_file import JsonConfigFile
from ledgermq.common.route_data import DataVersion, TopicConfig

log = logging.getLogger(__name__)


class TopicConfigManager:
    """The broker's topic table. Every change bumps the DataVersion, is persisted, and
    calls `on_change` (the broker re-registers with the NameServers)."""

    def __init__(
        self,
        config: BrokerConfig,
        file: JsonConfigFile,
        clock_ms: Callable[[], int],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._file = file
        self._clock_ms = clock_ms
        self.on_change = on_change
        # told of every change made here (not of those applied from elsewhere): a
        # DLedger group's master writes them into the log
        self.on_local_change: Callable[[str, TopicConfig | None], None] | None = None
        self.table: dict[str, TopicConfig] = {}
        self.data_version = DataVersion()
        self.system_topics: set[str] = set()
        self._add_system_topics()

    # --- startup -------------------------------------------------------------------
    def _system(self, cfg: TopicConfig) -> None:
        self.table[cfg.topic_name] = cfg
        self.system_topics.add(cfg.topic_name)

    def _add_system_topics(self) -> None:
        c = self._config
        self._system(TopicConfig(t.SELF_TEST_TOPIC, 1, 1))
        if c.auto_create_topic_enable:
            n = c.default_topic_queue_nums
            perm = t.PERM_INHERIT | t.PERM_READ | t.PERM_WRITE
            self._system(TopicConfig(t.TBW102, n, n, perm))
        self._system(TopicConfig(t.BENCHMARK_TOPIC, 1024, 1024))
        cluster_perm = t.PERM_INHERIT
        if c.cluster_topic_enable:
            cluster_perm |= t.PERM_READ | t.PERM_WRITE
        self._system(TopicConfig(c.broker_cluster_name, 16, 16, cluster_perm))
        broker_perm = t.PERM_INHERIT
        if c.broker_topic_enable:
            broker_perm |= t.PERM_READ | t.PERM_WRITE
        self._system(TopicConfig(c.broker_name, 1, 1, broker_perm))
        self._system(TopicConfig(t.OFFSET_MOVED_EVENT, 1, 1))
        levels = len(c.delay_levels_ms())
        self._system(TopicConfig(t.SCHEDULE_TOPIC, levels, levels))
        if c.trace_topic_enable:
            self._system(TopicConfig(t.TRACE_TOPIC, 1, 1))
        self._system(TopicConfig(t.TRANS_HALF_TOPIC, 1, 1))
        self._system(TopicConfig(t.TRANS_OP_HALF_TOPIC, 1, 1))

    def load(self) -> None:
        obj = self._file.load()
        if obj is None:
            return
        for name, raw in (obj.get("topicConfigTable") or {}).items():
            try:
                cfg = TopicConfig.from_json({"topicName": name, **raw})
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{self._file.path}: bad topic config {name!r}: {exc}") from None
            self.table[name] = cfg
        self.data_version = DataVersion.from_json(obj.get("dataVersion"))

    def persist(self) -> None:
        self._file.save(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "topicConfigTable": {name: c.to_json() for name, c in self.table.items()},
            "dataVersion": self.data_version.to_json(),
        }

    # --- queries -------------------------------------------------------------------
    def get(self, topic: str) -> TopicConfig | None:
        return self.table.get(topic)

    # --- changes -------------------------------------------------------------------
    def _changed(self) -> None:
        self.data_version.next_version(self._clock_ms())
        self.persist()
        if self.on_change is not None:
            self.on_change()

    def update(self, cfg: TopicConfig) -> None:
        old = self.table.get(cfg.topic_name)
        self.table[cfg.topic_name] = cfg
        if old != cfg:
            log.info("topic config changed: %s -> %s", old, cfg)
        self._changed()
        if self.on_local_change is not None:
            self.on_local_change(cfg.topic_name, cfg)

    def delete(self, topic: str) -> TopicConfig | None:
        old = self.table.pop(topic, None)
        if old is not None:
            self._changed()
            if self.on_local_change is not None:
                self.on_local_change(topic, None)
        return old

    def apply_replicated(self, topic: str, cfg: TopicConfig | None) -> None:
        """A change that came from the group's log (None: the topic was deleted)."""
        if self.table.get(topic) == cfg:
            return
        if cfg is None:
            self.table.pop(topic, None)
        else:
            self.table[topic] = cfg
        self._changed()

    def create_for_send(
        self, topic: str, default_topic: str, client_queue_nums: int, sys_flag: int
    ) -> TopicConfig | None:
        """Auto-create `topic` on a producer's first send, inheriting from the default
        topic it names (TBW102); None when that topic does not allow inheriting."""
        existing = self.table.get(topic)
        if existing is not None:
            return existing
        default = self.table.get(default_topic)
        if default is None:
            return None
        if default_topic == t.TBW102 and not self._config.auto_create_topic_enable:
            return None
        if not default.perm & t.PERM_INHERIT:
            return None
        nums = max(1, min(client_queue_nums, default.write_queue_nums))
        cfg = TopicConfig(
            topic,
            nums,
            nums,
            default.perm & ~t.PERM_INHERIT,
            topic_sys_flag=sys_flag,
        )
        log.info("auto-created topic %s from %s: %s", topic, default_topic, cfg)
        self.update(cfg)
        return cfg

    def create_system_group_topic(self, topic: str, queue_nums: int, perm: int) -> TopicConfig:
        """%RETRY%/%DLQ% topics, created when first needed."""
        existing = self.table.get(topic)
        if existing is not None:
            return existing
        cfg = TopicConfig(topic, queue_nums, queue_nums, perm)
        self.update(cfg)
        return cfg

    # --- replication from a master (SlaveSynchronize) -------------------------------
    def replace_all(self, table: dict[str, TopicConfig], data_version: DataVersion) -> bool:
        """Adopts a master's table and its DataVersion unchanged (no local bump), so the
        next sync can tell "already in step" by comparing versions. System topics the
        master lacks are kept: this broker recreates them at every start anyway, and a
        table that flips on restart would make the version comparison lie. Returns False
        when the versions already matched and nothing was done."""
        if data_version == self.data_version:
            return False
        kept = {n: c for n, c in self.table.items() if n in self.system_topics and n not in table}
        # Mutated in place: processors may hold a reference to the dict.
        self.table.clear()
        self.table.update(table)
        self.table.update(kept)
        self.data_version = DataVersion(
            data_version.state_version, data_version.timestamp, data_version.counter
        )
        self.persist()
        if self.on_change is not None:
            self.on_change()
        return True
