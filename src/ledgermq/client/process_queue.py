"""Per-queue buffer of pulled, not yet acknowledged messages (Java's ProcessQueue).

The offset a consumer may commit is the lowest offset still in the buffer: committing
anything higher could skip a message that is still being consumed or waiting for a
retry. When the buffer is empty it is the next offset to pull.
"""

from __future__ import annotations

import asyncio
import heapq
import time

from ledgermq.client.message import MessageExt


class ProcessQueue:
    __slots__ = (
        "_heap",
        "_space",
        "consuming",
        "dropped",
        "last_lock_time",
        "last_pull_time",
        "lock_consume",
        "locked",
        "max_count",
        "msgs",
        "next_offset",
    )

    def __init__(self, next_offset: int = 0, *, max_count: int = 1000) -> None:
        # offset -> message, for everything pulled and not yet acknowledged.
        self.msgs: dict[int, MessageExt] = {}
        self._heap: list[int] = []
        # Orderly mode moves messages here while the listener has them.
        self.consuming: dict[int, MessageExt] = {}
        self.next_offset = next_offset
        self.max_count = max_count
        self.dropped = False
        self.locked = False
        self.last_lock_time = 0.0
        self.last_pull_time = time.monotonic()
        self._space = asyncio.Event()
        self._space.set()
        # Orderly consumption holds this while a listener runs, so releasing the queue
        # waits for the batch in hand.
        self.lock_consume = asyncio.Lock()

    # buffering -------------------------------------------------------------------------
    def put(self, msgs: list[MessageExt], next_offset: int | None = None) -> list[MessageExt]:
        """Adds pulled messages; returns those that were new (duplicates are ignored)."""
        fresh: list[MessageExt] = []
        for m in msgs:
            off = m.queue_offset
            if off in self.msgs or off in self.consuming:
                continue
            self.msgs[off] = m
            heapq.heappush(self._heap, off)
            fresh.append(m)
        if next_offset is not None:
            self.next_offset = max(self.next_offset, next_offset)
        elif fresh:
            self.next_offset = max(self.next_offset, max(m.queue_offset for m in fresh) + 1)
        self._update_space()
        return fresh

    def remove(self, msgs: list[MessageExt]) -> int:
        """Acknowledges messages; returns the offset that is now safe to commit."""
        for m in msgs:
            self.msgs.pop(m.queue_offset, None)
            self.consuming.pop(m.queue_offset, None)
        self._update_space()
        return self.commit_offset()

    def commit_offset(self) -> int:
        lowest = self._lowest()
        if self.consuming:
            c = min(self.consuming)
            lowest = c if lowest is None else min(lowest, c)
        return self.next_offset if lowest is None else lowest

    def _lowest(self) -> int | None:
        heap = self._heap
        while heap and heap[0] not in self.msgs:
            heapq.heappop(heap)  # lazily drop acknowledged or taken offsets
        return heap[0] if heap else None

    @property
    def count(self) -> int:
        return len(self.msgs) + len(self.consuming)

    def _update_space(self) -> None:
        if self.count < self.max_count:
            self._space.set()
        else:
            self._space.clear()

    async def wait_for_space(self) -> None:
        """Flow control: a pull waits while the buffer is full."""
        await self._space.wait()

    def clear(self) -> None:
        self.msgs.clear()
        self.consuming.clear()
        self._heap.clear()
        self._update_space()

    def reset(self, next_offset: int) -> None:
        """Forgets everything buffered and restarts at `next_offset` (seek, reset)."""
        self.clear()
        self.next_offset = next_offset

    # orderly -----------------------------------------------------------------------------
    def take(self, n: int) -> list[MessageExt]:
        """Moves the `n` lowest buffered messages to the consuming set, in offset order."""
        out: list[MessageExt] = []
        while len(out) < n:
            off = self._lowest()
            if off is None:
                break
            heapq.heappop(self._heap)
            m = self.msgs.pop(off)
            self.consuming[off] = m
            out.append(m)
        return out

    def commit_taken(self) -> int:
        """Orderly SUCCESS: the taken batch is done. Returns the new commit offset."""
        self.consuming.clear()
        self._update_space()
        return self.commit_offset()

    def give_back(self, msgs: list[MessageExt]) -> None:
        """Orderly SUSPEND: the batch goes back to the front of the queue."""
        for m in msgs:
            self.consuming.pop(m.queue_offset, None)
            self.msgs[m.queue_offset] = m
            heapq.heappush(self._heap, m.queue_offset)

    def lock_expired(self, now: float, max_live: float = 30.0) -> bool:
        return now - self.last_lock_time > max_live
