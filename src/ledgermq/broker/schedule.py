"""Delivers delay-level messages when due (ScheduleMessageService).

One task per level reads its SCHEDULE_TOPIC_XXXX queue in order; records in one level
become due in store order, so a task only ever waits for the head of its queue. Progress
per level is kept in config/delayOffset.json: a crash re-delivers at most what was
delivered since the last flush (at-least-once, as RocketMQ).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ledgermq.broker.config_file import JsonConfigFile
from ledgermq.broker.delay import restore_from_schedule
from ledgermq.broker.putter import MessagePutter
from ledgermq.broker.store_port import PutOutcome, StorePort
from ledgermq.broker.topics import SCHEDULE_TOPIC
from ledgermq.common.message import MessageDecodeError, decode_record
from ledgermq.common.route_data import DataVersion

log = logging.getLogger(__name__)

_BATCH = 32
_IDLE_RECHECK_S = 1.0
_RETRY_AFTER_FAILURE_S = 1.0


class ScheduleService:
    def __init__(
        self,
        store: StorePort,
        putter: MessagePutter,
        levels_ms: list[int],
        file: JsonConfigFile,
        clock_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._putter = putter
        self.levels_ms = levels_ms
        self._file = file
        self._clock_ms = clock_ms
        self.offsets: dict[int, int] = {}
        # told of each level's new delivery progress (a DLedger master logs it)
        self.on_advance: Callable[[int, int], None] | None = None
        self.data_version = DataVersion()
        self._dirty = False
        self._events: dict[int, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.delivered = 0

    # --- persistence ---------------------------------------------------------------
    def load(self) -> None:
        obj = self._file.load()
        if obj is None:
            return
        self.offsets = {int(k): int(v) for k, v in (obj.get("offsetTable") or {}).items()}
        self.data_version = DataVersion.from_json(obj.get("dataVersion"))

    def to_json(self) -> dict[str, Any]:
        return {
            "offsetTable": {str(k): v for k, v in sorted(self.offsets.items())},
            "dataVersion": self.data_version.to_json(),
        }

    def flush(self, force: bool = False) -> None:
        if self._dirty or force:
            self._dirty = False
            self._file.save(self.to_json())

    def replace_offsets(self, offsets: dict[int, int], data_version: DataVersion) -> bool:
        """Adopts a master's per-level progress (SlaveSynchronize) and writes it at once,
        so a slave promoted later neither re-delivers nor skips what the master did.
        Returns True if anything changed."""
        if offsets == self.offsets and data_version == self.data_version:
            return False
        self.offsets = dict(offsets)
        self.data_version = DataVersion(
            data_version.state_version, data_version.timestamp, data_version.counter
        )
        self.flush(force=True)
        return True

    # --- running -------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for level in range(1, len(self.levels_ms) + 1):
            self._events[level - 1] = asyncio.Event()
            self._tasks.append(loop.create_task(self._run_level(level)))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for event in self._events.values():
            event.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.flush(force=True)

    def notify_arrival(self, queue_id: int) -> None:
        event = self._events.get(queue_id)
        if event is not None:
            event.set()

    async def _wait(self, queue_id: int, timeout_s: float) -> None:
        event = self._events[queue_id]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
        event.clear()

    async def _run_level(self, level: int) -> None:
        qid = level - 1
        delay = self.levels_ms[qid]
        # ends once stop() dropped it: Python 3.11's wait_for can swallow a cancellation
        # that races with a wake-up
        while asyncio.current_task() in self._tasks:
            try:
                wait_s = await self._deliver_due(level, qid, delay)
            except Exception:
                log.exception("schedule level %d: delivery failed", level)
                wait_s = _RETRY_AFTER_FAILURE_S
            if wait_s > 0:
                await self._wait(qid, wait_s)

    async def _deliver_due(self, level: int, qid: int, delay_ms: int) -> float:
        """Delivers what is due; returns seconds to wait before looking again (0 = now)."""
        offset = self.offsets.get(level, 0)
        got = self._store.get(SCHEDULE_TOPIC, qid, offset, _BATCH, 1 << 62, None)
        if not got.records:
            if got.next_begin_offset != offset and got.status != "OFFSET_OVERFLOW_ONE":
                # Our offset fell outside the queue (files removed): follow the store.
                self._advance(level, got.next_begin_offset)
                return 0
            return _IDLE_RECHECK_S
        now = self._clock_ms()
        # re-puts made and not yet settled: (its outcome, the schedule offset after it)
        pending: list[tuple[PutOutcome, int]] = []
        wait_s = 0.0
        for record in got.records:
            try:
                stored, _ = decode_record(record)
            except MessageDecodeError as exc:
                log.error("schedule level %d: skipping undecodable record: %s", level, exc)
                if not await self._settle(level, pending):
                    return _RETRY_AFTER_FAILURE_S
                pending = []
                self._advance(level, self.offsets.get(level, 0) + 1)
                continue
            due = stored.store_timestamp + delay_ms
            if due > now:
                wait_s = (due - now) / 1000.0
                break
            outcome = self._putter.put(restore_from_schedule(stored))
            if not outcome.ok:
                log.warning(
                    "schedule level %d: re-put of offset %d failed: %s",
                    level,
                    stored.queue_offset,
                    outcome.status,
                )
                await self._settle(level, pending)
                return _RETRY_AFTER_FAILURE_S
            pending.append((outcome, stored.queue_offset + 1))
        if not await self._settle(level, pending):
            return _RETRY_AFTER_FAILURE_S
        return wait_s

    async def _settle(self, level: int, pending: list[tuple[PutOutcome, int]]) -> bool:
        """Advances past the re-puts in `pending` once they are safe; False if they are
        not (they are delivered again later: at-least-once).

        In a DLedger group a re-put is safe once a majority holds it, or a failover could
        lose the delivered message together with its schedule entry. The re-puts of one
        batch are entries in log order, so waiting for the last one waits for them all:
        one replication round per batch, not one per message."""
        if not pending:
            return True
        last, after = pending[-1]
        if StorePort.must_wait(last):
            status, remark = await self._store.wait_durable(last)
            if status != "PUT_OK":
                log.warning(
                    "schedule level %d: re-puts up to offset %d not replicated: %s",
                    level,
                    after - 1,
                    remark,
                )
                return False
        self.delivered += len(pending)
        self._advance(level, after)
        return True

    def _advance(self, level: int, offset: int) -> None:
        self.offsets[level] = offset
        self._dirty = True
        if self.on_advance is not None:
            self.on_advance(level, offset)

    def apply_replicated(self, level: int, offset: int) -> None:
        """Delivery progress that came from the group's log (it only moves forward)."""
        if offset > self.offsets.get(level, 0):
            self.offsets[level] = offset
            self._dirty = True
