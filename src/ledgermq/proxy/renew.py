"""Auto-renewal of push consumers' receipt handles (the Java proxy's receipt handle
manager).

A push consumer receives with auto_renew and no invisible time: the proxy pops with
defaultInvisibleTimeMills and keeps each message invisible until the client acks,
nacks or forwards it. One scanner task looks at every tracked handle each period and
renews those about to expire; the client keeps the handle it was given, so its ack
is translated to the newest one through `release()`.

Renewal stops (and the message becomes visible again when its current invisible
time runs out, so nothing is lost) when the client acks it, when the client is gone
(terminated, or silent for channelExpiredInSeconds), after renewMaxTimeMillis, or
when the broker refuses the handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ledgermq.proxy.receipt import ReceiptHandle
from ledgermq.proxy.status import Code, ProxyError

log = logging.getLogger(__name__)

ChangeInvisible = Callable[[str, str, ReceiptHandle, int], Awaitable[ReceiptHandle]]
TrackKey = tuple[str, str]  # (group, the handle the client holds)


@dataclass(frozen=True, slots=True)
class RenewPolicy:
    slice_ms: int  # each renewal makes the message invisible this long from now
    ahead_ms: int  # renew when the handle expires within this
    max_ms: int  # stop renewing this long after the message was received
    period_s: float  # how often the scanner looks


@dataclass(slots=True)
class _Tracked:
    client_id: str
    group: str
    topic: str
    handle: ReceiptHandle  # the newest one
    received_at_ms: int
    renewing: asyncio.Task[None] | None = None


class HandleRenewer:
    def __init__(
        self,
        change_invisible: ChangeInvisible,
        policy: RenewPolicy,
        *,
        client_online: Callable[[str], bool],
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._change = change_invisible
        self.policy = policy
        self._online = client_online
        self._clock_ms = clock_ms
        self._tracked: dict[TrackKey, _Tracked] = {}
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._tracked)

    def track(self, client_id: str, group: str, topic: str, handle: ReceiptHandle) -> None:
        self._tracked[(group, handle.encode())] = _Tracked(
            client_id, group, topic, handle, self._clock_ms()
        )

    async def release(self, group: str, client_handle: str) -> ReceiptHandle | None:
        """Stops renewing the message the client holds `client_handle` for; returns
        its newest handle (None if it was not tracked). Waits for a renewal in flight,
        so the caller never acts on a handle that is being replaced."""
        entry = self._tracked.pop((group, client_handle), None)
        if entry is None:
            return None
        if entry.renewing is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(entry.renewing)
        return entry.handle

    def drop_client(self, client_id: str) -> int:
        gone = [k for k, e in self._tracked.items() if e.client_id == client_id]
        for key in gone:
            del self._tracked[key]
        return len(gone)

    async def renew_due(self) -> int:
        """One scan: forgets what must no longer be renewed and renews what expires
        soon. Returns how many renewals it started (and awaited)."""
        now = self._clock_ms()
        started: list[asyncio.Task[None]] = []
        for key, entry in list(self._tracked.items()):
            if entry.renewing is not None:
                continue
            if not self._online(entry.client_id):
                log.info("client %s is gone: its messages become visible again", entry.client_id)
                del self._tracked[key]
            elif now - entry.received_at_ms >= self.policy.max_ms:
                log.info("stopped renewing a message of %s after the maximum", entry.group)
                del self._tracked[key]
            elif entry.handle.expires_at_ms <= now:
                del self._tracked[key]  # too late: the broker revives it anyway
            elif entry.handle.expires_at_ms - now <= self.policy.ahead_ms:
                entry.renewing = asyncio.create_task(self._renew(key, entry))
                started.append(entry.renewing)
        if started:
            await asyncio.gather(*started, return_exceptions=True)
        return len(started)

    async def _renew(self, key: TrackKey, entry: _Tracked) -> None:
        try:
            entry.handle = await self._change(
                entry.group, entry.topic, entry.handle, self.policy.slice_ms
            )
        except ProxyError as exc:
            if exc.code == Code.INVALID_RECEIPT_HANDLE:
                self._tracked.pop(key, None)
            log.warning("renewing a receipt handle of %s failed: %s", entry.group, exc.message)
        except Exception as exc:  # the next scan tries again while it has time
            log.warning("renewing a receipt handle of %s failed: %s", entry.group, exc)
        finally:
            entry.renewing = None

    # the scanner task ---------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.policy.period_s)
            try:
                await self.renew_due()
            except Exception:
                log.exception("receipt handle renewal scan failed")
