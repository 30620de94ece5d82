"""Heartbeat, NotifyClientTermination and the Telemetry stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from ledgermq.proxy import validation
from ledgermq.proxy.activities.context import CallContext
from ledgermq.proxy.backend import ClusterBackend
from ledgermq.proxy.config import ProxyConfig
from ledgermq.proxy.protocol import definition_pb2 as pb
from ledgermq.proxy.protocol import service_pb2 as svc
from ledgermq.proxy.renew import HandleRenewer
from ledgermq.proxy.sessions import ClientSessions
from ledgermq.proxy.settings import settings_reply
from ledgermq.proxy.status import Code, ok, status

log = logging.getLogger(__name__)


class ClientActivity:
    def __init__(
        self,
        backend: ClusterBackend,
        sessions: ClientSessions,
        config: ProxyConfig,
        renewer: HandleRenewer | None = None,
    ) -> None:
        self._backend = backend
        self._sessions = sessions
        self._config = config
        self._renewer = renewer

    async def heartbeat(self, req: svc.HeartbeatRequest, ctx: CallContext) -> svc.HeartbeatResponse:
        if req.HasField("group") and req.group.name:
            validation.check_group(req.group.name)
        if ctx.client_id:
            session = self._sessions.touch(ctx.client_id, ctx.language)
            if req.client_type:
                session.client_type = req.client_type
            if req.HasField("group") and req.group.name:
                session.group = req.group.name
        return svc.HeartbeatResponse(status=ok())

    async def notify_client_termination(
        self, req: svc.NotifyClientTerminationRequest, ctx: CallContext
    ) -> svc.NotifyClientTerminationResponse:
        if ctx.client_id:
            self._sessions.terminate(ctx.client_id)
            if self._renewer is not None:
                # its unacked messages become visible again when their time runs out
                self._renewer.drop_client(ctx.client_id)
        return svc.NotifyClientTerminationResponse(status=ok())

    async def telemetry(
        self, requests: AsyncIterator[svc.TelemetryCommand], ctx: CallContext
    ) -> AsyncIterator[svc.TelemetryCommand]:
        """Answers each Settings with the completed Settings and stays open, so the
        server can push commands (transaction checks) until the client leaves."""
        if not ctx.client_id:
            yield svc.TelemetryCommand(
                status=status(Code.CLIENT_ID_REQUIRED, "x-mq-client-id header is missing")
            )
            return
        session, outbox = self._sessions.open_stream(ctx.client_id, ctx.language)
        reader = asyncio.create_task(self._read(requests, session, outbox))
        try:
            while True:
                getter = asyncio.ensure_future(outbox.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                # The client half-closed: flush what is queued, then end our side too.
                while not outbox.empty():
                    yield outbox.get_nowait()
                return
        finally:
            reader.cancel()
            self._sessions.close_stream(session, outbox)

    async def _orderly(self, settings: pb.Settings) -> bool:
        """subscription.fifo for a consumer: its group's consumeMessageOrderly, which
        makes the Python/Java push consumers consume each message group in order."""
        if settings.WhichOneof("pub_sub") != "subscription":
            return False
        sub = settings.subscription
        group = sub.group.name
        for entry in sub.subscriptions:
            if group and entry.topic.name:
                return await self._backend.is_orderly_group(group, entry.topic.name)
        return False

    async def _read(self, requests, session, outbox: asyncio.Queue) -> None:
        async for command in requests:
            which = command.WhichOneof("command")
            if which == "settings":
                self._sessions.apply_settings(session, command.settings)
                if session.client_type == pb.PRODUCER and session.publishing_topics:
                    self._backend.publish_topics(session.publishing_topics)
                fifo = await self._orderly(command.settings)
                reply = settings_reply(command.settings, self._config, fifo=fifo)
                outbox.put_nowait(svc.TelemetryCommand(status=ok(), settings=reply))
            elif which in ("thread_stack_trace", "verify_message_result"):
                log.info("client %s answered %s", session.client_id, which)
            else:
                log.debug("client %s sent telemetry %s", session.client_id, which)
