"""Committed consumer offsets, persisted as config/consumerOffset.json.

Commits are frequent (every consumer, every 5 s per queue), so they only touch memory and
mark the table dirty; the broker flushes it periodically and on stop, as RocketMQ does.
"""

from __future__ import annotations

from typing import Any

from ledgermq.broker.config_file import JsonConfigFile
from ledgermq.common.route_data import DataVersion

SEPARATOR = "@"


def table_key(topic: str, group: str) -> str:
    return f"{topic}{SEPARATOR}{group}"


class ConsumerOffsetManager:
    def __init__(self, file: JsonConfigFile) -> None:
        self._file = file
        self.table: dict[str, dict[int, int]] = {}
        self.data_version = DataVersion()
        self._dirty = False

    def load(self) -> None:
        obj = self._file.load()
        if obj is None:
            return
        for key, queues in (obj.get("offsetTable") or {}).items():
            self.table[key] = {int(q): int(o) for q, o in (queues or {}).items()}
        self.data_version = DataVersion.from_json(obj.get("dataVersion"))

    def to_json(self) -> dict[str, Any]:
        return {
            "offsetTable": {
                key: {str(q): o for q, o in queues.items()} for key, queues in self.table.items()
            },
            "dataVersion": self.data_version.to_json(),
        }

    def flush(self, force: bool = False) -> bool:
        """Writes the table if it changed since the last flush; True if written."""
        if not (self._dirty or force):
            return False
        self._dirty = False
        self._file.save(self.to_json())
        return True

    # -------------------------------------------------------------------------------
    def commit(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        queues = self.table.get(table_key(topic, group))
        if queues is None:
            queues = self.table[table_key(topic, group)] = {}
        if queues.get(queue_id) != offset:
            queues[queue_id] = offset
            self._dirty = True

    def query(self, group: str, topic: str, queue_id: int) -> int:
        """-1 when nothing is stored."""
        queues = self.table.get(table_key(topic, group))
        if queues is None:
            return -1
        return queues.get(queue_id, -1)

    def offsets_of(self, group: str, topic: str) -> dict[int, int]:
        return dict(self.table.get(table_key(topic, group), {}))

    def groups_of_topic(self, topic: str) -> set[str]:
        prefix = topic + SEPARATOR
        return {k[len(prefix) :] for k in self.table if k.startswith(prefix)}

    def topics_of_group(self, group: str) -> set[str]:
        suffix = SEPARATOR + group
        return {k[: -len(suffix)] for k in self.table if k.endswith(suffix)}

    def remove_topic(self, topic: str) -> None:
        prefix = topic + SEPARATOR
        for key in [k for k in self.table if k.startswith(prefix)]:
            del self.table[key]
            self._dirty = True

    def remove_group(self, group: str) -> None:
        suffix = SEPARATOR + group
        for key in [k for k in self.table if k.endswith(suffix)]:
            del self.table[key]
            self._dirty = True

    def merge_all(self, table: dict[str, dict[int, int]], data_version: DataVersion) -> bool:
        """Takes a master's offsets (SlaveSynchronize): each topic@group the master has
        replaces ours whole; entries only we have are kept, as RocketMQ's putAll does,
        because consumers commit to a slave while its master is down and those commits
        must survive until the master knows them. Written at once, not on the periodic
        flush, so a slave promoted right after a sync starts from what it synced.
        Returns True if anything changed."""
        changed = data_version != self.data_version
        for key, queues in table.items():
            if self.table.get(key) != queues:
                self.table[key] = dict(queues)
                changed = True
        self.data_version = DataVersion(
            data_version.state_version, data_version.timestamp, data_version.counter
        )
        if changed:
            self.flush(force=True)
        return changed
