"""Settles half messages: END_TRANSACTION from producers, and the periodic check-back.

Runs on the master only (the broker starts and stops it with the delay-level service).
Writes go through the normal put path, so they are flushed and replicated like sends; the
checker waits for a DLedger majority before it asks a producer about a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from ledgermq.broker.client_manager import ClientManager
from ledgermq.broker.consumer_offsets import ConsumerOffsetManager
from ledgermq.broker.putter import MessagePutter
from ledgermq.broker.store_port import PutOutcome, StorePort
from ledgermq.broker.topic_config import TopicConfigManager
from ledgermq.broker.topics import (
    PERM_READ,
    PERM_WRITE,
    TRANS_CHECK_MAX_TIME_TOPIC,
    TRANS_HALF_TOPIC,
    TRANS_OP_HALF_TOPIC,
)
from ledgermq.broker.transaction import records as r
from ledgermq.broker.transaction.check_back import check_request, send_check_to_producer
from ledgermq.broker.transaction.progress import TransactionProgress
from ledgermq.common.message import (
    PROPERTY_PGROUP,
    SYSFLAG_TX_COMMIT,
    SYSFLAG_TX_ROLLBACK,
    MessageDecodeError,
    MessageExt,
    decode_record,
)
from ledgermq.store.message_store import MessageToStore

log = logging.getLogger(__name__)

_BATCH = 32
_STOP_STATUSES = ("OFFSET_OVERFLOW_ONE", "NO_MESSAGE_IN_QUEUE", "NO_MATCHED_LOGIC_QUEUE")
# the queue's files were removed below (or the offset ran past) what the store holds
_JUMP_STATUSES = ("OFFSET_TOO_SMALL", "OFFSET_OVERFLOW_BADLY")


@dataclass(slots=True)
class TransactionSettings:
    check_interval_ms: int = 30_000
    timeout_ms: int = 6_000
    check_max: int = 15
    # half messages older than the CommitLog's retention are parked without a check
    max_age_ms: int = 72 * 3_600_000


@dataclass(slots=True)
class EndTransaction:
    """An END_TRANSACTION request (PROTOCOL.md 2.3), validated by the processor."""

    producer_group: str
    tran_state_table_offset: int
    commit_log_offset: int
    commit_or_rollback: int
    msg_id: str
    from_check: bool = False


@dataclass(slots=True)
class EndOutcome:
    ok: bool
    remark: str = ""
    duplicate: bool = False


@dataclass(slots=True)
class CheckRoundStats:
    checked: int = 0
    parked: int = 0
    skipped_settled: int = 0


class TransactionService:
    def __init__(
        self,
        *,
        store: StorePort,
        putter: MessagePutter,
        clients: ClientManager,
        offsets: ConsumerOffsetManager,
        topics: TopicConfigManager,
        settings: Callable[[], TransactionSettings],
        commit_offset: Callable[[str, str, int, int], object],
        store_host: Callable[[], tuple[str, int]],
        broker_name: str,
        clock_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._putter = putter
        self._clients = clients
        self._offsets = offsets
        self._topics = topics
        self._settings = settings
        self._commit_offset = commit_offset
        self._store_host = store_host
        self._broker_name = broker_name
        self._clock_ms = clock_ms
        self._rng = random.Random()
        self._progress: TransactionProgress | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.checks_sent = 0
        self.rounds = 0

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Starts checking (this broker is the master and its store is writable)."""
        if self._task is not None and not self._task.done():
            return
        self._progress = None  # re-read: a failover may have moved the floors
        self._ensure_progress()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="broker-transaction-check"
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._progress = None

    def wake(self) -> None:
        """Runs a check round now (tests, admin)."""
        self._wake.set()

    async def _run(self) -> None:
        # ends once it is no longer the service's task: Python 3.11's wait_for can
        # swallow stop()'s cancellation when it races with a wake-up
        while self._task is asyncio.current_task():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings().check_interval_ms / 1000)
            self._wake.clear()
            if self._task is not asyncio.current_task():
                return
            try:
                await self.check_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("transaction check round failed")

    # --- progress -----------------------------------------------------------------------
    def _floor(self, topic: str) -> int:
        stored = self._offsets.query(r.TRANS_CONSUMER_GROUP, topic, r.HALF_QUEUE_ID)
        if stored < 0:
            return self._store.min_offset(topic, r.HALF_QUEUE_ID)
        return stored

    def _ensure_progress(self) -> TransactionProgress:
        p = self._progress
        if p is None:
            p = TransactionProgress(self._floor(TRANS_HALF_TOPIC), self._floor(TRANS_OP_HALF_TOPIC))
            self._progress = p
            self._load_ops(p)
            self._index_copies(p)
        return p

    def _index_copies(self, p: TransactionProgress) -> None:
        """Finds the check copies still ahead of the checker (after a restart)."""
        offset = p.half_floor
        while True:
            got = self._store.get(TRANS_HALF_TOPIC, r.HALF_QUEUE_ID, offset, _BATCH, 1 << 62, None)
            if not got.records:
                return
            for raw in got.records:
                try:
                    msg, _ = decode_record(raw, decode_body=False)
                except MessageDecodeError:
                    continue
                root = r.chain_root(msg)
                if root != msg.queue_offset:
                    p.note_copy(root, msg.queue_offset)
            offset = got.next_begin_offset

    def _load_ops(self, p: TransactionProgress) -> None:
        """Reads the op records written since the last load."""
        while True:
            got = self._store.get(
                TRANS_OP_HALF_TOPIC, r.HALF_QUEUE_ID, p.op_loaded, _BATCH, 1 << 62, None
            )
            if not got.records:
                if got.status in _JUMP_STATUSES and got.next_begin_offset > p.op_loaded:
                    log.warning(
                        "transaction op queue: offset %d is gone, continuing at %d",
                        p.op_loaded,
                        got.next_begin_offset,
                    )
                    p.skip_ops_to(got.next_begin_offset)
                    continue
                return
            for raw in got.records:
                try:
                    op, _ = decode_record(raw)
                except MessageDecodeError as exc:
                    log.error("transaction op queue: undecodable record skipped: %s", exc)
                    continue
                p.note_op(op.queue_offset, r.op_offsets_of(op))
                p.loaded_up_to(op.queue_offset + 1)
            p.loaded_up_to(got.next_begin_offset)

    def _commit_floors(self, p: TransactionProgress) -> None:
        half_floor, op_floor = p.commit_point()
        group = r.TRANS_CONSUMER_GROUP
        self._commit_offset(group, TRANS_HALF_TOPIC, r.HALF_QUEUE_ID, half_floor)
        self._commit_offset(group, TRANS_OP_HALF_TOPIC, r.HALF_QUEUE_ID, op_floor)

    @property
    def progress(self) -> TransactionProgress | None:
        return self._progress

    # --- END_TRANSACTION ----------------------------------------------------------------
    def read_half(self, commit_log_offset: int) -> MessageExt | None:
        raw = self._store.read_record(commit_log_offset)
        if raw is None:
            return None
        try:
            msg, _ = decode_record(raw)
        except MessageDecodeError as exc:
            log.warning("END_TRANSACTION: record at %d is undecodable: %s", commit_log_offset, exc)
            return None
        return msg

    def end_transaction(self, req: EndTransaction) -> EndOutcome:
        """Commits or rolls back the half message the request names (synchronous: no
        check round can interleave between reading the progress and writing the op)."""
        half = self.read_half(req.commit_log_offset)
        problem = _mismatch(half, req)
        if problem is not None:
            log.warning(
                "END_TRANSACTION from %s for offset %d/%d (msgId %s) refused: %s",
                req.producer_group,
                req.tran_state_table_offset,
                req.commit_log_offset,
                req.msg_id,
                problem,
            )
            return EndOutcome(False, problem)
        assert half is not None
        p = self._ensure_progress()
        chain = p.chain(half.queue_offset, r.chain_root(half))
        if any(p.is_settled(o) for o in chain) or not p.still_pending(chain):
            # settled before (a retry, a late answer to a check), or parked: committing
            # again would deliver the message twice
            log.info(
                "END_TRANSACTION for half offset %d (msgId %s): already settled or parked",
                half.queue_offset,
                req.msg_id,
            )
            return EndOutcome(True, duplicate=True)
        if req.commit_or_rollback == SYSFLAG_TX_COMMIT:
            outcome = self._putter.put(r.commit_from_half(half))
            if not outcome.ok:
                return EndOutcome(False, f"commit put failed: {outcome.status} {outcome.remark}")
        # after the commit in the log: an op record never outlives the commit it follows
        op = self._putter.put(r.op_record(chain, self._store_host(), self._clock_ms()))
        if not op.ok:
            # a later check asks the producer again (at-least-once)
            log.error("transaction op record for %s not written: %s", chain, op.status)
            return EndOutcome(False, f"op record put failed: {op.status}")
        p.note_op(op.queue_offset, chain)
        return EndOutcome(True)

    # --- check-back ---------------------------------------------------------------------
    async def check_round(self) -> CheckRoundStats:
        """One pass over the unsettled half messages (TransactionalMessageCheckService)."""
        settings = self._settings()
        p = self._ensure_progress()
        self._load_ops(p)
        stats = CheckRoundStats()
        # copies put during this round land at or above this: the next round's work
        end = self._store.max_offset(TRANS_HALF_TOPIC, r.HALF_QUEUE_ID)
        self.rounds += 1
        try:
            await self._check_from_cursor(p, settings, end, stats)
        finally:
            if self._progress is p:
                self._commit_floors(p)
        return stats

    async def _check_from_cursor(
        self, p: TransactionProgress, s: TransactionSettings, end: int, stats: CheckRoundStats
    ) -> None:
        while True:
            got = self._store.get(
                TRANS_HALF_TOPIC, r.HALF_QUEUE_ID, p.cursor, _BATCH, 1 << 62, None
            )
            if not got.records:
                if got.status in _JUMP_STATUSES and got.next_begin_offset > p.cursor:
                    p.passed(got.next_begin_offset)
                    continue
                return
            for raw in got.records:
                try:
                    half, _ = decode_record(raw)
                except MessageDecodeError as exc:
                    log.error("transaction half queue: undecodable record skipped: %s", exc)
                    p.passed(p.cursor + 1)
                    continue
                if half.queue_offset < p.cursor:
                    continue
                if half.queue_offset >= end:
                    return
                if not await self._check_one(half, p, s, stats):
                    return
                if self._progress is not p:
                    return  # stopped meanwhile

    async def _check_one(
        self,
        half: MessageExt,
        p: TransactionProgress,
        s: TransactionSettings,
        stats: CheckRoundStats,
    ) -> bool:
        """Handles the half message at the cursor; False ends the round."""
        i = half.queue_offset
        if p.is_settled(i):
            stats.skipped_settled += 1
            p.passed(i + 1)
            return True
        now = self._clock_ms()
        age = now - half.born_timestamp
        times = r.check_times(half)
        too_old = s.max_age_ms > 0 and age > s.max_age_ms  # fileReservedTime=0: no limit
        if times >= s.check_max or too_old:
            if not self._park(half):
                return False
            stats.parked += 1
            p.passed(i + 1)
            return True
        immunity, asked = r.immunity_ms(half, s.timeout_ms)
        if 0 <= age < immunity:
            if not asked:
                return False  # too young; so is probably everything after it
            # the producer asked to be left alone longer: move it along, uncounted
            outcome = self._putter.put(r.check_copy(half, times))
            if not outcome.ok:
                return False
            p.note_copy(r.chain_root(half), outcome.queue_offset)
            p.passed(i + 1)
            return await self._durable(outcome)
        copy = r.check_copy(half, times + 1)
        outcome = self._putter.put(copy)
        if not outcome.ok:
            log.warning("transaction check: re-put of half offset %d failed: %s", i, outcome.status)
            return False
        # in the same step as the put: an END_TRANSACTION for `i` from now on finds the copy
        p.note_copy(r.chain_root(half), outcome.queue_offset)
        p.passed(i + 1)
        if not await self._durable(outcome):
            return False
        stats.checked += 1
        shown = _as_stored(half, copy, outcome, self._store_host(), now)
        group = half.properties.get(PROPERTY_PGROUP, "")
        if send_check_to_producer(
            self._clients, group, check_request(shown, self._broker_name), self._rng
        ):
            self.checks_sent += 1
        return True

    async def _durable(self, outcome: PutOutcome) -> bool:
        if not StorePort.must_wait(outcome):
            return True
        status, remark = await self._store.wait_durable(outcome)
        if status != "PUT_OK":
            log.warning("transaction check: re-put not replicated: %s", remark)
            return False
        return True

    def _park(self, half: MessageExt) -> bool:
        self._topics.create_system_group_topic(
            TRANS_CHECK_MAX_TIME_TOPIC, 1, PERM_READ | PERM_WRITE
        )
        outcome = self._putter.put(r.parked(half))
        if not outcome.ok:
            log.error("parking half offset %d failed: %s", half.queue_offset, outcome.status)
            return False
        log.warning(
            "half message %s (offset %d) checked %d times: parked in %s",
            half.msg_id,
            half.queue_offset,
            r.check_times(half),
            TRANS_CHECK_MAX_TIME_TOPIC,
        )
        return True


