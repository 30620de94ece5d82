"""Consumption RPCs. ReceiveMessage, AckMessage, ChangeInvisibleDuration and
ForwardMessageToDeadLetterQueue plug into the broker's POP support, which is being
built now: until `ConsumeActivity` gets a POP backend they answer NOT_IMPLEMENTED
(50100) with a readable message. The offset-style RPCs are not implemented by the
Java proxy either."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ledgermq.proxy import validation
from ledgermq.proxy.activities.context import CallContext
from ledgermq.proxy.protocol import service_pb2 as svc
from ledgermq.proxy.status import not_implemented

_POP = "consumption through the proxy (broker POP support is being built)"


class ConsumeActivity:
    async def receive_message(
        self, req: svc.ReceiveMessageRequest, ctx: CallContext
    ) -> AsyncIterator[svc.ReceiveMessageResponse]:
        validation.check_group(req.group.name)
        validation.check_topic(req.message_queue.topic.name)
        yield svc.ReceiveMessageResponse(status=not_implemented(f"ReceiveMessage: {_POP}"))

    async def ack_message(
        self, req: svc.AckMessageRequest, ctx: CallContext
    ) -> svc.AckMessageResponse:
        st = not_implemented(f"AckMessage: {_POP}")
        entries = [
            svc.AckMessageResultEntry(
                message_id=e.message_id, receipt_handle=e.receipt_handle, status=st
            )
            for e in req.entries
        ]
        return svc.AckMessageResponse(status=st, entries=entries)

    async def change_invisible_duration(
        self, req: svc.ChangeInvisibleDurationRequest, ctx: CallContext
    ) -> svc.ChangeInvisibleDurationResponse:
        return svc.ChangeInvisibleDurationResponse(
            status=not_implemented(f"ChangeInvisibleDuration: {_POP}")
        )

    async def forward_to_dead_letter_queue(
        self, req: svc.ForwardMessageToDeadLetterQueueRequest, ctx: CallContext
    ) -> svc.ForwardMessageToDeadLetterQueueResponse:
        return svc.ForwardMessageToDeadLetterQueueResponse(
            status=not_implemented(f"ForwardMessageToDeadLetterQueue: {_POP}")
        )
