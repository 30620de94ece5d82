"""LitePullConsumer: the application polls; background tasks keep a buffer filled.

Queues come from `subscribe()` (rebalanced like the push consumer) or from `assign()`
(fixed, no rebalance). `poll()` hands out buffered messages and advances the consumed
position of their queue; `commit()` (or auto-commit) stores those positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ledgermq.client import broker_api
from ledgermq.client.allocate import allocate_averagely
from ledgermq.client.errors import MQClientError
from ledgermq.client.instance import ClientInstance, ClientRegistry
from ledgermq.client.lifecycle import ConsumerBase
from ledgermq.client.message import MessageExt, MessageQueue
from ledgermq.client.offset_store import (
    LocalFileOffsetStore,
    OffsetStore,
    RemoteOffsetStore,
    compute_start_offset,
    default_offsets_path,
)
from ledgermq.client.push_consumer import (
    BROADCASTING,
    CLUSTERING,
    CONSUME_FROM_LAST_OFFSET,
    Allocator,
    parse_consume_timestamp,
    restore_retry_topic,
)
from ledgermq.client.subscription import SubscriptionData
from ledgermq.remoting.codes import ResponseCode

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class _LiteQueue:
    mq: MessageQueue
    pull_offset: int
    # Next offset the application has not seen yet: what commit() stores.
    consume_offset: int
    # Bumped by seek(): buffered batches of an older generation are discarded.
    generation: int = 0
    buffered: int = 0
    paused: bool = False
    dropped: bool = False
    space: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class LitePullConsumer(ConsumerBase):
    CONSUME_TYPE = "CONSUME_ACTIVELY"

    def __init__(
        self,
        group: str,
        namesrv_addr: str | list[str],
        *,
        message_model: str = CLUSTERING,
        consume_from_where: str = CONSUME_FROM_LAST_OFFSET,
        consume_timestamp: int | str | datetime | None = None,
        auto_commit: bool = True,
        auto_commit_interval: float = 5.0,
        pull_batch_size: int = 32,
        poll_batch_size: int = 32,
        pull_threshold_for_queue: int = 1000,
        suspend_timeout: float = 15.0,
        rebalance_interval: float = 20.0,
        pull_error_delay: float = 3.0,
        offsets_path: str | Path | None = None,
        allocate: Allocator = allocate_averagely,
        instance: ClientInstance | None = None,
        registry: ClientRegistry | None = None,
        instance_name: str | None = None,
    ) -> None:
        if message_model not in (CLUSTERING, BROADCASTING):
            raise MQClientError(f"unknown message_model {message_model!r}")
        self.group = group
        self.namesrv_addr = namesrv_addr
        self.message_model = message_model
        self.consume_from_where = consume_from_where
        self.consume_timestamp = parse_consume_timestamp(consume_timestamp)
        self.auto_commit = auto_commit
        self.auto_commit_interval = auto_commit_interval
        self.pull_batch_size = pull_batch_size
        self.poll_batch_size = poll_batch_size
        self.pull_threshold_for_queue = pull_threshold_for_queue
        self.suspend_timeout = suspend_timeout
        self.rebalance_interval = rebalance_interval
        self.pull_error_delay = pull_error_delay
        self.offsets_path = offsets_path
        self.allocate = allocate
        self._given_instance = instance
        self._registry = registry
        self._instance_name = instance_name
        self._instance: ClientInstance | None = None
        self.subscriptions: dict[str, SubscriptionData] = {}
        self._assigned: list[MessageQueue] | None = None
        self.queues: dict[MessageQueue, _LiteQueue] = {}
        self.offset_store: OffsetStore | None = None
        self._buffer: asyncio.Queue[tuple[_LiteQueue, int, list[MessageExt]]] = asyncio.Queue()
        self._pending: list[tuple[_LiteQueue, int, list[MessageExt]]] = []
        self._loops: list[asyncio.Task[None]] = []
        self._rebalance_event = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._last_commit = time.monotonic()

    @property
    def clustering(self) -> bool:
        return self.message_model == CLUSTERING

    # configuration -----------------------------------------------------------------------
    def subscribe(self, topic: str, expression: str | None = "*") -> None:
        if self._assigned is not None:
            raise MQClientError("subscribe() and assign() are exclusive")
        self.subscriptions[topic] = SubscriptionData.build(topic, expression)
        if self._instance is not None:
            self._rebalance_event.set()

    async def assign(self, queues: Sequence[MessageQueue]) -> None:
        """Consume exactly these queues (no rebalance)."""
        if self.subscriptions and self._assigned is None:
            raise MQClientError("subscribe() and assign() are exclusive")
        self._assigned = sorted(set(queues))
        for mq in self._assigned:
            self.subscriptions.setdefault(mq.topic, SubscriptionData.build(mq.topic, "*"))
        if self._instance is not None:
            await self._apply_assignment(set(self._assigned))

    # lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._instance is not None:
            return
        inst = self._acquire_instance()
        if self.clustering:
            self.offset_store = RemoteOffsetStore(inst, self.group)
        else:
            path = self.offsets_path or default_offsets_path(inst.client_id, self.group)
            self.offset_store = LocalFileOffsetStore(path)
        await self.offset_store.load()
        inst.register_consumer(self)
        await inst.start()
        self._instance = inst
        for topic in self.subscriptions:
            with contextlib.suppress(MQClientError):
                await inst.update_route(topic)
        await inst.send_heartbeat()
        if self._assigned is not None:
            await self._apply_assignment(set(self._assigned))
        else:
            self._loops.append(asyncio.create_task(self._rebalance_loop()))
            self._rebalance_event.set()
        if self.auto_commit:
            self._loops.append(asyncio.create_task(self._auto_commit_loop()))

    async def shutdown(self) -> None:
        inst = self._instance
        if inst is None:
            return
        self._stopping.set()
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        async with self._lock:
            for lq in list(self.queues.values()):
                await self._stop_queue(lq)
            if self.auto_commit:
                await self.commit()
            self.queues.clear()
        await inst.unregister(consumer_group=self.group)
        await inst.shutdown()
        self._instance = None

    # instance hooks ------------------------------------------------------------------------
    def running_info(self) -> dict[str, object]:
        return {
            "properties": {"PROP_CONSUME_TYPE": "CONSUME_ACTIVELY"},
            "subscriptionSet": [s.to_json() for s in self.subscriptions.values()],
            "mqTable": {},
            "statusTable": {},
        }

    def consumer_status(self, topic: str) -> dict[MessageQueue, int]:
        return {mq: lq.consume_offset for mq, lq in self.queues.items() if mq.topic == topic}

    async def reset_offset(self, topic: str, offsets: dict[MessageQueue, int]) -> None:
        for mq, off in offsets.items():
            if mq in self.queues:
                await self.seek(mq, off)

    # queue ownership -----------------------------------------------------------------------
    def assignment(self) -> set[MessageQueue]:
        return set(self.queues)

    async def _rebalance_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rebalance_event.wait(), self.rebalance_interval)
            self._rebalance_event.clear()
            try:
                await self.rebalance()
            except Exception:
                log.exception("lite pull rebalance of %s failed", self.group)

    async def rebalance(self) -> None:
        inst = self.instance
        wanted: set[MessageQueue] = set()
        keep: set[str] = set()
        for topic in list(self.subscriptions):
            try:
                mqs = await inst.subscribe_queues(topic)
                if not mqs:
                    keep.add(topic)
                    continue
                if self.clustering:
                    addr = await inst.any_broker_of_topic(topic)
                    cids = await broker_api.consumer_ids(inst, addr, self.group) if addr else []
                    if not cids:
                        keep.add(topic)
                        continue
                    wanted |= set(self.allocate(inst.client_id, mqs, cids))
                else:
                    wanted |= set(mqs)
            except MQClientError as exc:
                log.warning("rebalance of %s failed: %s", topic, exc)
                keep.add(topic)
        wanted |= {mq for mq in self.queues if mq.topic in keep}
        await self._apply_assignment(wanted)

    async def _apply_assignment(self, wanted: set[MessageQueue]) -> None:
        async with self._lock:
            store = self.offset_store
            assert store is not None
            for mq in [mq for mq in self.queues if mq not in wanted]:
                lq = self.queues.pop(mq)
                await self._stop_queue(lq)
                if self.auto_commit:
                    store.update(mq, lq.consume_offset)
                    await store.persist([mq], force=True)
                store.remove(mq)
            for mq in sorted(wanted - set(self.queues)):
                try:
                    offset = await compute_start_offset(
                        self.instance, store, mq, self.consume_from_where, self.consume_timestamp
                    )
                except MQClientError as exc:
                    log.warning("cannot start %s: %s", mq, exc)
                    continue
                lq = _LiteQueue(mq, offset, offset)
                lq.space.set()
                self.queues[mq] = lq
                lq.task = asyncio.create_task(self._pull_loop(lq))

    async def _stop_queue(self, lq: _LiteQueue) -> None:
        lq.dropped = True
        if lq.task is not None:
            lq.task.cancel()
            await asyncio.gather(lq.task, return_exceptions=True)
            lq.task = None

    # pulling -------------------------------------------------------------------------------
    async def _pull_loop(self, lq: _LiteQueue) -> None:
        mq = lq.mq
        sub = self.subscriptions.get(mq.topic) or SubscriptionData.build(mq.topic)
        while not lq.dropped and not self._stopping.is_set():
            if lq.buffered >= self.pull_threshold_for_queue or lq.paused:
                lq.space.clear()
                await lq.space.wait()
                continue
            gen, offset = lq.generation, lq.pull_offset
            try:
                addr = await self.instance.broker_addr(mq.broker_name, mq.topic, master_only=False)
                result = await broker_api.pull(
                    self.instance,
                    addr,
                    group=self.group,
                    mq=mq,
                    offset=offset,
                    max_nums=self.pull_batch_size,
                    sys_flag=broker_api.PULL_SUSPEND
                    | broker_api.PULL_SUBSCRIPTION
                    | broker_api.PULL_LITE,
                    commit_offset=0,
                    suspend_ms=int(self.suspend_timeout * 1000),
                    subscription=sub.sub_string,
                    sub_version=sub.sub_version,
                    timeout=self.suspend_timeout + 15.0,
                )
            except MQClientError as exc:
                log.debug("pull %s failed: %s", mq, exc)
                if await self._sleep(self.pull_error_delay):
                    return
                continue
            if lq.dropped or gen != lq.generation:
                continue  # a seek happened while the pull was in flight
            if result.code == ResponseCode.SUCCESS:
                msgs = [m for m in result.msgs if m.queue_offset >= offset and sub.matches(m.tags)]
                lq.pull_offset = result.next_begin_offset
                if msgs:
                    lq.buffered += len(msgs)
                    self._buffer.put_nowait((lq, gen, msgs))
            else:
                lq.pull_offset = result.next_begin_offset

    # application API -------------------------------------------------------------------------
    async def poll(self, timeout: float = 5.0) -> list[MessageExt]:
        """Up to `poll_batch_size` messages of one queue, or [] after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._pending:
                item = self._pending.pop(0)
            else:
                left = deadline - loop.time()
                if left <= 0:
                    return []
                try:
                    item = await asyncio.wait_for(self._buffer.get(), left)
                except TimeoutError:
                    return []
            lq, gen, msgs = item
            if lq.dropped or gen != lq.generation or self.queues.get(lq.mq) is not lq:
                continue
            take, rest = msgs[: self.poll_batch_size], msgs[self.poll_batch_size :]
            if rest:
                self._pending.insert(0, (lq, gen, rest))
            lq.buffered -= len(take)
            lq.space.set()
            lq.consume_offset = take[-1].queue_offset + 1
            for m in take:
                restore_retry_topic(m, self.group)
            if self.auto_commit and loop.time() - self._last_commit >= self.auto_commit_interval:
                await self.commit()
            return take

    async def commit(self, offsets: dict[MessageQueue, int] | None = None) -> None:
        """Stores the consumed positions (or the given ones) and waits for the brokers."""
        store = self.offset_store
        if store is None:
            return
        if offsets is None:
            offsets = {mq: lq.consume_offset for mq, lq in self.queues.items()}
        for mq, off in offsets.items():
            store.update(mq, off)
        await store.persist(list(offsets), force=True)
        self._last_commit = asyncio.get_running_loop().time()

    async def committed(self, mq: MessageQueue) -> int:
        assert self.offset_store is not None
        return await self.offset_store.read(mq, from_store=True)

    async def seek(self, mq: MessageQueue, offset: int) -> None:
        lq = self.queues.get(mq)
        if lq is None:
            raise MQClientError(f"{mq} is not assigned to this consumer")
        lq.generation += 1
        if lq.task is not None:
            lq.task.cancel()
            await asyncio.gather(lq.task, return_exceptions=True)
        lq.pull_offset = lq.consume_offset = offset
        lq.buffered = 0
        lq.dropped = False
        lq.space.set()
        lq.task = asyncio.create_task(self._pull_loop(lq))

    async def seek_to_begin(self, mq: MessageQueue) -> None:
        addr = await self.instance.broker_addr(mq.broker_name, mq.topic, master_only=False)
        await self.seek(mq, await broker_api.get_min_offset(self.instance, addr, mq))

    async def seek_to_end(self, mq: MessageQueue) -> None:
        addr = await self.instance.broker_addr(mq.broker_name, mq.topic, master_only=False)
        await self.seek(mq, await broker_api.get_max_offset(self.instance, addr, mq))

    def pause(self, queues: Sequence[MessageQueue]) -> None:
        for mq in queues:
            if mq in self.queues:
                self.queues[mq].paused = True

    def resume(self, queues: Sequence[MessageQueue]) -> None:
        for mq in queues:
            lq = self.queues.get(mq)
            if lq is not None:
                lq.paused = False
                lq.space.set()

    async def fetch_queues(self, topic: str) -> list[MessageQueue]:
        return await self.instance.subscribe_queues(topic, refresh=True)

    async def _auto_commit_loop(self) -> None:
        while not await self._sleep(self.auto_commit_interval):
            try:
                await self.commit()
            except Exception:
                log.exception("auto-commit of %s failed", self.group)
