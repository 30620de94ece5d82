"""One remoting connection: the asyncio shell around `FrameDecoder`.

Both sides of the protocol send requests (brokers call back into clients, e.g.
NOTIFY_CONSUMER_IDS_CHANGED), so a connection matches replies to its own pending requests
by opaque and hands incoming requests to a `Dispatcher`. Requests are processed
concurrently: a handler may return a reply at once (the hot path stays free of task
creation) or an awaitable, which runs as its own task so that a long-polled PULL never
holds up the requests behind it.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ledgermq.remoting.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    FLAG_ONEWAY,
    FrameDecoder,
    MalformedCommand,
    ProtocolError,
    RemotingCommand,
    encode_command,
)
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.errors import (
    RemotingError,
    RemotingSendError,
    RemotingTimeoutError,
)

log = logging.getLogger(__name__)

# Frames queued before a write is forced even within one loop iteration.
_FLUSH_FRAMES = 32
# Request bytes a connection handles per loop iteration before it leaves the rest of
# what it read for the next one (see RemotingConnection._defer); 0 = no limit.
DEFAULT_READ_SLICE_BYTES = 64 * 1024

HandlerResult = RemotingCommand | None | Awaitable[RemotingCommand | None]
Handler = Callable[["RemotingConnection", RemotingCommand], HandlerResult]
# Takes the requests of one code that arrived together and answers each, in order;
# or returns one awaitable of all the answers (e.g. one group-commit wait for the lot).
GroupHandler = Callable[
    ["RemotingConnection", list[RemotingCommand]],
    list[HandlerResult] | Awaitable[list[RemotingCommand | None]],
]


def _code_name(code: int) -> str:
    try:
        return RequestCode(code).name
    except ValueError:
        return str(code)


class Dispatcher:
    """A processor table: request code -> handler."""

    def __init__(self) -> None:
        self._handlers: dict[int, Handler] = {}
        self._group_handlers: dict[int, GroupHandler] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, code: int, handler: Handler, group: GroupHandler | None = None) -> None:
        """`group`, if given, handles runs of same-code requests that arrived in one read
        (a producer's pipelined sends): one store append instead of one per request."""
        self._handlers[int(code)] = handler
        if group is not None:
            self._group_handlers[int(code)] = group
        else:
            self._group_handlers.pop(int(code), None)

    def groupable(self, code: int) -> bool:
        return code in self._group_handlers

    def handles(self, code: int) -> bool:
        return int(code) in self._handlers

    def dispatch(self, conn: RemotingConnection, request: RemotingCommand) -> None:
        handler = self._handlers.get(request.code)
        if handler is None:
            conn.reply(
                request,
                request.make_response(
                    ResponseCode.REQUEST_CODE_NOT_SUPPORTED,
                    f"request code {request.code} not supported",
                ),
            )
            return
        try:
            result = handler(conn, request)
        except Exception as exc:
            conn.reply(request, _error_reply(request, exc))
            return
        if inspect.isawaitable(result):
            task = asyncio.get_running_loop().create_task(self._finish(conn, request, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            conn.reply(request, result)

    def dispatch_group(self, conn: RemotingConnection, requests: list[RemotingCommand]) -> None:
        if len(requests) == 1:
            self.dispatch(conn, requests[0])
            return
        try:
            results = self._group_handlers[requests[0].code](conn, requests)
        except Exception as exc:  # noqa: BLE001 - every request gets the error reply
            for request in requests:
                conn.reply(request, _error_reply(request, exc))
            return
        if inspect.isawaitable(results):
            task = asyncio.get_running_loop().create_task(
                self._finish_group(conn, requests, results)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        for request, result in zip(requests, results, strict=True):
            if inspect.isawaitable(result):
                task = asyncio.get_running_loop().create_task(self._finish(conn, request, result))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                conn.reply(request, result)

    async def _finish_group(
        self,
        conn: RemotingConnection,
        requests: list[RemotingCommand],
        pending: Awaitable[list[RemotingCommand | None]],
    ) -> None:
        try:
            responses = await pending
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            responses = [_error_reply(request, exc) for request in requests]
        for request, response in zip(requests, responses, strict=True):
            conn.reply(request, response)

    async def _finish(
        self, conn: RemotingConnection, request: RemotingCommand, pending: Awaitable[Any]
    ) -> None:
        try:
            response = await pending
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            response = _error_reply(request, exc)
        conn.reply(request, response)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _error_reply(request: RemotingCommand, exc: Exception) -> RemotingCommand:
    if isinstance(exc, RemotingError):
        return request.make_response(exc.code, exc.remark)
    log.exception("handler for %s failed", _code_name(request.code), exc_info=exc)
    return request.make_response(ResponseCode.SYSTEM_ERROR, f"{type(exc).__name__}: {exc}")


class RemotingConnection(asyncio.Protocol):
    def __init__(
        self,
        dispatcher: Dispatcher | None,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        on_close: Callable[[RemotingConnection], None] | None = None,
        opaque_counter: itertools.count[int] | None = None,
        read_slice_bytes: int = DEFAULT_READ_SLICE_BYTES,
    ) -> None:
        self._dispatcher = dispatcher
        self._read_slice_bytes = read_slice_bytes
        # set while requests already read wait for the next loop iteration (_defer)
        self._reading_paused = False
        self._decoder = FrameDecoder(max_frame_size)
        self._on_close = on_close
        self._opaques = opaque_counter or itertools.count(1)
        self._pending: dict[int, asyncio.Future[RemotingCommand]] = {}
        # opaque -> (deadline on the loop clock, request code, timeout) of each request.
        self._deadlines: dict[int, tuple[float, int, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.transport: asyncio.Transport | None = None
        # Frames written during one loop iteration leave in one system call (see send()).
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self.remote_address = ""
        self.local_address = ""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Free-form slot for the owner (e.g. the client id a broker saw in a heartbeat).
        self.attributes: dict[str, Any] = {}

    # asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if peer:
            self.remote_address = f"{peer[0]}:{peer[1]}"
        if local:
            self.local_address = f"{local[0]}:{local[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        try:
            events = self._decoder.feed(data)
        except ProtocolError as exc:
            log.warning("closing connection from %s: %s", self.remote_address, exc)
            self.close()
            return
        if events:
            self._handle(events, 0)

    def _handle(self, events: list[RemotingCommand | MalformedCommand], start: int) -> bool:
        """Handles `events[start:]`, or a slice of them and the rest in the next loop
        iteration (see `_defer`); True if some were left for then."""
        dispatcher = self._dispatcher
        slice_bytes = self._read_slice_bytes
        taken = 0
        # Consecutive requests of one groupable code are handled together; anything else
        # closes the run first, so requests are still processed in arrival order.
        run: list[RemotingCommand] = []
        end = len(events)
        i = start
        while i < end:
            event = events[i]
            i += 1
            if run and (type(event) is MalformedCommand or event.is_response):
                # Keep arrival order: a malformed frame may close the connection, and
                # the run's replies must go out before that.
                dispatcher.dispatch_group(self, run)  # type: ignore[union-attr]
                run = []
            if isinstance(event, MalformedCommand):
                self._malformed(event)
                continue
            if event.is_response:
                future = self._pending.pop(event.opaque, None)
                if future is not None:
                    del self._deadlines[event.opaque]
                    if not future.done():
                        future.set_result(event)
                continue
            if dispatcher is None:
                self.reply(
                    event,
                    event.make_response(
                        ResponseCode.REQUEST_CODE_NOT_SUPPORTED,
                        f"request code {event.code} not supported",
                    ),
                )
                continue
            if run and run[0].code != event.code:
                dispatcher.dispatch_group(self, run)
                run = []
            if dispatcher.groupable(event.code):
                run.append(event)
            else:
                dispatcher.dispatch(self, event)
            taken += len(event.body)
            if slice_bytes and taken >= slice_bytes and i < end:
                break
        if run:
            dispatcher.dispatch_group(self, run)  # type: ignore[union-attr]
        if i < end:
            return self._defer(events, i)
        return False

    def _defer(self, events: list[RemotingCommand | MalformedCommand], start: int) -> bool:
        """Leaves `events[start:]` for the next loop iteration and reads nothing more
        until they are handled.

        The event loop reads a socket until it is drained, so one callback can bring a
        producer's whole window; handled at once, nothing the first requests started
        (the Raft driver proposing them, the appends to followers) runs until the last
        is decoded, and every stage then works on the whole window in turn while the
        other cores wait. A slice per iteration lets the first requests be replicated
        while the rest are decoded, like Netty's cap on messages read per channel per
        loop turn."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        self._loop.call_soon(self._handle_deferred, events, start)
        return True

    def _handle_deferred(
        self, events: list[RemotingCommand | MalformedCommand], start: int
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self._handle(events, start):
            self._reading_paused = False
            transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    RemotingSendError(f"connection to {self.remote_address} closed")
                )
        self._pending.clear()
        self._deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_close is not None:
            self._on_close(self)

    # --------------------------------------------------------------------------------
    def _malformed(self, event: MalformedCommand) -> None:
        if event.opaque is None:
            # Nothing to address a reply to: the peer does not speak our protocol.
            log.warning("closing connection from %s: %s", self.remote_address, event.reason)
            self.close()
            return
        log.warning("malformed request from %s: %s", self.remote_address, event.reason)
        if event.flag & FLAG_ONEWAY:
            return
        reply = RemotingCommand(
            code=ResponseCode.SYSTEM_ERROR,
            opaque=event.opaque,
            flag=1,
            remark=f"malformed request header: {event.reason}",
            serialize_type=event.serialize_type,
        )
        self.send(reply)

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, cmd: RemotingCommand) -> None:
        """Queue a frame; every frame queued in this loop iteration is written at once.

        A broker answering 500 pipelined sends, or a producer with 1000 in flight, would
        otherwise make one write() system call per frame.
        """
        if self.transport is None or self.transport.is_closing():
            raise RemotingSendError(f"connection to {self.remote_address} is closed")
        outgoing = self._outgoing
        outgoing.append(encode_command(cmd))
        if len(outgoing) >= _FLUSH_FRAMES:
            # Don't hold a long burst back: the peer works on the first frames while we
            # produce the rest, instead of both sides taking turns.
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        frames, self._outgoing = self._outgoing, []
        if frames and self.transport is not None and not self.transport.is_closing():
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def reply(self, request: RemotingCommand, response: RemotingCommand | None) -> None:
        if response is None or request.is_oneway:
            return
        response.opaque = request.opaque
        response.flag |= 1
        response.serialize_type = request.serialize_type
        try:
            self.send(response)
        except RemotingSendError:
            log.debug("reply to %s dropped: connection closed", self.remote_address)

    async def request(self, cmd: RemotingCommand, timeout: float) -> RemotingCommand:
        opaque = cmd.opaque = next(self._opaques)
        try:
            return await self.start_request(cmd, timeout, opaque)
        finally:
            # cancelled or failed to send: forget it (a reply already did)
            if self._pending.pop(opaque, None) is not None:
                del self._deadlines[opaque]

    def start_request(
        self, cmd: RemotingCommand, timeout: float, opaque: int | None = None
    ) -> asyncio.Future[RemotingCommand]:
        """Send a request; the future gets its reply, or RemotingTimeoutError after
        `timeout` seconds, or RemotingSendError if the connection closes first.

        `request()` without its coroutine frame, for callers that keep thousands in
        flight; if the caller stops waiting, the entry goes at the deadline."""
        if opaque is None:
            opaque = cmd.opaque = next(self._opaques)
        cmd.flag &= ~1
        loop = self._loop
        future: asyncio.Future[RemotingCommand] = loop.create_future()
        deadline = loop.time() + timeout
        self.send(cmd)  # raises while closed: nothing registered then
        self._pending[opaque] = future
        self._deadlines[opaque] = (deadline, cmd.code, timeout)
        # One timer per connection, not one per request (asyncio.wait_for's cost shows at
        # thousands of requests in flight); like Java's response-table scan, but armed
        # for the earliest deadline so timeouts stay precise.
        if self._timer is None or deadline < self._timer_at:
            self._arm_timer(deadline)
        return future

    def _arm_timer(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._expire_requests)

    def _expire_requests(self) -> None:
        self._timer = None
        now = self._loop.time()
        earliest: float | None = None
        for opaque, (deadline, code, timeout) in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[opaque]
                future = self._pending.pop(opaque, None)
                if future is not None and not future.done():
                    future.set_exception(
                        RemotingTimeoutError(
                            f"no reply to {_code_name(code)} from {self.remote_address} "
                            f"within {timeout:.3f}s"
                        )
                    )
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._arm_timer(earliest)

    def oneway(self, cmd: RemotingCommand) -> None:
        cmd.opaque = next(self._opaques)
        cmd.flag = (cmd.flag | FLAG_ONEWAY) & ~1
        self.send(cmd)

    def close(self) -> None:
        if self.transport is not None:
            self._flush()  # queued replies still go out; transport.close() sends them
            self.transport.close()
