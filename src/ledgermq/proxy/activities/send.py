"""SendMessage: validate, map to remoting properties, store through the broker."""

from __future__ import annotations

import time

from ledgermq.proxy.activities.context import CallContext
from ledgermq.proxy.backend import ClusterBackend
from ledgermq.proxy.message_codec import SendLimits, to_outgoing
from ledgermq.proxy.protocol import definition_pb2 as pb
from ledgermq.proxy.protocol import service_pb2 as svc
from ledgermq.proxy.route import accept_message_types
from ledgermq.proxy.status import Code, ProxyError, code_name, status


class SendActivity:
    def __init__(self, backend: ClusterBackend, limits: SendLimits) -> None:
        self._backend = backend
        self._limits = limits

    async def send_message(
        self, req: svc.SendMessageRequest, ctx: CallContext
    ) -> svc.SendMessageResponse:
        if not req.messages:
            raise ProxyError(Code.MESSAGE_CORRUPTED, "no message to send")
        topic = req.messages[0].topic.name
        entries: list[svc.SendResultEntry] = []
        for msg in req.messages:
            if msg.topic.name != topic:
                raise ProxyError(Code.MESSAGE_CORRUPTED, "messages of one request need one topic")
            try:
                entries.append(await self._send_one(msg, ctx))
            except ProxyError as exc:
                # One entry per message even on failure: clients index entries by message.
                message_id = msg.system_properties.message_id
                entries.append(svc.SendResultEntry(status=exc.status(), message_id=message_id))
        codes = {e.status.code for e in entries}
        if len(codes) == 1:
            code = codes.pop()
            overall = status(code, code_name(code))
        else:
            overall = status(Code.MULTIPLE_RESULTS, "MULTIPLE_RESULTS")
        return svc.SendMessageResponse(status=overall, entries=entries)

    async def _send_one(self, msg: pb.Message, ctx: CallContext) -> svc.SendResultEntry:
        out = to_outgoing(msg, self._limits, int(time.time() * 1000))
        accepted = accept_message_types(await self._backend.topic_attributes(out.topic))
        if out.message_type not in accepted:
            names = ", ".join(pb.MessageType.Name(t) for t in accepted)
            raise ProxyError(
                Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE,
                f"topic {out.topic!r} accepts {names}, not "
                f"{pb.MessageType.Name(out.message_type)} messages",
            )
        outcome = await self._backend.send(out, ctx.time_remaining)
        if outcome.code != Code.OK:
            return svc.SendResultEntry(
                status=status(outcome.code, f"stored but not durable: {code_name(outcome.code)}"),
                message_id=out.message_id,
            )
        return svc.SendResultEntry(
            status=status(Code.OK, "OK"),
            message_id=out.message_id,
            offset=outcome.queue_offset,
            transaction_id=outcome.transaction_id,
        )
