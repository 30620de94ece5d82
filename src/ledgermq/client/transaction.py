"""Transactional producer: half message, local transaction, END_TRANSACTION; and the
answer to the broker's CHECK_TRANSACTION_STATE (Java's TransactionMQProducer).

producer = TransactionProducer("pg", ns, check_listener=lambda msg: LocalTransactionState.COMMIT)
await producer.start()
result = await producer.send_message_in_transaction(Message("T", b"x"), run_local, arg)
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ledgermq.client.errors import MQClientError
from ledgermq.client.instance import ClientInstance
from ledgermq.client.message import Message, MessageExt, SendResult, SendStatus
from ledgermq.client.producer import Producer
from ledgermq.common.message import (
    PROPERTY_PGROUP,
    PROPERTY_TRAN_MSG,
    PROPERTY_TRANSACTION_ID,
    PROPERTY_UNIQ_KEY,
    SYSFLAG_COMPRESSED,
    SYSFLAG_TX_COMMIT,
    SYSFLAG_TX_PREPARED,
    SYSFLAG_TX_ROLLBACK,
    MessageDecodeError,
    decode_record,
    parse_offset_msg_id,
)
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode
from ledgermq.remoting.connection import RemotingConnection

log = logging.getLogger(__name__)


class LocalTransactionState(Enum):
    """What the local transaction decided (Java's names; UNKNOW is Java's spelling)."""

    COMMIT_MESSAGE = "COMMIT_MESSAGE"
    ROLLBACK_MESSAGE = "ROLLBACK_MESSAGE"
    UNKNOW = "UNKNOW"

    @property
    def commit_or_rollback(self) -> int:
        """The END_TRANSACTION commitOrRollback value (PROTOCOL.md 2.3)."""
        return _WIRE_STATE[self]


_WIRE_STATE = {
    LocalTransactionState.COMMIT_MESSAGE: SYSFLAG_TX_COMMIT,
    LocalTransactionState.ROLLBACK_MESSAGE: SYSFLAG_TX_ROLLBACK,
    LocalTransactionState.UNKNOW: 0,
}

StateOrAwaitable = LocalTransactionState | Awaitable[LocalTransactionState]
# Runs the local transaction for the half message just stored (msg, arg).
LocalExecutor = Callable[[Message, Any], StateOrAwaitable]
# Answers the broker's question about a half message left unsettled. A plain function
# runs on the event loop: keep it short or make it a coroutine.
CheckListener = Callable[[MessageExt], StateOrAwaitable]


@dataclass(slots=True)
class TransactionSendResult:
    send_result: SendResult
    local_state: LocalTransactionState

    @property
    def transaction_id(self) -> str:
        return self.send_result.transaction_id or self.send_result.msg_id


async def _decide(
    fn: Callable[..., StateOrAwaitable], *args: Any
) -> tuple[LocalTransactionState, str | None]:
    """Runs a user callback; an exception or a wrong answer counts as UNKNOW (the broker
    asks again later), with the reason as END_TRANSACTION's remark."""
    try:
        state = fn(*args)
        if inspect.isawaitable(state):
            state = await state
    except Exception as exc:  # noqa: BLE001 - the user's code; reported to the broker
        log.warning("transaction callback %r failed: %s", fn, exc)
        return LocalTransactionState.UNKNOW, f"executeLocalTransactionBranch exception: {exc!r}"
    if not isinstance(state, LocalTransactionState):
        log.warning("transaction callback %r returned %r, treated as UNKNOW", fn, state)
        return LocalTransactionState.UNKNOW, None
    return state, None


