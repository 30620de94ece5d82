"""Puts a fully built message into the store, applying delay levels on the way.

Used by producer sends, consumer send-backs and the schedule service alike, so DELAY
handling and put counting live in one place.
"""

from __future__ import annotations

from collections.abc import Callable

from ledgermq.broker.delay import divert_to_schedule
from ledgermq.broker.stats import BrokerStats
from ledgermq.broker.store_port import PutOutcome, StorePort
from ledgermq.store.message_store import BatchToStore, MessageToStore


class MessagePutter:
    def __init__(
        self,
        store: StorePort,
        delay_levels_ms: list[int],
        stats: BrokerStats,
        clock_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._levels = delay_levels_ms
        self._stats = stats
        self._clock_ms = clock_ms

    def put(self, msg: MessageToStore) -> PutOutcome:
        self._divert_delayed(msg)
        outcome = self._store.put(msg)
        if outcome.ok:
            self._stats.put_total += 1
        return outcome

    def put_group(self, msgs: list[MessageToStore]) -> list[PutOutcome]:
        """Independent messages stored together (see MessageStore.put_group)."""
        for msg in msgs:
            self._divert_delayed(msg)
        outcomes = self._store.put_group(msgs)
        self._stats.put_total += sum(1 for o in outcomes if o.ok)
        return outcomes

    def _divert_delayed(self, msg: MessageToStore) -> None:
        level = divert_to_schedule(msg, len(self._levels)) if msg.properties else 0
        if level:
            # The schedule queue is ordered by delivery time; its tagsCode carries it.
            msg.tags_code = self._clock_ms() + self._levels[level - 1]
            msg.properties_text = None  # the diversion rewrote the properties

    def put_batch(self, batch: BatchToStore) -> PutOutcome:
        outcome = self._store.put_batch(batch)
        if outcome.ok:
            self._stats.put_total += len(batch.items)
        return outcome
