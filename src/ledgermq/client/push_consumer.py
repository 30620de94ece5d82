"""PushConsumer: rebalanced long-polling pulls feeding a listener (Java's DefaultMQPushConsumer).

Layout of the moving parts:
- a rebalance loop (every `rebalance_interval`, and at once on NOTIFY_CONSUMER_IDS_CHANGED
  or a subscription change) decides which queues this client owns;
- each owned queue has a `_Worker`: a `ProcessQueue` plus one pull task that long-polls
  the broker and buffers what it gets;
- concurrent mode starts one consume task per batch (bounded by `consume_concurrency`);
  orderly mode runs one consume task per queue that takes messages in offset order, only
  while it holds the broker-side queue lock (clustering);
- offsets are committed from the process queue's lowest unacknowledged offset every
  `persist_interval`, when a queue is released and at shutdown, and piggy-back on pulls.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ledgermq.client import broker_api
from ledgermq.client.allocate import allocate_averagely
from ledgermq.client.errors import MQClientError
from ledgermq.client.instance import ClientInstance, ClientRegistry
from ledgermq.client.lifecycle import ConsumerBase
from ledgermq.client.message import ConsumeResult, MessageExt, MessageQueue, OrderlyResult
from ledgermq.client.offset_store import (
    LocalFileOffsetStore,
    OffsetStore,
    RemoteOffsetStore,
    compute_start_offset,
    default_offsets_path,
)
from ledgermq.client.process_queue import ProcessQueue
from ledgermq.client.subscription import SubscriptionData, retry_topic
from ledgermq.common.message import PROPERTY_CONSUME_START_TIME, PROPERTY_RETRY_TOPIC
from ledgermq.remoting.codes import ResponseCode

log = logging.getLogger(__name__)

CLUSTERING = "CLUSTERING"
BROADCASTING = "BROADCASTING"
CONSUME_FROM_LAST_OFFSET = "CONSUME_FROM_LAST_OFFSET"
CONSUME_FROM_FIRST_OFFSET = "CONSUME_FROM_FIRST_OFFSET"
CONSUME_FROM_TIMESTAMP = "CONSUME_FROM_TIMESTAMP"
_CFW = (CONSUME_FROM_LAST_OFFSET, CONSUME_FROM_FIRST_OFFSET, CONSUME_FROM_TIMESTAMP)

Listener = Callable[[list[MessageExt]], Any]
Allocator = Callable[[str, Sequence[MessageQueue], Sequence[str]], list[MessageQueue]]

# A queue lock on the broker lives 60 s; the client trusts its own for 30 s
# (Java's REBALANCE_LOCK_MAX_LIVE_TIME) and renews every 20 s.
LOCK_MAX_LIVE = 30.0


@dataclass(slots=True, eq=False)
class _Worker:
    mq: MessageQueue
    pq: ProcessQueue
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pull_task: asyncio.Task[None] | None = None
    orderly_task: asyncio.Task[None] | None = None
    suggest_broker_id: int = 0


def parse_consume_timestamp(value: int | str | datetime | None) -> int:
    """Epoch ms. Strings use Java's `yyyyMMddHHmmss` (local time); default: 30 min ago."""
    if value is None:
        return int((time.time() - 1800) * 1000)
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, str):
        return int(datetime.strptime(value, "%Y%m%d%H%M%S").timestamp() * 1000)
    return int(value)


def restore_retry_topic(msg: MessageExt, group: str) -> None:
    """A message re-delivered from %RETRY%<group> shows its original topic again."""
    real = msg.properties.get(PROPERTY_RETRY_TOPIC)
    if real and msg.topic == retry_topic(group):
        msg.topic = real


