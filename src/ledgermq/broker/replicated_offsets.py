"""Consumer offsets through a DLedger group's log, so a new master has every commit.

RocketMQ's slaves copy the master's offset table every 10 s, so after a failover
consumers re-receive up to 10 s of messages they had already committed. Here the master
turns offset commits into log entries (one per event-loop iteration, however many
commits arrived in it) and every replica applies them in log order: an
UPDATE_CONSUMER_OFFSET is answered once its entry is committed, so a consumer whose commit
was acknowledged never sees those messages again from the next master. Commits that ride
on pull requests are not acknowledged to the consumer; they are replicated the same way,
one loop iteration later.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from ledgermq.broker.consumer_offsets import ConsumerOffsetManager
from ledgermq.dledger.member import Member, MemberError
from ledgermq.store.dledger_commitlog import encode_meta

log = logging.getLogger(__name__)

META_CONSUMER_OFFSETS = 1


class ReplicatedOffsets:
    def __init__(self, offsets: ConsumerOffsetManager, member: Callable[[], Member | None]):
        self._offsets = offsets
        self._member = member
        self._batch: dict[tuple[str, str, int], int] = {}
        self._waiters: list[asyncio.Future[None]] = []

    def commit(
        self, group: str, topic: str, queue_id: int, offset: int, *, wait: bool = False
    ) -> asyncio.Future[None] | None:
        """Queue a commit for the log. With `wait`, a future that completes when it is
        committed (and applied here) or fails with MemberError."""
        loop = asyncio.get_running_loop()
        if not self._batch:
            loop.call_soon(self._propose)
        self._batch[(group, topic, queue_id)] = offset
        if not wait:
            return None
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        return fut

    def _propose(self) -> None:
        batch, self._batch = self._batch, {}
        waiters, self._waiters = self._waiters, []
        if not batch:
            return
        body = encode_meta(
            META_CONSUMER_OFFSETS,
            json.dumps([[g, t, q, o] for (g, t, q), o in batch.items()]).encode(),
        )
        member = self._member()
        try:
            if member is None:
                raise MemberError(503, "the broker's DLedger member is not running", None)
            (entry,) = member.submit([body])
        except MemberError as exc:
            log.warning("consumer offsets not replicated: %s", exc.message)
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(exc)
            return

        def done(f: asyncio.Future[object]) -> None:
            exc = None if f.cancelled() else f.exception()
            for fut in waiters:
                if fut.done():
                    continue
                if f.cancelled() or exc is not None:
                    fut.set_exception(exc or MemberError(500, "cancelled", None))
                else:
                    fut.set_result(None)

        entry.add_done_callback(done)

    def apply(self, kind: int, payload: bytes) -> None:
        """On every replica, in log order."""
        if kind != META_CONSUMER_OFFSETS:
            log.warning("unknown broker metadata entry kind %d skipped", kind)
            return
        try:
            items = json.loads(payload)
            for group, topic, queue_id, offset in items:
                self._offsets.commit(str(group), str(topic), int(queue_id), int(offset))
        except (ValueError, TypeError) as exc:
            log.error("unreadable consumer offsets entry skipped: %s", exc)
