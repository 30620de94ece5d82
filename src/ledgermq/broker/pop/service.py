"""The broker's POP state in one place: the revive service, FIFO locks, waiting pops,
and writing checkpoint/ack records into the revive topic through the normal put path
(so they are flushed, and in a DLedger group replicated, like any message)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from ledgermq.broker import topics as t
from ledgermq.broker.pop.order import OrderLocks
from ledgermq.broker.pop.records import (
    DEFAULT_REVIVE_QUEUE_NUM,
    AckRecord,
    CheckPoint,
    encode_record_body,
    revive_topic,
)
from ledgermq.broker.pop.revive import ReviveService
from ledgermq.broker.store_port import PutOutcome, StorePort
from ledgermq.common.message import PROPERTY_TAGS
from ledgermq.store.message_store import MessageToStore

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker

log = logging.getLogger(__name__)


class PopWaiters:
    """Long-polling pops, woken when any queue of a topic they wait on grows. Keyed by
    topic (a pop with queueId -1 waits on every queue and on its retry topic)."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    @property
    def count(self) -> int:
        return len({id(f) for fs in self._waiters.values() for f in fs})

    async def wait(self, topics: tuple[str, ...], timeout_s: float) -> bool:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for topic in topics:
            self._waiters.setdefault(topic, set()).add(fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            for topic in topics:
                waiters = self._waiters.get(topic)
                if waiters is not None:
                    waiters.discard(fut)
                    if not waiters:
                        del self._waiters[topic]

    def notify(self, topic: str) -> None:
        for fut in self._waiters.get(topic, ()):
            if not fut.done():
                fut.set_result(None)

    def wake_all(self) -> None:
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)


class PopService:
    def __init__(self, broker: Broker, revive_queue_num: int = DEFAULT_REVIVE_QUEUE_NUM) -> None:
        self._b = broker
        self.revive_topic = revive_topic(broker.config.broker_cluster_name)
        self.revive_queue_num = revive_queue_num
        self.revive = ReviveService(broker, self.revive_topic, revive_queue_num)
        self.order = OrderLocks()
        self.waiters = PopWaiters()
        self._next_revive_qid = 0
        # Pop progress committed but maybe not yet in the offset table: in a DLedger
        # group a commit reaches the table only when its log entry applies, and a pop
        # in between must not hand out the same messages again. Entries go as soon as
        # the table has caught up, so this stays as small as the replication lag.
        self._unapplied: dict[tuple[str, str, int], int] = {}
        self._stopping: asyncio.Task[None] | None = None

    # --- master/slave ----------------------------------------------------------------------
    def start_revive(self) -> None:
        """On the master only: checkpoints are revived (and written) by whoever writes."""
        # a new term: the table holds everything applied (the broker waited for that),
        # and commits proposed in an earlier term may never apply
        self._unapplied.clear()
        self._b.topic_config.create_system_group_topic(
            self.revive_topic, self.revive_queue_num, t.PERM_READ | t.PERM_WRITE
        )
        self.revive.start()

    def stop_revive(self) -> None:
        self._unapplied.clear()
        if self.revive.running:
            # kept: a task nobody references may be collected before it finishes
            self._stopping = asyncio.get_running_loop().create_task(
                self.revive.stop(), name="pop-revive-stop"
            )

    async def stop(self) -> None:
        self.waiters.wake_all()
        await self.revive.stop()
        if self._stopping is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._stopping

    @property
    def serving(self) -> bool:
        """Pops need a running reviver: without it nothing popped would come back."""
        return self.revive.running and self.revive.ready and not self._b.is_slave

    # --- consumer offsets ------------------------------------------------------------------
    def offset(self, group: str, topic: str, queue_id: int) -> int:
        """The group's pop progress in a queue; -1 when it has none."""
        stored = self._b.consumer_offsets.query(group, topic, queue_id)
        key = (group, topic, queue_id)
        pending = self._unapplied.get(key)
        if pending is None:
            return stored
        if stored >= pending:
            del self._unapplied[key]
            return stored
        return pending

    def commit(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        committed = self._b.commit_master_progress(group, topic, queue_id, offset, wait=True)
        if committed is None and self._b.is_slave:
            return  # deposed meanwhile: the new master's table decides
        if self._b.consumer_offsets.query(group, topic, queue_id) == offset:
            return
        key = (group, topic, queue_id)
        self._unapplied[key] = offset
        if committed is not None:
            committed.add_done_callback(lambda f: self._commit_settled(key, offset, f))

    def _commit_settled(self, key: tuple[str, str, int], offset: int, f: asyncio.Future) -> None:
        # a commit the log refused (or lost with its term) never reaches the table: a
        # stale entry here would make pops skip the messages between the two offsets
        failed = f.cancelled() or f.exception() is not None
        if failed and self._unapplied.get(key) == offset:
            del self._unapplied[key]

    # --- events ------------------------------------------------------------------------
    def notify_arrival(self, topic: str) -> None:
        if topic == self.revive_topic:
            self.revive.notify()
        else:
            self.waiters.notify(topic)

    # --- revive records ----------------------------------------------------------------
    def next_revive_qid(self) -> int:
        qid = self._next_revive_qid % self.revive_queue_num
        self._next_revive_qid = qid + 1
        return qid

    def put_record(self, revive_qid: int, record: CheckPoint | AckRecord) -> PutOutcome:
        tag = "ck" if isinstance(record, CheckPoint) else record.tag
        return self._b.store.put(
            MessageToStore(
                topic=self.revive_topic,
                queue_id=revive_qid,
                body=encode_record_body(record),
                # put_message never waits; the processor decides that (see `durable`)
                properties={PROPERTY_TAGS: tag},
                born_timestamp=self._b.clock_ms(),
                born_host=self._b.store_host,
            )
        )

    async def durable(self, outcome: PutOutcome) -> tuple[str, str]:
        """Waits until a record is as safe as an acknowledged send would be: fsynced with
        SYNC_FLUSH, on a majority in a DLedger group."""
        if outcome.ok and (StorePort.must_wait(outcome) or self._b.sync_flush):
            return await self._b.store.wait_durable(outcome)
        return outcome.status, outcome.remark