class TransactionProducer(Producer):
    def __init__(
        self,
        group: str,
        namesrv_addr: str | list[str],
        *,
        check_listener: CheckListener | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(group, namesrv_addr, **kwargs)
        self.check_listener = check_listener
        self._heartbeat_sent_to: set[str] = set()

    async def start(self) -> None:
        await super().start()
        install_check_handler(self.instance)

    # --- sending ----------------------------------------------------------------------
    def _prepare(self, msg: Message) -> tuple[bytes, int, dict[str, str], str]:
        body, sys_flag, props, uniq = super()._prepare(msg)
        if props.get(PROPERTY_TRAN_MSG) == "true":
            sys_flag |= SYSFLAG_TX_PREPARED
        return body, sys_flag, props, uniq

    async def send_message_in_transaction(
        self, msg: Message, local_executor: LocalExecutor, arg: Any = None
    ) -> TransactionSendResult:
        """Stores `msg` as a half message, runs `local_executor(msg, arg)`, then commits,
        rolls back or leaves it to the broker's check (UNKNOW)."""
        props = dict(msg.properties or {})
        props[PROPERTY_TRAN_MSG] = "true"
        props[PROPERTY_PGROUP] = self.group
        props.setdefault(PROPERTY_UNIQ_KEY, self.instance.uniq_ids.next_id())
        # transactional messages cannot be delayed (Java drops the level too)
        half = dataclasses.replace(msg, properties=props, delay_level=0)
        try:
            result = await self.send(half)
        except Exception as exc:
            raise MQClientError(f"send half message failed: {exc}") from exc
        remark: str | None = None
        if result.status is SendStatus.SEND_OK:
            if result.transaction_id:
                props[PROPERTY_TRANSACTION_ID] = result.transaction_id
            await self._make_checkable(result)
            state, remark = await _decide(local_executor, half, arg)
        else:
            state = LocalTransactionState.ROLLBACK_MESSAGE
        try:
            await self.end_transaction(result, state, remark)
        except Exception as exc:  # noqa: BLE001 - the broker's check settles it later
            log.warning("END_TRANSACTION for %s failed: %s", result.msg_id, exc)
        return TransactionSendResult(result, state)

    async def _make_checkable(self, result: SendResult) -> None:
        """The broker asks producers it knows from a heartbeat: send one to a broker the
        first time a half message goes there, instead of waiting for the periodic one."""
        addr = self.instance.find_broker_addr(result.message_queue.broker_name)
        if addr and addr not in self._heartbeat_sent_to:
            self._heartbeat_sent_to.add(addr)
            await self.instance.send_heartbeat()

    async def end_transaction(
        self, result: SendResult, state: LocalTransactionState, remark: str | None = None
    ) -> None:
        """END_TRANSACTION (oneway) for the half message `result` describes."""
        try:
            _, _, commit_log_offset = parse_offset_msg_id(result.offset_msg_id)
        except MessageDecodeError as exc:
            raise MQClientError(f"the send result has no usable offsetMsgId: {exc}") from exc
        mq = result.message_queue
        addr = await self.instance.broker_addr(mq.broker_name, mq.topic)
        ext = {
            "producerGroup": self.group,
            "tranStateTableOffset": str(result.queue_offset),
            "commitLogOffset": str(commit_log_offset),
            "commitOrRollback": str(state.commit_or_rollback),
            "fromTransactionCheck": "false",
            "msgId": result.msg_id,
            "transactionId": result.transaction_id or result.msg_id,
            "topic": mq.topic,
            "bname": mq.broker_name,
        }
        cmd = RemotingCommand(code=RequestCode.END_TRANSACTION, ext_fields=ext, remark=remark)
        await self.instance.remoting.invoke_oneway(addr, cmd)

    # --- the broker's check -------------------------------------------------------------
    async def answer_check(
        self, conn: RemotingConnection, request: RemotingCommand, msg: MessageExt
    ) -> None:
        """Asks the check listener and answers on the connection the question came on."""
        if self.check_listener is None:
            log.warning(
                "producer %s: broker asks about %s but has no check listener",
                self.group,
                msg.msg_id,
            )
            return
        state, remark = await _decide(self.check_listener, msg)
        ext = request.ext_fields
        answer = {
            "producerGroup": self.group,
            "tranStateTableOffset": ext.get("tranStateTableOffset", "0"),
            "commitLogOffset": ext.get("commitLogOffset", "0"),
            "commitOrRollback": str(state.commit_or_rollback),
            "fromTransactionCheck": "true",
            "msgId": msg.properties.get(PROPERTY_UNIQ_KEY) or msg.offset_msg_id,
        }
        for key in ("transactionId", "topic", "bname"):
            if ext.get(key):
                answer[key] = ext[key]
        if not conn.is_open:
            log.info("producer %s: connection closed before the check answer", self.group)
            return
        conn.oneway(
            RemotingCommand(code=RequestCode.END_TRANSACTION, ext_fields=answer, remark=remark)
        )


def install_check_handler(inst: ClientInstance) -> None:
    """Routes CHECK_TRANSACTION_STATE on `inst`'s connections to the transactional
    producer of the message's group (one handler serves every group of the instance)."""

    def on_check(conn: RemotingConnection, request: RemotingCommand) -> Awaitable[None] | None:
        try:
            msg, _ = decode_record(request.body or b"")
        except MessageDecodeError as exc:
            log.warning("CHECK_TRANSACTION_STATE with an undecodable body: %s", exc)
            return None
        if msg.sys_flag & SYSFLAG_COMPRESSED:
            try:
                msg.body = zlib.decompress(msg.body)
            except zlib.error:
                log.warning("checked message %s: bad compressed body", msg.offset_msg_id)
        group = msg.properties.get(PROPERTY_PGROUP, "")
        producer = inst.producers.get(group)
        if not isinstance(producer, TransactionProducer):
            log.warning("CHECK_TRANSACTION_STATE for group %r: no transactional producer", group)
            return None
        return producer.answer_check(conn, request, msg)

    inst.dispatcher.register(RequestCode.CHECK_TRANSACTION_STATE, on_check)
