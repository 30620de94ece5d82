"""Where consume progress lives: on the broker (clustering) or in a local file (broadcasting)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ledgermq.client import broker_api
from ledgermq.client.errors import MQClientError
from ledgermq.client.instance import ClientInstance
from ledgermq.client.message import MessageQueue
from ledgermq.storage.disk import Disk, DiskError, OsDisk

log = logging.getLogger(__name__)


class OffsetStore:
    """In-memory table plus a backing store; offsets are "next message to consume"."""

    def __init__(self) -> None:
        self.offsets: dict[MessageQueue, int] = {}
        self._dirty: set[MessageQueue] = set()

    async def load(self) -> None:
        return None

    def update(self, mq: MessageQueue, offset: int, *, increase_only: bool = False) -> None:
        if offset < 0:
            return
        old = self.offsets.get(mq)
        if increase_only and old is not None and old >= offset:
            return
        if old != offset:
            self.offsets[mq] = offset
            self._dirty.add(mq)

    def get(self, mq: MessageQueue) -> int:
        return self.offsets.get(mq, -1)

    async def read(self, mq: MessageQueue, *, from_store: bool = False) -> int:
        """-1 when nothing is stored."""
        if not from_store and mq in self.offsets:
            return self.offsets[mq]
        value = await self._read_store(mq)
        if value >= 0:
            self.offsets[mq] = value
            self._dirty.discard(mq)
        return value

    async def _read_store(self, mq: MessageQueue) -> int:
        raise NotImplementedError

    async def persist(
        self, mqs: set[MessageQueue] | list[MessageQueue] | None = None, *, force: bool = False
    ) -> None:
        raise NotImplementedError

    def remove(self, mq: MessageQueue) -> None:
        self.offsets.pop(mq, None)
        self._dirty.discard(mq)


class RemoteOffsetStore(OffsetStore):
    def __init__(self, instance: ClientInstance, group: str) -> None:
        super().__init__()
        self.instance = instance
        self.group = group

    async def _read_store(self, mq: MessageQueue) -> int:
        addr = await self.instance.broker_addr(mq.broker_name, mq.topic)
        return await broker_api.query_consumer_offset(self.instance, addr, self.group, mq)

    async def persist(
        self, mqs: set[MessageQueue] | list[MessageQueue] | None = None, *, force: bool = False
    ) -> None:
        """Pushes changed offsets of `mqs` (default: all known) to their brokers."""
        targets = set(self.offsets) if mqs is None else set(mqs) & set(self.offsets)
        if not force:
            targets &= self._dirty
        for mq in sorted(targets):
            offset = self.offsets[mq]
            try:
                addr = await self.instance.broker_addr(mq.broker_name, mq.topic)
                await broker_api.update_consumer_offset(self.instance, addr, self.group, mq, offset)
            except MQClientError as exc:
                log.warning("committing offset %d of %s failed: %s", offset, mq, exc)
                continue
            if self.offsets.get(mq) == offset:
                self._dirty.discard(mq)


def default_offsets_path(client_id: str, group: str) -> Path:
    safe_cid = client_id.replace(":", "_")
    return Path.home() / ".ledgermq_offsets" / safe_cid / group / "offsets.json"


class LocalFileOffsetStore(OffsetStore):
    """Broadcasting progress: one JSON file per consumer, replaced atomically.

    Files go through a `Disk` (DESIGN principle 4): the previous version is kept as
    `offsets.json.bak` (like Java's) and read when the main file is missing or unreadable.
    """

    def __init__(self, path: Path | str, disk: Disk | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.disk = disk if disk is not None else OsDisk()

    @property
    def _bak_path(self) -> str:
        return str(self.path.with_suffix(".json.bak"))

    def _read_file(self) -> dict[MessageQueue, int]:
        for candidate in (str(self.path), self._bak_path):
            try:
                data = self.disk.read_file(candidate)
                if data is None:
                    continue
                raw = json.loads(data.decode("utf-8"))
                table: dict[MessageQueue, int] = {}
                for entry in raw.get("offsetTable", []):
                    mq = MessageQueue(entry["topic"], entry["brokerName"], int(entry["queueId"]))
                    table[mq] = int(entry["offset"])
            except (DiskError, ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("offset file %s unreadable: %s", candidate, exc)
                continue
            return table
        return {}

    async def load(self) -> None:
        self.offsets.update(self._read_file())

    async def _read_store(self, mq: MessageQueue) -> int:
        return self._read_file().get(mq, -1)

    async def persist(
        self, mqs: set[MessageQueue] | list[MessageQueue] | None = None, *, force: bool = False
    ) -> None:
        if not self._dirty and not force:
            return
        entries = [
            {"topic": mq.topic, "brokerName": mq.broker_name, "queueId": mq.queue_id, "offset": off}
            for mq, off in sorted(self.offsets.items())
        ]
        data = json.dumps({"offsetTable": entries}, indent=1).encode()
        self._write_atomically(data)
        self._dirty.clear()

    def _write_atomically(self, data: bytes) -> None:
        # Disk.replace_file: tmp + fsync + rename + directory fsync, so a crash leaves
        # the old or the new file, never a torn one.
        disk = self.disk
        path = str(self.path)
        disk.makedirs(str(self.path.parent))
        try:
            old = disk.read_file(path)
        except DiskError:
            old = None
        if old is not None and old != data:
            try:
                disk.replace_file(self._bak_path, old)
            except DiskError as exc:
                log.warning("offset backup %s not written: %s", self._bak_path, exc)
        disk.replace_file(path, data)


async def compute_start_offset(
    instance: ClientInstance,
    store: OffsetStore,
    mq: MessageQueue,
    consume_from_where: str,
    consume_timestamp: int,
) -> int:
    """Where a newly owned queue starts: the stored offset, else `consume_from_where`.

    Retry topics start at 0 for LAST (their backlog is always wanted) and at the end for
    TIMESTAMP, as Java's computePullFromWhere does.
    """
    store.remove(mq)  # stale memory from an earlier ownership must not win
    offset = await store.read(mq, from_store=True)
    if offset >= 0:
        return offset
    if consume_from_where == "CONSUME_FROM_FIRST_OFFSET":
        return 0
    retry = mq.topic.startswith("%RETRY%")
    if consume_from_where == "CONSUME_FROM_LAST_OFFSET" and retry:
        return 0
    addr = await instance.broker_addr(mq.broker_name, mq.topic, master_only=False)
    if consume_from_where == "CONSUME_FROM_LAST_OFFSET" or retry:
        return await broker_api.get_max_offset(instance, addr, mq)
    return await broker_api.search_offset(instance, addr, mq, consume_timestamp)
