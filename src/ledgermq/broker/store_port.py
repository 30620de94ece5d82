"""The broker's view of the message store: the one place that knows its method names.

Processors talk to this port so that changes in the store's API touch one file. The
methods are thin forwards; nothing here may await on the send hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ledgermq.store.message_store import BatchToStore, MessageStore, MessageToStore

# topic, queue id, queue offset, tagsCode, properties
ArrivalListener = Callable[[str, int, int, int, dict[str, str]], None]


@dataclass(slots=True)
class PutOutcome:
    status: str
    queue_offset: int
    commit_log_offset: int
    msg_ids: Sequence[str]
    remark: str
    raw: Any

    @property
    def ok(self) -> bool:
        return self.status == "PUT_OK"


@dataclass(slots=True)
class GetOutcome:
    status: str
    next_begin_offset: int
    min_offset: int
    max_offset: int
    records: Sequence[bytes]


class StorePort:
    def __init__(self, store: MessageStore) -> None:
        self.store = store

    # --- writes ------------------------------------------------------------------
    def put(self, msg: MessageToStore) -> PutOutcome:
        return self._outcome(self.store.put_message(msg))

    def put_batch(self, batch: BatchToStore) -> PutOutcome:
        return self._outcome(self.store.put_batch(batch))

    def put_group(self, msgs: list[MessageToStore]) -> list[PutOutcome]:
        return [self._outcome(r) for r in self.store.put_group(msgs)]

    @staticmethod
    def _outcome(r: Any) -> PutOutcome:
        return PutOutcome(
            r.status.value,
            r.queue_offset,
            r.commit_log_offset,
            r.msg_ids or ([r.msg_id] if r.msg_id else []),
            r.remark,
            r,
        )

    async def wait_durable(self, outcome: PutOutcome) -> tuple[str, str]:
        """The put's final (status, remark) once fsync covers it (FLUSH_DISK_TIMEOUT on
        timeout), or in a DLedger group once a majority holds it."""
        r = await self.store.wait_durable(outcome.raw)
        return r.status.value, r.remark

    @staticmethod
    def must_wait(outcome: PutOutcome) -> bool:
        """Is the put acknowledged only once replicated (DLedger), whatever WAIT says?"""
        return outcome.ok and outcome.raw.replicated is not None

    def delete_topic(self, topic: str) -> None:
        self.store.delete_topic(topic)

    # --- reads -------------------------------------------------------------------
    def get(
        self,
        topic: str,
        queue_id: int,
        offset: int,
        max_nums: int,
        max_bytes: int,
        code_filter: Callable[[int], bool] | None,
    ) -> GetOutcome:
        r = self.store.get_messages(topic, queue_id, offset, max_nums, max_bytes, code_filter)
        return GetOutcome(
            r.status.value, r.next_begin_offset, r.min_offset, r.max_offset, r.messages
        )

    def max_offset(self, topic: str, queue_id: int) -> int:
        return self.store.get_max_offset(topic, queue_id)

    def min_offset(self, topic: str, queue_id: int) -> int:
        return self.store.get_min_offset(topic, queue_id)

    def offset_by_time(self, topic: str, queue_id: int, ts: int, upper: bool = False) -> int:
        return self.store.get_offset_by_time(topic, queue_id, ts, "UPPER" if upper else "LOWER")

    def store_timestamp(self, topic: str, queue_id: int, offset: int) -> int | None:
        return self.store.get_store_timestamp(topic, queue_id, offset)

    def read_record(self, phy_offset: int) -> bytes | None:
        return self.store.read_record(phy_offset)

    def _records(self, msgs: list[Any]) -> list[bytes]:
        # The index answers with decoded messages; clients want the stored bytes.
        out = []
        for m in msgs:
            rec = self.store.read_record(m.commit_log_offset)
            if rec is not None:
                out.append(rec)
        return out

    def query_by_key(self, topic: str, key: str, max_num: int, begin: int, end: int) -> list[bytes]:
        return self._records(self.store.query_by_key(topic, key, max_num, begin, end))

    def query_by_unique_key(self, topic: str, key: str) -> list[bytes]:
        return self._records(self.store.query_by_unique_key(topic, key))

    def commit_log_max_offset(self) -> int:
        return self.store.max_physical_offset

    def commit_log_min_offset(self) -> int:
        return self.store.min_physical_offset

    def add_arrival_listener(self, listener: ArrivalListener) -> None:
        self.store.add_arrival_listener(listener)

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()
