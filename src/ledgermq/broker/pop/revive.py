"""Makes popped, unacked messages visible again when their invisible time is over
(RocketMQ's PopReviveService), from the checkpoints and acks in the revive topic.

One reader per revive queue reads the queue in order. A checkpoint becomes a pending
entry; acks strike offsets off it; an entry with nothing left is dropped. When an
entry's revive time passes, every offset still on it is put again into the group's pop
retry topic (or its DLQ after maxReconsumeTimes) and the entry is dropped.

Only the pending entries are kept in memory, and they are rebuildable: the queue's
committed progress (in the consumer offset table, group CID_RMQ_SYS_REVIVE_GROUP) never
passes the oldest pending checkpoint, so after a restart or a failover reading again
from it recreates exactly the pending set (acks always follow their checkpoint in the
same queue). Offsets revived but not yet covered by committed progress are revived again
after a crash: at-least-once, like every other redelivery.

Runs on the master only (it writes); a DLedger follower starts it when it is elected.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ledgermq.broker import topics as t
from ledgermq.broker.pop.records import (
    REVIVE_GROUP,
    AckRecord,
    CheckPoint,
    CkKey,
    ReviveRecordError,
    decode_revive_record,
)
from ledgermq.common.message import (
    PROPERTY_DELAY,
    PROPERTY_FIRST_POP_TIME,
    PROPERTY_ORIGIN_MESSAGE_ID,
    PROPERTY_RETRY_TOPIC,
    PROPERTY_TAGS,
    PROPERTY_WAIT,
    MessageDecodeError,
    MessageExt,
    decode_record,
)
from ledgermq.common.pop_handle import RETRY_PREFIX, original_topic, pop_retry_topic
from ledgermq.store.message_store import MessageToStore

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker

log = logging.getLogger(__name__)

_READ_BATCH = 64
_IDLE_RECHECK_S = 1.0
_RETRY_AFTER_FAILURE_MS = 1000
_ALL = 1 << 62


@dataclass(slots=True)
class _Pending:
    ck: CheckPoint
    revive_offset: int  # the checkpoint record's offset in its revive queue
    unacked: set[int]


@dataclass(slots=True)
class _ReviveQueue:
    qid: int
    read_offset: int = 0
    committed: int = -1
    # insertion order = revive-queue order, so the first entry is the oldest checkpoint
    pending: dict[CkKey, _Pending] = field(default_factory=dict)
    # (revive time, revive offset, key); stale entries are skipped when they surface
    due: list[tuple[int, int, CkKey]] = field(default_factory=list)


# the due heap keeps an acked checkpoint's entry until it surfaces; past this many stale
# entries (and twice the live ones) it is rebuilt, so memory follows what is unacked,
# not pops x invisible time
_COMPACT_SLACK = 1024


def _compact(q: _ReviveQueue) -> None:
    q.due = [(p.ck.revive_time, p.revive_offset, key) for key, p in q.pending.items()]
    heapq.heapify(q.due)


class ReviveService:
    def __init__(self, broker: Broker, topic: str, queue_num: int) -> None:
        self._b = broker
        self.topic = topic
        self.queue_num = queue_num
        self._queues: list[_ReviveQueue] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.revived = 0  # messages put back (retry or DLQ), for tests and stats
        self.ready = False  # the pending set is rebuilt (see start)
        self._generation = 0  # bumped by every start and stop; a run ends when it moves
        self._ready_event = asyncio.Event()
        self.dead_lettered = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def pending_count(self) -> int:
        return sum(len(q.pending) for q in self._queues)

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Rebuilds the pending set from the committed progress, then runs. Pops are
        served only once that replay is done (`ready`): then every popped offset is
        accounted for. The replay yields to the loop between batches: after a failover
        it may read hours of records, and the DLedger member must keep its heartbeats."""
        if self.running:
            return
        self._generation += 1
        self.ready = False
        self._ready_event = asyncio.Event()
        self._queues = [self._load_queue(qid) for qid in range(self.queue_num)]
        self._task = asyncio.get_running_loop().create_task(
            self._run(self._queues, self._generation), name="pop-revive"
        )

    async def wait_ready(self) -> None:
        await self._ready_event.wait()

    async def stop(self) -> None:
        # Everything is dropped before the await: a start() meanwhile (leadership back at
        # once) builds its own queues, which this stop must not wipe afterwards. The old
        # run also ends by itself once it sees a newer generation: Python 3.11's wait_for
        # can swallow a cancellation that races with its wake-up.
        self._generation += 1
        task, self._task = self._task, None
        self._queues = []
        self.ready = False
        if task is not None:
            task.cancel()
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def notify(self) -> None:
        """A record arrived in the revive topic."""
        self._wake.set()

    def _load_queue(self, qid: int) -> _ReviveQueue:
        stored = self._b.consumer_offsets.query(REVIVE_GROUP, self.topic, qid)
        start = stored if stored >= 0 else self._b.store.min_offset(self.topic, qid)
        return _ReviveQueue(qid, read_offset=max(start, 0), committed=stored)

    # --- the loop -----------------------------------------------------------------------
    async def _run(self, queues: list[_ReviveQueue], generation: int) -> None:
        for q in queues:
            while self._read_batch(q, replay=True):
                await asyncio.sleep(0)
                if self._generation != generation:
                    return
        self.ready = True
        self._ready_event.set()
        while self._generation == generation:
            wait_ms = _IDLE_RECHECK_S * 1000
            try:
                for q in queues:
                    self._read(q, replay=False)
                    next_due = await self._revive_due(q)
                    self._commit(q)
                    if next_due is not None:
                        wait_ms = min(wait_ms, next_due - self._b.clock_ms())
            except Exception:
                log.exception("pop revive pass failed")
                wait_ms = _RETRY_AFTER_FAILURE_MS
            if wait_ms > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_ms / 1000)
            self._wake.clear()

    def _read(self, q: _ReviveQueue, *, replay: bool) -> None:
        while self._read_batch(q, replay=replay):
            pass

    def _read_batch(self, q: _ReviveQueue, *, replay: bool) -> bool:
        """Applies up to one batch of revive records; True while more may follow."""
        got = self._b.store.get(self.topic, q.qid, q.read_offset, _READ_BATCH, _ALL, None)
        if not got.records:
            if got.next_begin_offset > q.read_offset and got.status != "OFFSET_OVERFLOW_ONE":
                q.read_offset = got.next_begin_offset  # old files removed: follow
                return True
            return False
        for record in got.records:
            self._apply(q, record, replay)
        return len(got.records) >= _READ_BATCH

    def _apply(self, q: _ReviveQueue, record: bytes, replay: bool) -> None:
        try:
            msg, _ = decode_record(record)
        except MessageDecodeError as exc:
            log.error("revive queue %d: skipping undecodable record: %s", q.qid, exc)
            q.read_offset += 1
            return
        q.read_offset = msg.queue_offset + 1
        try:
            item = decode_revive_record(msg.properties.get(PROPERTY_TAGS), msg.body)
        except ReviveRecordError as exc:
            log.error("revive queue %d offset %d skipped: %s", q.qid, msg.queue_offset, exc)
            return
        if isinstance(item, CheckPoint):
            self._add_checkpoint(q, item, msg.queue_offset, replay)
        else:
            self._add_ack(q, item)

    def _add_checkpoint(self, q: _ReviveQueue, ck: CheckPoint, offset: int, replay: bool) -> None:
        if ck.key in q.pending or not ck.offset_diffs:
            return
        q.pending[ck.key] = _Pending(ck, offset, set(ck.offsets()))
        heapq.heappush(q.due, (ck.revive_time, offset, ck.key))
        if replay:
            # The pop offset is committed with the checkpoint but flushed to disk only
            # periodically; after a kill -9 it may lag. A checkpoint proves its messages
            # were handed out, so the group must not pop them again from the queue.
            need = max(ck.offsets()) + 1
            if self._b.pop.offset(ck.group, ck.topic, ck.queue_id) < need:
                self._b.pop.commit(ck.group, ck.topic, ck.queue_id, need)

    def _add_ack(self, q: _ReviveQueue, ack: AckRecord) -> None:
        pending = q.pending.get(ack.key)
        if pending is None:
            return  # its checkpoint was revived already, or the handle was stale
        pending.unacked.difference_update(ack.ack_offsets)
        if not pending.unacked:
            del q.pending[ack.key]
            if len(q.due) > 2 * len(q.pending) + _COMPACT_SLACK:
                _compact(q)

    async def _revive_due(self, q: _ReviveQueue) -> int | None:
        """Revives what is due; returns when the next entry falls due (None: nothing)."""
        while q.due:
            revive_time, offset, key = q.due[0]
            pending = q.pending.get(key)
            if pending is None or pending.revive_offset != offset:
                heapq.heappop(q.due)
                continue
            if revive_time > self._b.clock_ms():
                return revive_time
            if not await self._revive(pending):
                heapq.heapreplace(
                    q.due, (self._b.clock_ms() + _RETRY_AFTER_FAILURE_MS, offset, key)
                )
                return q.due[0][0]
            heapq.heappop(q.due)
            q.pending.pop(key, None)
        return None

    def _commit(self, q: _ReviveQueue) -> None:
        progress = next(iter(q.pending.values())).revive_offset if q.pending else q.read_offset
        if progress != q.committed:
            q.committed = progress
            self._b.commit_master_progress(REVIVE_GROUP, self.topic, q.qid, progress)

    # --- putting messages back -------------------------------------------------------------
    async def _revive(self, pending: _Pending) -> bool:
        ck = pending.ck
        for offset in sorted(pending.unacked):
            msg = self._read_message(ck.topic, ck.queue_id, offset)
            if msg is not None and not await self._put_back(ck, msg):
                return False
            pending.unacked.discard(offset)
        return True

    def _read_message(self, topic: str, queue_id: int, offset: int) -> MessageExt | None:
        got = self._b.store.get(topic, queue_id, offset, 1, _ALL, None)
        for record in got.records:
            try:
                msg, _ = decode_record(record)
            except MessageDecodeError as exc:
                log.error(
                    "pop revive: message %s/%d/%d unreadable: %s", topic, queue_id, offset, exc
                )
                return None
            if msg.queue_offset == offset:
                return msg
        log.warning(
            "pop revive: message %s/%d/%d is gone; not redelivered", topic, queue_id, offset
        )
        return None

    async def _put_back(self, ck: CheckPoint, orig: MessageExt) -> bool:
        b = self._b
        group_cfg = b.subscription_groups.find_or_create(ck.group)
        max_times = group_cfg.retry_max_times if group_cfg is not None else 16
        normal_topic = (
            original_topic(ck.topic, ck.group) if ck.topic.startswith(RETRY_PREFIX) else ck.topic
        )
        props = dict(orig.properties)
        props.pop(PROPERTY_DELAY, None)  # redelivery is due now, not after a delay level
        props[PROPERTY_WAIT] = "false"  # the original is durable; this copy is no promise
        props.setdefault(PROPERTY_RETRY_TOPIC, normal_topic)
        props.setdefault(PROPERTY_ORIGIN_MESSAGE_ID, props.get("UNIQ_KEY") or orig.offset_msg_id)
        props.setdefault(PROPERTY_FIRST_POP_TIME, str(ck.pop_time))
        perm = t.PERM_READ | t.PERM_WRITE
        if orig.reconsume_times >= max_times:
            topic = t.dlq_topic(ck.group)
            b.topic_config.create_system_group_topic(topic, 1, perm)
        else:
            topic = (
                ck.topic
                if ck.topic.startswith(RETRY_PREFIX)
                else pop_retry_topic(ck.topic, ck.group)
            )
            queues = max(1, group_cfg.retry_queue_nums if group_cfg is not None else 1)
            b.topic_config.create_system_group_topic(topic, queues, perm)
        outcome = b.putter.put(
            MessageToStore(
                topic=topic,
                queue_id=0,
                body=orig.body,
                flag=orig.flag,
                properties=props,
                sys_flag=orig.sys_flag,
                born_timestamp=orig.born_timestamp,
                born_host=orig.born_host,
                reconsume_times=orig.reconsume_times + 1,
            )
        )
        if not outcome.ok:
            log.warning(
                "pop revive: put into %s failed: %s %s", topic, outcome.status, outcome.remark
            )
            return False
        self.revived += 1
        if topic.startswith(t.DLQ_PREFIX):
            self.dead_lettered += 1
        return True