def _mismatch(half: MessageExt | None, req: EndTransaction) -> str | None:
    """Why the stored record is not the half message the request names (as upstream's
    checkPrepareMessage, plus the topic so no other record can be committed)."""
    if half is None:
        return "Find prepared transaction message failed"
    if half.topic != TRANS_HALF_TOPIC:
        return f"the record at {req.commit_log_offset} is not a half message"
    if half.properties.get(PROPERTY_PGROUP) != req.producer_group:
        return "The producer group wrong"
    if half.queue_offset != req.tran_state_table_offset:
        return "The transaction state table offset wrong"
    if half.commit_log_offset != req.commit_log_offset:
        return "The commit log offset wrong"
    if req.commit_or_rollback not in (SYSFLAG_TX_COMMIT, SYSFLAG_TX_ROLLBACK):
        return f"commitOrRollback {req.commit_or_rollback} settles nothing"
    return None


def _as_stored(
    half: MessageExt,
    copy: MessageToStore,
    outcome: PutOutcome,
    store_host: tuple[str, int],
    now: int,
) -> MessageExt:
    """The copy as the store now holds it, without reading it back."""
    return MessageExt(
        topic=copy.topic,
        body=copy.body,
        flag=copy.flag,
        properties=copy.properties,
        queue_id=copy.queue_id,
        queue_offset=outcome.queue_offset,
        commit_log_offset=outcome.commit_log_offset,
        sys_flag=copy.sys_flag,
        born_timestamp=copy.born_timestamp,
        born_host=copy.born_host,
        store_timestamp=now,
        store_host=store_host,
        reconsume_times=copy.reconsume_times,
        prepared_transaction_offset=half.prepared_transaction_offset,
    )
