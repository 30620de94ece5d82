"""FIFO pops: a queue whose popped messages are neither acked nor expired yields nothing
more to that group, so a group consumes each queue in order (ConsumerOrderInfoManager).

An orderly pop writes no checkpoint and does not move the consumer offset: an ack moves
it (past the acked prefix), and a batch whose invisible time passed is simply popped
again from the committed offset. So the only state is one small entry per queue being
consumed orderly, dropped when its batch is fully acked. It is not persisted: after a
restart the unacked messages are visible at once (never lost, never out of order).
"""

from __future__ import annotations

from dataclasses import dataclass

OrderKey = tuple[str, str, int]  # (topic, group, queue id)


@dataclass(slots=True)
class _OrderBatch:
    pop_time: int
    end_offset: int  # where the queue continues after the batch (filtered ones skipped)
    visible_at: dict[int, int]  # unacked offset -> when it may be handed out again
    attempt_id: str | None
    count: int  # how often these messages were handed out before (reconsume times)


class OrderLocks:
    def __init__(self) -> None:
        self._batches: dict[OrderKey, _OrderBatch] = {}

    def __len__(self) -> int:
        return len(self._batches)

    def blocked(self, key: OrderKey, now: int, attempt_id: str | None) -> bool:
        """May nothing be popped from this queue now? A retried request (same attempt
        id) gets its batch again instead of nothing."""
        batch = self._batches.get(key)
        if batch is None or not any(v > now for v in batch.visible_at.values()):
            return False
        return attempt_id is None or attempt_id != batch.attempt_id

    def popped(
        self,
        key: OrderKey,
        offsets: list[int],
        end_offset: int,
        pop_time: int,
        invisible_time: int,
        attempt_id: str | None,
    ) -> int:
        """Records a handed-out batch; returns its reconsume count."""
        old = self._batches.get(key)
        count = 0
        if old is not None and offsets and offsets[0] in old.visible_at:
            same_attempt = attempt_id is not None and attempt_id == old.attempt_id
            count = old.count if same_attempt else old.count + 1
        self._batches[key] = _OrderBatch(
            pop_time,
            end_offset,
            {o: pop_time + invisible_time for o in offsets},
            attempt_id,
            count,
        )
        return count

    def ack(self, key: OrderKey, offset: int) -> int | None:
        """Strikes `offset` off; returns the consumer offset to commit (the first unacked
        offset, or the batch's end), or None when nothing changes."""
        batch = self._batches.get(key)
        if batch is None or offset not in batch.visible_at:
            return None
        del batch.visible_at[offset]
        if not batch.visible_at:
            del self._batches[key]
            return batch.end_offset
        return min(batch.visible_at)

    def change_invisible(self, key: OrderKey, offset: int, visible_at: int) -> int | None:
        """Moves one unacked message's visibility; returns the batch's popTime, or None
        when the message is not in flight any more."""
        batch = self._batches.get(key)
        if batch is None or offset not in batch.visible_at:
            return None
        batch.visible_at[offset] = visible_at
        return batch.pop_time
