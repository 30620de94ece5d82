"""Blocking wrapper for scripts: a Producer driven by its own event-loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from ledgermq.client.message import Message, MessageQueue, SendResult
from ledgermq.client.producer import Producer, Selector

T = TypeVar("T")


class SyncProducer:
    """Same arguments as `Producer`; every method blocks until the broker answers.

    Safe to call from several threads: calls are handed to the private loop.
    """

    def __init__(self, group: str, namesrv_addr: str | list[str], **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"ledgermq-producer-{group}", daemon=True
        )
        self._thread.start()
        self.producer = Producer(group, namesrv_addr, **kwargs)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError("SyncProducer is shut down")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        self._run(self.producer.start())

    def send(
        self,
        msg: Message,
        *,
        queue: MessageQueue | None = None,
        selector: Selector | None = None,
        arg: Any = None,
    ) -> SendResult:
        return self._run(self.producer.send(msg, queue=queue, selector=selector, arg=arg))

    def send_oneway(self, msg: Message) -> None:
        self._run(self.producer.send_oneway(msg))

    def send_batch(self, msgs: Sequence[Message]) -> SendResult:
        return self._run(self.producer.send_batch(msgs))

    def shutdown(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self.producer.shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> SyncProducer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
