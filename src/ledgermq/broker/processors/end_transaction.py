"""END_TRANSACTION (37): a producer commits or rolls back a half message.

Oneway from Java producers, so most answers go nowhere; refusals are logged. A state of
0 (TRANSACTION_NOT_TYPE, "unknown") changes nothing: the checker asks again later.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ledgermq.broker.transaction.service import EndTransaction
from ledgermq.common.message import SYSFLAG_TX_COMMIT, SYSFLAG_TX_ROLLBACK
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import ResponseCode
from ledgermq.remoting.connection import RemotingConnection
from ledgermq.remoting.errors import RemotingError
from ledgermq.remoting.headers import get_bool, req_int, req_str

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker

log = logging.getLogger(__name__)

TRANSACTION_NOT_TYPE = 0


def decode_end_transaction(cmd: RemotingCommand) -> EndTransaction:
    """The header of PROTOCOL.md 2.3; a missing mandatory field raises RemotingError."""
    return EndTransaction(
        producer_group=req_str(cmd, "producerGroup"),
        tran_state_table_offset=req_int(cmd, "tranStateTableOffset"),
        commit_log_offset=req_int(cmd, "commitLogOffset"),
        commit_or_rollback=req_int(cmd, "commitOrRollback"),
        msg_id=req_str(cmd, "msgId"),
        from_check=get_bool(cmd, "fromTransactionCheck"),
    )


class EndTransactionProcessor:
    def __init__(self, broker: Broker) -> None:
        self._b = broker

    def handle(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand | None:
        try:
            return self._handle(conn, cmd)
        except RemotingError as exc:
            # oneway: the producer never sees the reply, so say it here
            log.warning("END_TRANSACTION from %s refused: %s", conn.remote_address, exc.remark)
            raise

    def _handle(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand | None:
        b = self._b
        if b.is_slave:
            raise RemotingError(
                ResponseCode.SLAVE_NOT_AVAILABLE,
                "the broker is a slave, end transaction is forbidden",
            )
        req = decode_end_transaction(cmd)
        state = req.commit_or_rollback
        if state == TRANSACTION_NOT_TYPE:
            log.info(
                "producer %s (%s) reports transaction %s as unknown%s; remark: %s",
                req.producer_group,
                conn.remote_address,
                req.msg_id,
                " on check" if req.from_check else "",
                cmd.remark,
            )
            return None
        if state not in (SYSFLAG_TX_COMMIT, SYSFLAG_TX_ROLLBACK):
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"commitOrRollback {state} is not 0, 8 or 12"
            )
        outcome = b.transactions.end_transaction(req)
        if not outcome.ok:
            return cmd.make_response(ResponseCode.SYSTEM_ERROR, outcome.remark)
        return cmd.make_response(ResponseCode.SUCCESS)
