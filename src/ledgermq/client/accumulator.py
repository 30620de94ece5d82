"""Producer auto-batching: single sends that meet in time leave as one batch request.

RocketMQ's Java producer has this as `autoBatch` (its ProduceAccumulator): messages for
the same topic (and queue, when the caller named one) are held briefly, sent as one
SEND_BATCH_MESSAGE, and the batch's reply is split back into one SendResult per message.
Each caller still awaits its own message and gets its own msgId and queue offset; the
broker stores and indexes every message on its own, so consumers cannot tell.

Where Java holds a batch for up to `batchMaxDelayMs` (10 ms by default), the default here
adds no wait at all: what was sent during one event-loop iteration leaves at the end of
it. Under load many sends resume in the same iteration (their replies arrived in one
read), so batches form by themselves; a lone send leaves at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from ledgermq.client.message import MessageQueue, SendResult
from ledgermq.common.message import BATCH_ITEM_BASE_SIZE

# Java's limits: batchMaxBytes is 1 B..2 MiB, batchMaxDelayMs up to 30 s.
MAX_BATCH_BYTES_LIMIT = 2 * 1024 * 1024
MAX_BATCH_DELAY_MS_LIMIT = 30_000
# Java defaults to 32 KiB. A request costs this broker more than the Java one, so bigger
# batches pay: measured on a three-member DLedger group, 1 KiB sends, 100 in flight,
# 128 KiB against 32 KiB gave +6-17% (and lower p99); 64-256 KiB were alike.
DEFAULT_BATCH_MAX_BYTES = 128 * 1024


class BatchKey(NamedTuple):
    """What a batch's messages share: one request has one topic, queue and WAIT flag."""

    topic: str
    queue: MessageQueue | None  # None: the producer picks (and may retry elsewhere)
    wait_store_msg_ok: bool


@dataclass(slots=True)
class HeldSend:
    """One caller's message, encoded for the batch body, and the future it awaits."""

    body: bytes
    flag: int
    properties: bytes  # encoded, as the batch body carries them (PROTOCOL.md, SEND_BATCH)
    uniq_id: str
    deadline: float  # loop time after which the caller gives up
    future: asyncio.Future[SendResult]

    @property
    def encoded_size(self) -> int:
        """Its exact share of the batch body."""
        return BATCH_ITEM_BASE_SIZE + len(self.body) + len(self.properties)


@dataclass(slots=True)
class _OpenBatch:
    sends: list[HeldSend] = field(default_factory=list)
    size: int = 0
    timer: asyncio.Handle | None = None


SendBatch = Callable[[BatchKey, list[HeldSend]], Awaitable[None]]


class SendAccumulator:
    """Holds single sends per BatchKey and hands each closed batch to `send_batch`.

    `send_batch` must settle every future of the batch it is given (a result or an
    error each); the accumulator only decides what goes together and when.
    """

    def __init__(
        self,
        send_batch: SendBatch,
        *,
        max_bytes: int = DEFAULT_BATCH_MAX_BYTES,
        max_delay_ms: float = 0.0,
        total_max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        if not 0 < max_bytes <= MAX_BATCH_BYTES_LIMIT:
            raise ValueError(f"batch max bytes must be in 1..{MAX_BATCH_BYTES_LIMIT}")
        if not 0 <= max_delay_ms <= MAX_BATCH_DELAY_MS_LIMIT:
            raise ValueError(f"batch max delay must be in 0..{MAX_BATCH_DELAY_MS_LIMIT} ms")
        if total_max_bytes <= 0:
            raise ValueError("total batch max bytes must be positive")
        self._send_batch = send_batch
        self.max_bytes = max_bytes
        self.max_delay_ms = max_delay_ms
        self.total_max_bytes = total_max_bytes
        self._open: dict[BatchKey, _OpenBatch] = {}
        # Bytes held in open batches and batches on their way; past total_max_bytes
        # new sends bypass the accumulator (Java: tryAddMessage) instead of queueing.
        self.held_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def accepts(self, size: int) -> bool:
        """Whether a message of `size` encoded bytes may be held now."""
        return size <= self.max_bytes and self.held_bytes + size <= self.total_max_bytes

    def add(self, key: BatchKey, send: HeldSend) -> asyncio.Future[SendResult]:
        size = send.encoded_size
        batch = self._open.get(key)
        if batch is not None and batch.size + size > self.max_bytes:
            self._close(key)  # full: it leaves now, this message opens the next one
            batch = None
        if batch is None:
            batch = self._open[key] = _OpenBatch()
            loop = asyncio.get_running_loop()
            if self.max_delay_ms > 0:
                batch.timer = loop.call_later(self.max_delay_ms / 1000, self._close, key, batch)
            else:
                # call_soon from inside a callback runs in the next iteration, after
                # every send resumed in this one has been added
                batch.timer = loop.call_soon(self._close, key, batch)
        batch.sends.append(send)
        batch.size += size
        self.held_bytes += size
        return send.future

    def flush(self) -> None:
        """Sends every open batch now (shutdown)."""
        for key in list(self._open):
            self._close(key)

    async def drain(self) -> None:
        """Flushes and waits until every batch has been answered."""
        self.flush()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _close(self, key: BatchKey, expected: _OpenBatch | None = None) -> None:
        batch = self._open.get(key)
        if batch is None or (expected is not None and batch is not expected):
            return  # already closed by size; its timer fired late
        del self._open[key]
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run(key, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: BatchKey, batch: _OpenBatch) -> None:
        try:
            await self._send_batch(key, batch.sends)
        except BaseException as exc:
            # send_batch settles the futures itself; this is the last line for a bug
            # or a cancellation in it, so that no caller waits forever
            for send in batch.sends:
                if not send.future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        send.future.cancel()
                    else:
                        send.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.held_bytes -= batch.size
