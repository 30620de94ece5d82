"""EndTransaction (forwarded as END_TRANSACTION 37) and the broker's transaction
checks (pushed to a producer as recover_orphaned_transaction_command)."""

from __future__ import annotations

import logging

from ledgermq.common.message import MessageExt
from ledgermq.proxy import validation
from ledgermq.proxy.activities.context import CallContext
from ledgermq.proxy.backend import ClusterBackend
from ledgermq.proxy.message_codec import to_v2_message
from ledgermq.proxy.protocol import definition_pb2 as pb
from ledgermq.proxy.protocol import service_pb2 as svc
from ledgermq.proxy.sessions import ClientSessions
from ledgermq.proxy.status import Code, ProxyError, ok
from ledgermq.proxy.txid import TransactionIdError, TransactionRef

log = logging.getLogger(__name__)


class TransactionActivity:
    def __init__(self, backend: ClusterBackend, sessions: ClientSessions) -> None:
        self._backend = backend
        self._sessions = sessions
        backend.on_transaction_check = self.on_transaction_check

    async def end_transaction(
        self, req: svc.EndTransactionRequest, ctx: CallContext
    ) -> svc.EndTransactionResponse:
        topic = validation.check_topic(req.topic.name)
        if req.resolution not in (pb.COMMIT, pb.ROLLBACK):
            raise ProxyError(Code.BAD_REQUEST, "resolution must be COMMIT or ROLLBACK")
        try:
            ref = TransactionRef.decode(req.transaction_id)
        except TransactionIdError as exc:
            raise ProxyError(Code.INVALID_TRANSACTION_ID, str(exc)) from exc
        if not req.message_id:
            raise ProxyError(Code.ILLEGAL_MESSAGE_ID, "message_id is empty")
        await self._backend.end_transaction(
            ref,
            topic=topic,
            message_id=req.message_id,
            commit=req.resolution == pb.COMMIT,
            from_check=req.source == pb.SOURCE_SERVER_CHECK,
        )
        return svc.EndTransactionResponse(status=ok())

    def on_transaction_check(self, topic: str, msg: MessageExt, ref: TransactionRef) -> None:
        """A broker asks about an open half message: ask one producer of the topic."""
        command = svc.TelemetryCommand(
            recover_orphaned_transaction_command=svc.RecoverOrphanedTransactionCommand(
                message=to_v2_message(msg, topic=topic), transaction_id=ref.encode()
            )
        )
        for session in self._sessions.publishers_of(topic):
            if self._sessions.push(session, command):
                return
        log.info("no producer of %s is connected to answer a transaction check", topic)
