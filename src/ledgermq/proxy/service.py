"""The gRPC MessagingService: each RPC decodes the call context, runs its activity,
and turns any failure into the response's Status (clients need one on every reply)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from ledgermq.proxy.activities.client import ClientActivity
from ledgermq.proxy.activities.consume import ConsumeActivity
from ledgermq.proxy.activities.context import CallContext
from ledgermq.proxy.activities.route import AdvertisedEndpoint, RouteActivity
from ledgermq.proxy.activities.send import SendActivity
from ledgermq.proxy.activities.transaction import TransactionActivity
from ledgermq.proxy.backend import ClusterBackend
from ledgermq.proxy.config import ProxyConfig
from ledgermq.proxy.message_codec import SendLimits
from ledgermq.proxy.protocol import service_pb2 as svc
from ledgermq.proxy.protocol import service_pb2_grpc as svc_grpc
from ledgermq.proxy.renew import HandleRenewer, RenewPolicy
from ledgermq.proxy.sessions import ClientSessions
from ledgermq.proxy.status import Code, ProxyError, not_implemented, status

log = logging.getLogger(__name__)
R = TypeVar("R")


def call_context(context: grpc.aio.ServicerContext) -> CallContext:
    return CallContext.from_metadata(
        context.invocation_metadata(),
        time_remaining=context.time_remaining(),
    )


async def _answer(response_type: Callable[..., R], run: Callable[[], Awaitable[R]], what: str) -> R:
    try:
        return await run()
    except ProxyError as exc:
        return response_type(status=exc.status())
    except Exception as exc:
        log.exception("%s failed", what)
        return response_type(status=status(Code.INTERNAL_ERROR, f"{what} failed: {exc}"))


class MessagingService(svc_grpc.MessagingServiceServicer):
    def __init__(
        self,
        config: ProxyConfig,
        backend: ClusterBackend,
        advertise: AdvertisedEndpoint,
        sessions: ClientSessions | None = None,
    ) -> None:
        self.sessions = sessions or ClientSessions()
        limits = SendLimits(
            max_body_size=config.max_message_size,
            user_property_max_num=config.user_property_max_num,
            max_user_property_size=config.max_user_property_size,
            max_message_group_size=config.max_message_group_size,
            max_delay_ms=config.max_delay_time_mills,
            delay_levels_ms=config.delay_levels_ms(),
        )
        self.route = RouteActivity(backend, advertise)
        self.send = SendActivity(backend, limits)
        self.transaction = TransactionActivity(backend, self.sessions)
        sessions = self.sessions
        self.renewer = HandleRenewer(
            backend.change_invisible,
            RenewPolicy(
                slice_ms=config.default_invisible_time_mills,
                ahead_ms=config.renew_ahead_time_millis,
                max_ms=config.renew_max_time_millis,
                period_s=config.renew_schedule_period_millis / 1000,
            ),
            client_online=lambda cid: sessions.is_online(cid, config.channel_expired_in_seconds),
        )
        self.client = ClientActivity(backend, self.sessions, config, self.renewer)
        self.consume = ConsumeActivity(backend, config, self.renewer, self.sessions)

    # routing
    async def QueryRoute(self, request: Any, context: Any) -> svc.QueryRouteResponse:
        ctx = call_context(context)
        return await _answer(
            svc.QueryRouteResponse, lambda: self.route.query_route(request, ctx), "QueryRoute"
        )

    async def QueryAssignment(self, request: Any, context: Any) -> svc.QueryAssignmentResponse:
        ctx = call_context(context)
        return await _answer(
            svc.QueryAssignmentResponse,
            lambda: self.route.query_assignment(request, ctx),
            "QueryAssignment",
        )

    # producing
    async def SendMessage(self, request: Any, context: Any) -> svc.SendMessageResponse:
        ctx = call_context(context)
        return await _answer(
            svc.SendMessageResponse, lambda: self.send.send_message(request, ctx), "SendMessage"
        )

    async def EndTransaction(self, request: Any, context: Any) -> svc.EndTransactionResponse:
        ctx = call_context(context)
        return await _answer(
            svc.EndTransactionResponse,
            lambda: self.transaction.end_transaction(request, ctx),
            "EndTransaction",
        )

    async def RecallMessage(self, request: Any, context: Any) -> svc.RecallMessageResponse:
        return svc.RecallMessageResponse(
            status=not_implemented("RecallMessage (the brokers have no timer wheel)")
        )

    # client session
    async def Heartbeat(self, request: Any, context: Any) -> svc.HeartbeatResponse:
        ctx = call_context(context)
        return await _answer(
            svc.HeartbeatResponse, lambda: self.client.heartbeat(request, ctx), "Heartbeat"
        )

    async def NotifyClientTermination(
        self, request: Any, context: Any
    ) -> svc.NotifyClientTerminationResponse:
        ctx = call_context(context)
        return await _answer(
            svc.NotifyClientTerminationResponse,
            lambda: self.client.notify_client_termination(request, ctx),
            "NotifyClientTermination",
        )

    async def Telemetry(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[svc.TelemetryCommand]:
        ctx = call_context(context)
        async for command in self.client.telemetry(request_iterator, ctx):
            yield command

    # consuming
    async def ReceiveMessage(
        self, request: Any, context: Any
    ) -> AsyncIterator[svc.ReceiveMessageResponse]:
        ctx = call_context(context)
        try:
            async for response in self.consume.receive_message(request, ctx):
                yield response
        except ProxyError as exc:
            yield svc.ReceiveMessageResponse(status=exc.status())

    async def AckMessage(self, request: Any, context: Any) -> svc.AckMessageResponse:
        ctx = call_context(context)
        return await _answer(
            svc.AckMessageResponse, lambda: self.consume.ack_message(request, ctx), "AckMessage"
        )

    async def ChangeInvisibleDuration(
        self, request: Any, context: Any
    ) -> svc.ChangeInvisibleDurationResponse:
        ctx = call_context(context)
        return await _answer(
            svc.ChangeInvisibleDurationResponse,
            lambda: self.consume.change_invisible_duration(request, ctx),
            "ChangeInvisibleDuration",
        )

    async def ForwardMessageToDeadLetterQueue(
        self, request: Any, context: Any
    ) -> svc.ForwardMessageToDeadLetterQueueResponse:
        ctx = call_context(context)
        return await _answer(
            svc.ForwardMessageToDeadLetterQueueResponse,
            lambda: self.consume.forward_to_dead_letter_queue(request, ctx),
            "ForwardMessageToDeadLetterQueue",
        )

    # not offered by the Java proxy either
    async def PullMessage(
        self, request: Any, context: Any
    ) -> AsyncIterator[svc.PullMessageResponse]:
        yield svc.PullMessageResponse(status=not_implemented("PullMessage"))

    async def UpdateOffset(self, request: Any, context: Any) -> svc.UpdateOffsetResponse:
        return svc.UpdateOffsetResponse(status=not_implemented("UpdateOffset"))

    async def GetOffset(self, request: Any, context: Any) -> svc.GetOffsetResponse:
        return svc.GetOffsetResponse(status=not_implemented("GetOffset"))

    async def QueryOffset(self, request: Any, context: Any) -> svc.QueryOffsetResponse:
        return svc.QueryOffsetResponse(status=not_implemented("QueryOffset"))

    async def SyncLiteSubscription(
        self, request: Any, context: Any
    ) -> svc.SyncLiteSubscriptionResponse:
        return svc.SyncLiteSubscriptionResponse(status=not_implemented("SyncLiteSubscription"))