class PushConsumer(ConsumerBase):
    CONSUME_TYPE = "CONSUME_PASSIVELY"

    def __init__(
        self,
        group: str,
        namesrv_addr: str | list[str],
        *,
        message_model: str = CLUSTERING,
        consume_from_where: str = CONSUME_FROM_LAST_OFFSET,
        consume_timestamp: int | str | datetime | None = None,
        max_reconsume_times: int = 16,
        pull_batch_size: int = 32,
        consume_batch_size: int = 1,
        consume_concurrency: int = 20,
        pull_threshold_for_queue: int = 1000,
        suspend_timeout: float = 15.0,
        rebalance_interval: float = 20.0,
        persist_interval: float = 5.0,
        lock_interval: float = 20.0,
        retry_delay_level: int = 0,
        reconsume_later_delay: float = 5.0,
        suspend_current_queue_time: float = 1.0,
        pull_error_delay: float = 3.0,
        offsets_path: str | Path | None = None,
        allocate: Allocator = allocate_averagely,
        instance: ClientInstance | None = None,
        registry: ClientRegistry | None = None,
        instance_name: str | None = None,
    ) -> None:
        if not group:
            raise MQClientError("consumer group must not be empty")
        if message_model not in (CLUSTERING, BROADCASTING):
            raise MQClientError(f"unknown message_model {message_model!r}")
        if consume_from_where not in _CFW:
            raise MQClientError(f"unknown consume_from_where {consume_from_where!r}")
        self.group = group
        self.namesrv_addr = namesrv_addr
        self.message_model = message_model
        self.consume_from_where = consume_from_where
        self.consume_timestamp = parse_consume_timestamp(consume_timestamp)
        self.max_reconsume_times = max_reconsume_times
        self.pull_batch_size = pull_batch_size
        self.consume_batch_size = max(1, consume_batch_size)
        self.consume_concurrency = consume_concurrency
        self.pull_threshold_for_queue = pull_threshold_for_queue
        self.suspend_timeout = suspend_timeout
        self.rebalance_interval = rebalance_interval
        self.persist_interval = persist_interval
        self.lock_interval = lock_interval
        # 0 lets the broker pick 3 + reconsumeTimes (Java's default context value).
        self.retry_delay_level = retry_delay_level
        self.reconsume_later_delay = reconsume_later_delay
        self.suspend_current_queue_time = suspend_current_queue_time
        self.pull_error_delay = pull_error_delay
        self.offsets_path = offsets_path
        self.allocate = allocate
        self._given_instance = instance
        self._registry = registry
        self._instance_name = instance_name
        self._instance: ClientInstance | None = None
        self.subscriptions: dict[str, SubscriptionData] = {}
        self._listener: Listener | None = None
        self.orderly = False
        self.offset_store: OffsetStore | None = None
        self.workers: dict[MessageQueue, _Worker] = {}
        self._consume_sem = asyncio.Semaphore(consume_concurrency)
        self._consume_tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._rebalance_event = asyncio.Event()
        self._rebalance_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._start_time = 0

    # configuration -----------------------------------------------------------------------
    @property
    def clustering(self) -> bool:
        return self.message_model == CLUSTERING

    def subscribe(self, topic: str, expression: str | None = "*") -> None:
        self.subscriptions[topic] = SubscriptionData.build(topic, expression)
        if self._instance is not None:
            self._subscription_changed()

    def unsubscribe(self, topic: str) -> None:
        self.subscriptions.pop(topic, None)
        if self._instance is not None:
            self._subscription_changed()

    def _subscription_changed(self) -> None:
        task = asyncio.get_running_loop().create_task(self.instance.send_heartbeat())
        self._consume_tasks.add(task)
        task.add_done_callback(self._consume_tasks.discard)
        self._rebalance_event.set()

    def register_listener(self, fn: Listener, *, orderly: bool = False) -> None:
        """fn(list[MessageExt]) returns, or returns an awaitable of, a ConsumeResult
        (concurrent) or an OrderlyResult (orderly). Raising counts as a failure."""
        if self._instance is not None:
            raise MQClientError("register the listener before start()")
        self._listener = fn
        self.orderly = orderly

    # lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._instance is not None:
            return
        if self._listener is None:
            raise MQClientError("register a listener before start()")
        inst = self._acquire_instance()
        if self.clustering:
            # Messages that failed come back through the group's retry topic.
            self.subscriptions.setdefault(
                retry_topic(self.group), SubscriptionData.build(retry_topic(self.group), "*")
            )
            self.offset_store = RemoteOffsetStore(inst, self.group)
        else:
            path = self.offsets_path or default_offsets_path(inst.client_id, self.group)
            self.offset_store = LocalFileOffsetStore(path)
        await self.offset_store.load()
        inst.register_consumer(self)
        await inst.start()
        self._instance = inst
        self._start_time = int(time.time() * 1000)
        self._stopping.clear()
        for topic in list(self.subscriptions):
            try:
                await inst.update_route(topic)
            except MQClientError as exc:
                log.warning("route for %s not available yet: %s", topic, exc)
        await inst.send_heartbeat()
        self._loops = [
            asyncio.create_task(self._rebalance_loop()),
            asyncio.create_task(self._persist_loop()),
        ]
        if self.orderly and self.clustering:
            self._loops.append(asyncio.create_task(self._lock_loop()))
        self._rebalance_event.set()

    async def shutdown(self, *, timeout: float = 10.0) -> None:
        inst = self._instance
        if inst is None:
            return
        self._stopping.set()
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        async with self._rebalance_lock:
            # Stop pulling first, let the batches in hand finish so their offsets count.
            for w in self.workers.values():
                for t in (w.pull_task, w.orderly_task):
                    if t is not None:
                        t.cancel()
            tasks = [t for w in self.workers.values() for t in (w.pull_task, w.orderly_task) if t]
            await asyncio.gather(*tasks, return_exceptions=True)
            pending = list(self._consume_tasks)
            if pending:
                _, still = await asyncio.wait(pending, timeout=timeout)
                for t in still:
                    t.cancel()
                await asyncio.gather(*still, return_exceptions=True)
            for w in self.workers.values():
                w.pq.dropped = True
            await self._persist_all(force=True)
            if self.orderly and self.clustering:
                await self._unlock(list(self.workers))
            self.workers.clear()
        await inst.unregister(consumer_group=self.group)
        await inst.shutdown()
        self._instance = None

    # hooks for the instance ----------------------------------------------------------------
    def assigned_queues(self) -> set[MessageQueue]:
        return set(self.workers)

    def running_info(self) -> dict[str, Any]:
        mq_table: dict[MessageQueue, dict[str, Any]] = {}
        for mq, w in self.workers.items():
            pq = w.pq
            offsets = list(pq.msgs) + list(pq.consuming)
            mq_table[mq] = {
                "commitOffset": self.offset_store.get(mq) if self.offset_store else -1,
                "cachedMsgMinOffset": min(offsets) if offsets else 0,
                "cachedMsgMaxOffset": max(offsets) if offsets else 0,
                "cachedMsgCount": pq.count,
                "locked": pq.locked,
                "droped": pq.dropped,
                "lastPullTimestamp": int(pq.last_pull_time * 1000),
            }
        return {
            "properties": {
                "PROP_NAMESERVER_ADDR": ";".join(self.instance.namesrv_addrs),
                "PROP_CONSUME_TYPE": "CONSUME_PASSIVELY",
                "PROP_CONSUMEORDERLY": str(self.orderly).lower(),
                "PROP_THREADPOOL_CORE_SIZE": str(self.consume_concurrency),
                "PROP_CONSUMER_START_TIMESTAMP": str(self._start_time),
                "PROP_CLIENT_VERSION": "V5_3_3",
                "messageModel": self.message_model,
                "consumeFromWhere": self.consume_from_where,
            },
            "subscriptionSet": [s.to_json() for s in self.subscriptions.values()],
            "mqTable": mq_table,
            "statusTable": {},
        }

    def consumer_status(self, topic: str) -> dict[MessageQueue, int]:
        if self.offset_store is None:
            return {}
        return {mq: off for mq, off in self.offset_store.offsets.items() if mq.topic == topic}

    async def reset_offset(self, topic: str, offsets: dict[MessageQueue, int]) -> None:
        """RESET_CONSUMER_CLIENT_OFFSET: restart the named queues at the given offsets."""
        store = self.offset_store
        if store is None:
            return
        async with self._rebalance_lock:
            for mq, offset in offsets.items():
                if mq.topic != topic:
                    continue
                if mq in self.workers:
                    await self._release(mq, persist=False)
                store.update(mq, offset)
            await store.persist([mq for mq in offsets if mq.topic == topic], force=True)
        self._rebalance_event.set()

    # rebalance ---------------------------------------------------------------------------
    async def _rebalance_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rebalance_event.wait(), self.rebalance_interval)
            self._rebalance_event.clear()
            try:
                await self.rebalance()
            except Exception:
                log.exception("rebalance of %s failed", self.group)

    async def rebalance(self) -> None:
        async with self._rebalance_lock:
            if self._stopping.is_set():
                return
            for topic in list(self.subscriptions):
                try:
                    await self._rebalance_topic(topic)
                except MQClientError as exc:
                    log.warning("rebalance of %s/%s failed: %s", self.group, topic, exc)
            for mq in [mq for mq in self.workers if mq.topic not in self.subscriptions]:
                await self._release(mq)

    async def _rebalance_topic(self, topic: str) -> None:
        inst = self.instance
        mqs = await inst.subscribe_queues(topic)
        if not mqs:
            return
        if self.clustering:
            addr = await inst.any_broker_of_topic(topic)
            if addr is None:
                return
            cids = await broker_api.consumer_ids(inst, addr, self.group)
            if not cids:
                return  # the broker has not seen our heartbeat yet: keep what we have
            assigned = set(self.allocate(inst.client_id, mqs, cids))
        else:
            assigned = set(mqs)
        for mq in [mq for mq in self.workers if mq.topic == topic and mq not in assigned]:
            await self._release(mq)
        new = sorted(mq for mq in assigned if mq not in self.workers)
        if new and self.orderly and self.clustering:
            locked = await self._lock(new)
            if len(locked) < len(new):
                # The previous owner may not have unlocked yet: try again shortly
                # instead of waiting a whole rebalance interval.
                asyncio.get_running_loop().call_later(1.0, self._rebalance_event.set)
            new = [mq for mq in new if mq in locked]
        for mq in new:
            try:
                offset = await self._compute_pull_offset(mq)
            except MQClientError as exc:
                log.warning("cannot compute the start offset of %s: %s", mq, exc)
                continue
            self._add_worker(mq, offset, locked=self.orderly and self.clustering)

    async def _compute_pull_offset(self, mq: MessageQueue) -> int:
        assert self.offset_store is not None
        return await compute_start_offset(
            self.instance, self.offset_store, mq, self.consume_from_where, self.consume_timestamp
        )

    def _add_worker(self, mq: MessageQueue, offset: int, *, locked: bool) -> None:
        pq = ProcessQueue(offset, max_count=self.pull_threshold_for_queue)
        if locked:
            pq.locked = True
            pq.last_lock_time = time.monotonic()
        w = _Worker(mq, pq)
        self.workers[mq] = w
        assert self.offset_store is not None
        self.offset_store.update(mq, offset)
        w.pull_task = asyncio.create_task(self._pull_loop(w))
        if self.orderly:
            w.orderly_task = asyncio.create_task(self._orderly_loop(w))
        log.debug("%s now consumes %s from offset %d", self.instance.client_id, mq, offset)

    async def _release(self, mq: MessageQueue, *, persist: bool = True) -> None:
        w = self.workers.pop(mq, None)
        if w is None:
            return
        w.pq.dropped = True
        w.wake.set()
        for t in (w.pull_task, w.orderly_task):
            if t is not None:
                t.cancel()
        await asyncio.gather(
            *(t for t in (w.pull_task, w.orderly_task) if t), return_exceptions=True
        )
        store = self.offset_store
        assert store is not None
        if persist:
            await store.persist([mq], force=True)
        store.remove(mq)
        if self.orderly and self.clustering:
            # Wait briefly for a batch in hand before giving the lock away.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    async with w.pq.lock_consume:
                        pass
            await self._unlock([mq])

    # offsets -----------------------------------------------------------------------------
    async def _persist_loop(self) -> None:
        while not await self._sleep(self.persist_interval):
            try:
                await self._persist_all()
            except Exception:
                log.exception("persisting offsets of %s failed", self.group)

    async def _persist_all(self, *, force: bool = False) -> None:
        store = self.offset_store
        if store is None:
            return
        await store.persist(list(self.workers) if self.clustering else None, force=force)

    # locks (orderly, clustering) -----------------------------------------------------------
    async def _lock(self, mqs: list[MessageQueue]) -> set[MessageQueue]:
        by_broker: dict[str, list[MessageQueue]] = {}
        for mq in mqs:
            by_broker.setdefault(mq.broker_name, []).append(mq)
        ok: set[MessageQueue] = set()
        for broker, group in by_broker.items():
            try:
                addr = await self.instance.broker_addr(broker, group[0].topic)
                ok |= await broker_api.lock_batch(self.instance, addr, self.group, group)
            except MQClientError as exc:
                log.warning("locking %d queues on %s failed: %s", len(group), broker, exc)
        return ok

    async def _unlock(self, mqs: list[MessageQueue]) -> None:
        by_broker: dict[str, list[MessageQueue]] = {}
        for mq in mqs:
            by_broker.setdefault(mq.broker_name, []).append(mq)
        for broker, group in by_broker.items():
            try:
                addr = await self.instance.broker_addr(broker, group[0].topic)
                await broker_api.unlock_batch(self.instance, addr, self.group, group)
            except MQClientError as exc:
                log.debug("unlocking on %s failed: %s", broker, exc)

    async def _lock_loop(self) -> None:
        while not await self._sleep(self.lock_interval):
            try:
                await self.renew_locks()
            except Exception:
                log.exception("renewing queue locks failed")

    async def renew_locks(self) -> None:
        mqs = list(self.workers)
        if not mqs:
            return
        locked = await self._lock(mqs)
        now = time.monotonic()
        for mq in mqs:
            w = self.workers.get(mq)
            if w is None:
                continue
            if mq in locked:
                w.pq.locked = True
                w.pq.last_lock_time = now
                w.wake.set()
            else:
                w.pq.locked = False

    # pulling -----------------------------------------------------------------------------
    async def _broker_for_pull(self, w: _Worker) -> str:
        inst = self.instance
        addr = inst.find_broker_addr(
            w.mq.broker_name, master_only=False, broker_id=w.suggest_broker_id
        )
        return addr or await inst.broker_addr(w.mq.broker_name, w.mq.topic, master_only=False)

    async def _pull_loop(self, w: _Worker) -> None:
        pq, mq = w.pq, w.mq
        store = self.offset_store
        assert store is not None
        while not pq.dropped and not self._stopping.is_set():
            await pq.wait_for_space()
            if self.orderly and self.clustering and not pq.locked:
                # No lock, no pull: another client may still own this queue.
                await self._sleep(self.pull_error_delay)
                continue
            sub = self.subscriptions.get(mq.topic)
            if sub is None:
                return
            commit = store.get(mq) if self.clustering else -1
            sys_flag = broker_api.PULL_SUSPEND | broker_api.PULL_SUBSCRIPTION
            if commit > 0:
                sys_flag |= broker_api.PULL_COMMIT_OFFSET
            offset = pq.next_offset
            try:
                addr = await self._broker_for_pull(w)
                result = await broker_api.pull(
                    self.instance,
                    addr,
                    group=self.group,
                    mq=mq,
                    offset=offset,
                    max_nums=self.pull_batch_size,
                    sys_flag=sys_flag,
                    commit_offset=commit,
                    suspend_ms=int(self.suspend_timeout * 1000),
                    subscription=sub.sub_string,
                    sub_version=sub.sub_version,
                    timeout=self.suspend_timeout + 15.0,
                )
            except MQClientError as exc:
                if pq.dropped or self._stopping.is_set():
                    return
                log.debug("pull from %s failed: %s", mq, exc)
                if await self._sleep(self.pull_error_delay):
                    return
                continue
            if pq.dropped:
                return
            pq.last_pull_time = time.monotonic()
            w.suggest_broker_id = result.suggest_broker_id
            if result.code == ResponseCode.SUCCESS:
                msgs = [m for m in result.msgs if m.queue_offset >= offset and sub.matches(m.tags)]
                fresh = pq.put(msgs, result.next_begin_offset)
                if not fresh and pq.count == 0:
                    # Everything was filtered out: move the committed offset along.
                    store.update(mq, result.next_begin_offset, increase_only=True)
                if fresh:
                    self._dispatch(w, fresh)
            elif result.code == ResponseCode.PULL_OFFSET_MOVED:
                log.warning("%s offset %d moved to %d", mq, offset, result.next_begin_offset)
                pq.reset(result.next_begin_offset)
                store.update(mq, result.next_begin_offset)
                await store.persist([mq], force=True)
            else:
                # 19 (the broker long-polled and found nothing) or 20: ask again now.
                pq.next_offset = max(pq.next_offset, result.next_begin_offset)
                if pq.count == 0:
                    store.update(mq, pq.next_offset, increase_only=True)

    def _dispatch(self, w: _Worker, msgs: list[MessageExt]) -> None:
        if self.orderly:
            w.wake.set()
            return
        n = self.consume_batch_size
        for i in range(0, len(msgs), n):
            self._spawn(self._consume_concurrently(w, msgs[i : i + n]))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._consume_tasks.add(task)
        task.add_done_callback(self._consume_tasks.discard)

    # consuming -----------------------------------------------------------------------------
    async def _call_listener(self, msgs: list[MessageExt]) -> Any:
        now = str(int(time.time() * 1000))
        for m in msgs:
            restore_retry_topic(m, self.group)
            m.properties[PROPERTY_CONSUME_START_TIME] = now
        assert self._listener is not None
        try:
            result = self._listener(msgs)
            if inspect.isawaitable(result):
                result = await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("listener of %s raised; the messages will be retried", self.group)
            return None
        return result

    async def _consume_concurrently(self, w: _Worker, msgs: list[MessageExt]) -> None:
        async with self._consume_sem:
            if w.pq.dropped:
                return
            result = await self._call_listener(msgs)
            if w.pq.dropped:
                return  # the queue moved to another client; it will re-deliver
            failed: list[MessageExt] = []
            if result != ConsumeResult.SUCCESS:
                if self.clustering:
                    for m in msgs:
                        if not await self._send_back(w.mq, m, self.retry_delay_level):
                            failed.append(m)
                else:
                    log.warning(
                        "broadcast messages dropped after failure: %s", [m.msg_id for m in msgs]
                    )
            done = [m for m in msgs if m not in failed]
            offset = w.pq.remove(done)
            assert self.offset_store is not None
            self.offset_store.update(w.mq, offset, increase_only=True)
        if failed:
            # Send-back failed: keep them in the process queue and retry here later.
            for m in failed:
                m.reconsume_times += 1
            self._spawn(self._consume_later(w, failed))

    async def _consume_later(self, w: _Worker, msgs: list[MessageExt]) -> None:
        if await self._sleep(self.reconsume_later_delay):
            return
        await self._consume_concurrently(w, msgs)

    async def _send_back(self, mq: MessageQueue, msg: MessageExt, delay_level: int) -> bool:
        inst = self.instance
        try:
            # The record lives on the master of the queue's broker (as in Java).
            addr = await inst.broker_addr(mq.broker_name, mq.topic)
            await broker_api.send_back(
                inst, addr, msg, self.group, delay_level, self.max_reconsume_times
            )
            return True
        except MQClientError as exc:
            log.warning("send-back of %s failed: %s", msg.msg_id, exc)
            return False

    async def _orderly_loop(self, w: _Worker) -> None:
        pq = w.pq
        while not pq.dropped:
            await w.wake.wait()
            w.wake.clear()
            while not pq.dropped and not self._stopping.is_set():
                if self.clustering and (
                    not pq.locked or pq.lock_expired(time.monotonic(), LOCK_MAX_LIVE)
                ):
                    break  # wait for the lock loop to renew and wake us
                suspend = False
                async with pq.lock_consume:
                    msgs = pq.take(self.consume_batch_size)
                    if not msgs:
                        break
                    result = await self._call_listener(msgs)
                    if pq.dropped:
                        return
                    store = self.offset_store
                    assert store is not None
                    if result == OrderlyResult.SUCCESS:
                        store.update(w.mq, pq.commit_taken())
                    else:
                        retry, dead = await self._check_reconsume_times(w.mq, msgs)
                        if dead:
                            store.update(w.mq, pq.remove(dead))
                        if retry:
                            pq.give_back(retry)
                            suspend = True
                        else:
                            store.update(w.mq, pq.commit_taken())
                if suspend and await self._sleep(self.suspend_current_queue_time):
                    return

    async def _check_reconsume_times(
        self, mq: MessageQueue, msgs: list[MessageExt]
    ) -> tuple[list[MessageExt], list[MessageExt]]:
        """Orderly failure: retry in place, or after max_reconsume_times park in the DLQ.

        Java re-sends such a message to the retry topic with its reconsume count at the
        limit so the broker diverts it to %DLQ%; a send-back with delayLevel -1 has the
        same effect in one request.
        """
        retry: list[MessageExt] = []
        dead: list[MessageExt] = []
        for m in msgs:
            over = m.reconsume_times >= self.max_reconsume_times
            if over and self.clustering and await self._send_back(mq, m, -1):
                dead.append(m)
                continue
            m.reconsume_times += 1
            retry.append(m)
        return retry, dead
