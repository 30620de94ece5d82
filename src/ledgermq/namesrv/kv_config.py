"""The NameServer's KV config tables (namespace -> key -> value), e.g. ORDER_TOPIC_CONFIG.

Persisted as ``{"configTable":{ns:{k:v}}}`` (RocketMQ's kvConfig.json), rewritten whole
through the disk layer's atomic replace after every change, so a crash leaves either the
old or the new file, never a torn one.
"""

from __future__ import annotations

import logging
import os

from ledgermq.common import fastjson
from ledgermq.storage.disk import Disk, OsDisk

log = logging.getLogger(__name__)

NAMESPACE_ORDER_TOPIC_CONFIG = "ORDER_TOPIC_CONFIG"


class KvConfigError(Exception):
    """kvConfig.json exists but cannot be read; refusing to start keeps it intact
    (the next write would otherwise replace it with an empty table)."""


class KvConfigManager:
    def __init__(self, path: str | os.PathLike[str], disk: Disk | None = None) -> None:
        self.path = os.fspath(path)
        self.disk = disk if disk is not None else OsDisk()
        self.table: dict[str, dict[str, str]] = {}

    def load(self) -> None:
        data = self.disk.read_file(self.path)
        if data is None or not data.strip():
            self.table = {}
            return
        try:
            obj = fastjson.decode(data)
            raw = (obj.get("configTable") or {}) if isinstance(obj, dict) else None
            if not isinstance(raw, dict):
                raise ValueError("no configTable object")
            self.table = {
                str(ns): {str(k): str(v) for k, v in (kv or {}).items()} for ns, kv in raw.items()
            }
        except (ValueError, AttributeError) as exc:
            raise KvConfigError(f"cannot load KV config {self.path}: {exc}") from None
        log.info("loaded KV config %s: %d namespaces", self.path, len(self.table))

    def persist(self) -> None:
        parent = os.path.dirname(self.path)
        if parent:
            self.disk.makedirs(parent)
        self.disk.replace_file(self.path, fastjson.encode({"configTable": self.table}))

    def put(self, namespace: str, key: str, value: str) -> None:
        ns = self.table.setdefault(namespace, {})
        previous = ns.get(key)
        ns[key] = value
        if previous is None:
            log.info("KV config created: %s %s=%s", namespace, key, value)
        elif previous != value:
            log.info("KV config updated: %s %s: %s -> %s", namespace, key, previous, value)
        self._persist_or_undo(namespace, key, previous)

    def delete(self, namespace: str, key: str) -> bool:
        ns = self.table.get(namespace)
        if ns is None or key not in ns:
            return False
        previous = ns.pop(key)
        log.info("KV config deleted: %s %s=%s", namespace, key, previous)
        self._persist_or_undo(namespace, key, previous)
        return True

    def _persist_or_undo(self, namespace: str, key: str, previous: str | None) -> None:
        # If the file cannot be written (disk full), memory must not claim a change
        # the next restart would forget.
        try:
            self.persist()
        except Exception:
            ns = self.table.setdefault(namespace, {})
            if previous is None:
                ns.pop(key, None)
            else:
                ns[key] = previous
            if not ns:
                self.table.pop(namespace, None)
            raise

    def get(self, namespace: str, key: str) -> str | None:
        return self.table.get(namespace, {}).get(key)

    def get_namespace(self, namespace: str) -> dict[str, str] | None:
        ns = self.table.get(namespace)
        return dict(ns) if ns is not None else None
