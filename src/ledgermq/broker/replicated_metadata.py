"""Broker metadata through a DLedger group's log, so a new master has all of it.

RocketMQ's slaves copy the master's consumer offsets, topics and delay-level progress
every 10 s, so after a failover consumers re-receive what they had committed, a topic
created just before is missing and delayed messages are delivered twice. Here the master
writes each change into the log as a metadata entry (one per kind per event-loop
iteration, however many changes arrived in it) and every replica applies them in log
order, between the messages they came with:

* consumer offsets (kind 1): an UPDATE_CONSUMER_OFFSET is answered once its entry is
  committed, so a consumer never sees acknowledged progress undone; commits that ride on
  pull requests go the same way, unacknowledged;
* topic configs (kind 2): a topic is created (or changed) in the log before any message
  sent to it, so a master that has the message has its topic;
* delay-level progress (kind 3): how far each level's delayed messages were delivered.

The master applies its own topic and delay changes at once; when their entries come
back it skips them (its own state is newer). Offsets it applies only from the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from ledgermq.broker.consumer_offsets import ConsumerOffsetManager
from ledgermq.broker.schedule import ScheduleService
from ledgermq.broker.topic_config import TopicConfigManager
from ledgermq.common.route_data import TopicConfig
from ledgermq.dledger.member import Member, MemberError
from ledgermq.dledger.protocol import Code
from ledgermq.store.dledger_commitlog import encode_meta

log = logging.getLogger(__name__)

META_CONSUMER_OFFSETS = 1
META_TOPIC_CONFIG = 2
META_DELAY_OFFSETS = 3


class ReplicatedMetadata:
    def __init__(
        self,
        offsets: ConsumerOffsetManager,
        topics: TopicConfigManager,
        schedule: ScheduleService,
        member: Callable[[], Member | None],
        is_master: Callable[[], bool],
    ) -> None:
        self._offsets = offsets
        self._topics = topics
        self._schedule = schedule
        self._member = member
        self._is_master = is_master
        # kind -> key -> latest value, proposed at the end of this loop iteration
        self._batch: dict[int, dict[Any, Any]] = {}
        self._waiters: list[asyncio.Future[None]] = []

    # --- the master's side ---------------------------------------------------------
    def commit_offset(
        self, group: str, topic: str, queue_id: int, offset: int, *, wait: bool = False
    ) -> asyncio.Future[None] | None:
        """Queue a consumer offset commit. With `wait`, a future that completes when it
        is committed (and applied here) or fails with MemberError."""
        self._queue(META_CONSUMER_OFFSETS, (group, topic, queue_id), offset)
        if not wait:
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    def topic_changed(self, topic: str, cfg: TopicConfig | None) -> None:
        if self._is_master():
            self._queue(META_TOPIC_CONFIG, topic, cfg.to_json() if cfg is not None else None)

    def delay_advanced(self, level: int, offset: int) -> None:
        if self._is_master():
            self._queue(META_DELAY_OFFSETS, level, offset)

    def _queue(self, kind: int, key: Any, value: Any) -> None:
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._propose)
        self._batch.setdefault(kind, {})[key] = value

    def _propose(self) -> None:
        batch, self._batch = self._batch, {}
        waiters, self._waiters = self._waiters, []
        bodies = [encode_meta(kind, _encode(kind, items)) for kind, items in batch.items()]
        if not bodies:
            return
        member = self._member()
        try:
            if member is None:
                raise MemberError(
                    Code.ILLEGAL_MEMBER_STATE, "the broker's DLedger member is not running", None
                )
            entries = member.submit(bodies)
        except MemberError as exc:
            log.warning("broker metadata not replicated: %s", exc.message)
            _fail(waiters, exc)
            return
        last = entries[-1]  # entries apply in order: the last one answers for all

        def done(f: asyncio.Future[object]) -> None:
            for e in entries[:-1]:
                if e.done() and not e.cancelled():
                    e.exception()  # retrieved: the last one reports
            exc = (
                MemberError(Code.INTERNAL_ERROR, "cancelled", None)
                if f.cancelled()
                else f.exception()
            )
            if exc is not None:
                _fail(waiters, exc)
                return
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

        last.add_done_callback(done)

    # --- every replica, in log order -----------------------------------------------------
    def apply(self, kind: int, payload: bytes) -> None:
        try:
            items = json.loads(payload)
            if kind == META_CONSUMER_OFFSETS:
                for group, topic, queue_id, offset in items:
                    self._offsets.commit(str(group), str(topic), int(queue_id), int(offset))
            elif kind == META_TOPIC_CONFIG:
                if self._is_master():
                    return  # its own change, applied when made (and maybe changed since)
                for topic, raw in items:
                    cfg = TopicConfig.from_json({"topicName": topic, **raw}) if raw else None
                    self._topics.apply_replicated(str(topic), cfg)
            elif kind == META_DELAY_OFFSETS:
                if self._is_master():
                    return
                for level, offset in items:
                    self._schedule.apply_replicated(int(level), int(offset))
            else:
                log.warning("unknown broker metadata entry kind %d skipped", kind)
        except (ValueError, TypeError, KeyError) as exc:
            log.error("unreadable broker metadata entry (kind %d) skipped: %s", kind, exc)


def _encode(kind: int, items: dict[Any, Any]) -> bytes:
    if kind == META_CONSUMER_OFFSETS:
        rows: list[Any] = [[g, t, q, o] for (g, t, q), o in items.items()]
    else:
        rows = [[k, v] for k, v in items.items()]
    return json.dumps(rows).encode()


def _fail(waiters: list[asyncio.Future[None]], exc: BaseException) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_exception(exc)
