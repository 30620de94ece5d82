"""Queue locks for orderly consumers (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ).

A lock belongs to one client of a group and lapses when it is not renewed within
`max_live_ms` (RocketMQ: 60 s; clients renew about every 20 s).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ledgermq.common.message import MessageQueue


@dataclass(slots=True)
class _Lock:
    client_id: str
    last_update_ms: int


class RebalanceLockManager:
    def __init__(self, clock_ms: Callable[[], int], max_live_ms: int = 60_000) -> None:
        self._clock_ms = clock_ms
        self.max_live_ms = max_live_ms
        self._groups: dict[str, dict[MessageQueue, _Lock]] = {}

    def _alive(self, lock: _Lock, now: int) -> bool:
        return now - lock.last_update_ms <= self.max_live_ms

    def try_lock_batch(
        self, group: str, mqs: Iterable[MessageQueue], client_id: str
    ) -> list[MessageQueue]:
        now = self._clock_ms()
        locks = self._groups.setdefault(group, {})
        granted: list[MessageQueue] = []
        for mq in mqs:
            lock = locks.get(mq)
            if lock is None or not self._alive(lock, now) or lock.client_id == client_id:
                locks[mq] = _Lock(client_id, now)
                granted.append(mq)
        return granted

    def unlock_batch(self, group: str, mqs: Iterable[MessageQueue], client_id: str) -> None:
        locks = self._groups.get(group)
        if not locks:
            return
        for mq in mqs:
            lock = locks.get(mq)
            if lock is not None and lock.client_id == client_id:
                del locks[mq]

    def is_locked(self, group: str, mq: MessageQueue, client_id: str) -> bool:
        lock = self._groups.get(group, {}).get(mq)
        return (
            lock is not None and lock.client_id == client_id and self._alive(lock, self._clock_ms())
        )
