"""Suspended PULL requests, woken when their queue grows (PullRequestHoldService).

The store calls `notify_arrival` for every dispatched message, so the common case (no
one waiting on that queue) is one dict lookup. Each waiter carries its own deadline via
`asyncio.wait_for`, so no periodic sweep is needed for timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Waiter:
    offset: int
    future: asyncio.Future[None]
    # The pull's tag filter on ConsumeQueue tagsCodes; None = every message matches.
    matches: Callable[[int], bool] | None


class PullHoldService:
    def __init__(self) -> None:
        self._waiters: dict[tuple[str, int], list[_Waiter]] = {}

    @property
    def suspended(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    async def wait(
        self,
        topic: str,
        queue_id: int,
        offset: int,
        timeout_s: float,
        matches: Callable[[int], bool] | None = None,
    ) -> bool:
        """Waits until a message at or past `offset` arrives that `matches` accepts (by
        tagsCode), like RocketMQ's hold service: a tag-filtered consumer is not woken,
        only to be told "retry", by messages it would not get; False on timeout."""
        key = (topic, queue_id)
        waiter = _Waiter(offset, asyncio.get_running_loop().create_future(), matches)
        self._waiters.setdefault(key, []).append(waiter)
        try:
            await asyncio.wait_for(waiter.future, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                try:
                    waiters.remove(waiter)
                except ValueError:
                    pass
                if not waiters:
                    del self._waiters[key]

    def notify_arrival(
        self, topic: str, queue_id: int, logic_offset: int, tags_code: int = 0
    ) -> None:
        """A message with `tags_code` was appended at `logic_offset` of the queue."""
        waiters = self._waiters.get((topic, queue_id))
        if not waiters:
            return
        for waiter in waiters:
            if (
                waiter.offset <= logic_offset
                and not waiter.future.done()
                and (waiter.matches is None or waiter.matches(tags_code))
            ):
                waiter.future.set_result(None)

    def wake_all(self) -> None:
        """On shutdown: answer every suspended pull now."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.future.done():
                    waiter.future.set_result(None)
