"""Consumption RPCs on top of the brokers' POP: ReceiveMessage, AckMessage,
ChangeInvisibleDuration and ForwardMessageToDeadLetterQueue.

ReceiveMessage pops from the broker the client named (queue -1: all its queues and the
group's retry topic, as the Java proxy does), in order for groups with
consumeMessageOrderly. Push consumers (auto_renew) get defaultInvisibleTimeMills and
the renewer keeps their messages invisible until they answer. Receipt handles are
decoded from the request alone (see receipt.py), so any proxy can ack them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from ledgermq.proxy import validation
from ledgermq.proxy.activities.context import CallContext
from ledgermq.proxy.backend import ClusterBackend, PoppedMessage, PopRequest
from ledgermq.proxy.config import ProxyConfig
from ledgermq.proxy.message_codec import to_v2_message
from ledgermq.proxy.protocol import definition_pb2 as pb
from ledgermq.proxy.protocol import service_pb2 as svc
from ledgermq.proxy.receipt import ReceiptHandle, ReceiptHandleError
from ledgermq.proxy.renew import HandleRenewer
from ledgermq.proxy.sessions import ClientSessions
from ledgermq.proxy.status import Code, ProxyError, code_name, ok, status

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 32  # the broker's limit per pop
# A popped message the client never got is made visible again this soon (Java: 1 s).
NACK_INVISIBLE_MS = 1_000
_EXPRESSION_TYPES = {pb.FILTER_TYPE_UNSPECIFIED: "TAG", pb.TAG: "TAG", pb.SQL: "SQL92"}


def duration_ms(d: object) -> int:
    return int(d.seconds) * 1000 + int(d.nanos) // 1_000_000  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class PollingLimits:
    min_ms: int
    max_ms: int
    request_timeout_ms: int


def polling_ms(requested_ms: int | None, remaining_ms: int | None, limits: PollingLimits) -> int:
    """The long poll to ask the broker for (pure; the Java proxy's rules).

    The request's long_polling_timeout (or, without one, what the deadline leaves after
    half a request timeout), clamped to [min, max], and never past the client's
    deadline: a deadline shorter than the minimum poll is an error (40018).
    """
    if requested_ms is None:
        if remaining_ms is None:
            requested_ms = limits.max_ms
        else:
            requested_ms = remaining_ms - limits.request_timeout_ms // 2
    poll = min(max(requested_ms, limits.min_ms), limits.max_ms)
    if remaining_ms is not None and poll > remaining_ms:
        if remaining_ms < limits.min_ms:
            raise ProxyError(
                Code.ILLEGAL_POLLING_TIME,
                "the deadline time remaining is not enough for polling, "
                "please check network condition",
            )
        poll = remaining_ms
    return poll


def check_invisible_ms(invisible_ms: int, low: int, high: int) -> int:
    if invisible_ms < low or invisible_ms > high:
        raise ProxyError(
            Code.ILLEGAL_INVISIBLE_TIME,
            f"the invisible time {invisible_ms} ms is out of range [{low}, {high}] ms",
        )
    return invisible_ms


def combined_status(codes: Iterable[int]) -> pb.Status:
    """A batch's overall status: the one code all entries share, else
    MULTIPLE_RESULTS (as the Java proxy answers acks)."""
    distinct = set(codes)
    if len(distinct) == 1:
        code = distinct.pop()
        return status(code, code_name(code))
    if not distinct:
        return status(Code.BAD_REQUEST, "no entries")
    return status(Code.MULTIPLE_RESULTS, "MULTIPLE_RESULTS")


def decode_handle(text: str) -> ReceiptHandle:
    try:
        return ReceiptHandle.decode(text)
    except ReceiptHandleError as exc:
        raise ProxyError(Code.INVALID_RECEIPT_HANDLE, str(exc)) from None


def _now_timestamp() -> Timestamp:
    ms = int(time.time() * 1000)
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


class ConsumeActivity:
    def __init__(
        self,
        backend: ClusterBackend,
        config: ProxyConfig,
        renewer: HandleRenewer,
        sessions: ClientSessions,
    ) -> None:
        self._backend = backend
        self._sessions = sessions
        self._config = config
        self.renewer = renewer
        self._background: set[asyncio.Task[None]] = set()
        self._limits = PollingLimits(
            config.grpc_client_consumer_min_long_polling_timeout_millis,
            config.grpc_client_consumer_max_long_polling_timeout_millis,
            config.request_timeout_millis,
        )

    # ReceiveMessage -----------------------------------------------------------------
    async def _pop_request(
        self, req: svc.ReceiveMessageRequest, ctx: CallContext
    ) -> tuple[PopRequest, bool]:
        group = validation.check_group(req.group.name)
        topic = validation.check_topic(req.message_queue.topic.name)
        remaining = None if ctx.time_remaining is None else int(ctx.time_remaining * 1000)
        requested = (
            duration_ms(req.long_polling_timeout) if req.HasField("long_polling_timeout") else None
        )
        poll = polling_ms(requested, remaining, self._limits)
        auto_renew = req.auto_renew and self._config.enable_proxy_auto_renew
        if auto_renew:
            invisible = self._config.default_invisible_time_mills
        elif not req.HasField("invisible_duration"):
            raise ProxyError(
                Code.ILLEGAL_INVISIBLE_TIME, "invisible_duration is required without auto_renew"
            )
        else:
            invisible = check_invisible_ms(
                duration_ms(req.invisible_duration),
                self._config.min_invisible_time_mills_for_recv,
                self._config.max_invisible_time_mills,
            )
        batch = req.batch_size or self._config.grpc_client_consumer_receive_batch_size
        if batch < 0:
            raise ProxyError(Code.BAD_REQUEST, f"batch_size {batch} is negative")
        expression = req.filter_expression
        pop = PopRequest(
            broker_name=req.message_queue.broker.name,
            topic=topic,
            group=group,
            batch_size=min(batch, MAX_BATCH_SIZE),
            invisible_ms=invisible,
            poll_ms=poll,
            order=await self._backend.is_orderly_group(group, topic),
            attempt_id=req.attempt_id if req.HasField("attempt_id") else "",
            expression_type=_EXPRESSION_TYPES.get(expression.type, "TAG"),
            expression=expression.expression.strip() or "*",
        )
        return pop, auto_renew and bool(ctx.client_id)

    async def receive_message(
        self, req: svc.ReceiveMessageRequest, ctx: CallContext
    ) -> AsyncIterator[svc.ReceiveMessageResponse]:
        try:
            pop, renew = await self._pop_request(req, ctx)
        except ProxyError as exc:
            yield svc.ReceiveMessageResponse(status=exc.status())
            return
        popping = asyncio.ensure_future(self._backend.pop(pop))
        try:
            popped = await asyncio.shield(popping)
        except asyncio.CancelledError:
            # the client left during the long poll: whatever the broker still hands
            # out must not stay invisible for the whole invisible time
            popping.add_done_callback(lambda t: self._abandoned(pop, t))
            raise
        except ProxyError as exc:
            yield svc.ReceiveMessageResponse(status=exc.status())
            return
        except Exception as exc:
            log.exception("ReceiveMessage failed")
            yield svc.ReceiveMessageResponse(status=status(Code.INTERNAL_ERROR, str(exc)))
            return
        if not popped:
            yield svc.ReceiveMessageResponse(
                status=status(Code.MESSAGE_NOT_FOUND, "no new message")
            )
            return
        if renew:
            self._sessions.touch(ctx.client_id, ctx.language)  # a live client, for the renewer
            for p in popped:
                self.renewer.track(ctx.client_id, pop.group, pop.topic, p.handle)
        sent = 0
        try:
            yield svc.ReceiveMessageResponse(status=ok())
            yield svc.ReceiveMessageResponse(delivery_timestamp=_now_timestamp())
            for p in popped:
                yield svc.ReceiveMessageResponse(message=self._to_v2(p, pop.topic))
                sent += 1
        finally:
            if sent < len(popped):
                # (the message being written when the stream broke may have arrived:
                # nacking it can only deliver it twice, never lose it)
                self._spawn(self._nack(pop.group, pop.topic, popped[sent:]))

    @staticmethod
    def _to_v2(p: PoppedMessage, topic: str) -> pb.Message:
        message = to_v2_message(p.msg, topic=topic)
        sp = message.system_properties
        sp.receipt_handle = p.handle.encode()
        sp.delivery_attempt = p.delivery_attempt
        sp.invisible_duration.FromMilliseconds(p.handle.info.invisible_time)
        return message

    def _abandoned(self, pop: PopRequest, task: asyncio.Future[list[PoppedMessage]]) -> None:
        if task.cancelled() or task.exception() is not None or not task.result():
            return
        self._spawn(self._nack(pop.group, pop.topic, task.result()))

    async def _nack(self, group: str, topic: str, popped: list[PoppedMessage]) -> None:
        for p in popped:
            handle = await self.renewer.release(group, p.handle.encode()) or p.handle
            try:
                await self._backend.change_invisible(group, topic, handle, NACK_INVISIBLE_MS)
            except Exception as exc:  # it still comes back after its invisible time
                log.info("could not hand back an undelivered message: %s", exc)

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # AckMessage ---------------------------------------------------------------------
    async def _current_handle(self, group: str, client_handle: str) -> ReceiptHandle:
        """The handle to act on: the renewer's newest if it renewed this message."""
        decoded = decode_handle(client_handle)
        return await self.renewer.release(group, client_handle) or decoded

    async def _ack_one(
        self, group: str, topic: str, entry: svc.AckMessageEntry
    ) -> svc.AckMessageResultEntry:
        try:
            handle = await self._current_handle(group, entry.receipt_handle)
            await self._backend.ack(group, topic, handle)
            st = ok()
        except ProxyError as exc:
            st = exc.status()
        except Exception as exc:
            log.exception("ack failed")
            st = status(Code.INTERNAL_SERVER_ERROR, f"ack failed: {exc}")
        return svc.AckMessageResultEntry(
            message_id=entry.message_id, receipt_handle=entry.receipt_handle, status=st
        )

    async def ack_message(
        self, req: svc.AckMessageRequest, ctx: CallContext
    ) -> svc.AckMessageResponse:
        group = validation.check_group(req.group.name)
        topic = validation.check_topic(req.topic.name)
        entries = await asyncio.gather(*(self._ack_one(group, topic, e) for e in req.entries))
        return svc.AckMessageResponse(
            status=combined_status(e.status.code for e in entries), entries=entries
        )

    # ChangeInvisibleDuration ------------------------------------------------------------
    async def change_invisible_duration(
        self, req: svc.ChangeInvisibleDurationRequest, ctx: CallContext
    ) -> svc.ChangeInvisibleDurationResponse:
        group = validation.check_group(req.group.name)
        topic = validation.check_topic(req.topic.name)
        invisible = check_invisible_ms(
            duration_ms(req.invisible_duration), 0, self._config.max_invisible_time_mills
        )
        handle = await self._current_handle(group, req.receipt_handle)
        new = await self._backend.change_invisible(group, topic, handle, invisible)
        return svc.ChangeInvisibleDurationResponse(status=ok(), receipt_handle=new.encode())

    # ForwardMessageToDeadLetterQueue ------------------------------------------------------
    async def forward_to_dead_letter_queue(
        self, req: svc.ForwardMessageToDeadLetterQueueRequest, ctx: CallContext
    ) -> svc.ForwardMessageToDeadLetterQueueResponse:
        group = validation.check_group(req.group.name)
        topic = validation.check_topic(req.topic.name)
        handle = await self._current_handle(group, req.receipt_handle)
        await self._backend.forward_to_dlq(group, topic, handle, req.message_id)
        return svc.ForwardMessageToDeadLetterQueueResponse(status=ok())
