"""The proxy's remoting side: routes, topic attributes, sends and transaction ends.

It is one `ledgermq.client.ClientInstance` (NameServer failover, route cache,
connection pool, heartbeats) plus small caches. The gRPC activities only call this
class, so a broker-local backend could replace it without touching them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledgermq.client.errors import MQClientError
from ledgermq.client.instance import ClientInstance
from ledgermq.client.producer import build_send_header
from ledgermq.client.route import TopicRoute
from ledgermq.common.message import (
    PROPERTY_POP_CK,
    SYSFLAG_COMPRESSED,
    SYSFLAG_TX_COMMIT,
    SYSFLAG_TX_ROLLBACK,
    MessageExt,
    MessageQueue,
    decode_records,
    parse_offset_msg_id,
)
from ledgermq.common.pop_handle import HandleError, parse_order_count_info, real_topic
from ledgermq.proxy.config import ProxyConfig
from ledgermq.proxy.message_codec import OutgoingMessage, queue_for_group
from ledgermq.proxy.receipt import ReceiptHandle, ReceiptHandleError
from ledgermq.proxy.status import Code, ProxyError, broker_error
from ledgermq.proxy.txid import TransactionRef
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.connection import RemotingConnection

log = logging.getLogger(__name__)

# END_TRANSACTION commitOrRollback values (PROTOCOL.md 2.3): the sysflag bits.
COMMIT = int(SYSFLAG_TX_COMMIT)
ROLLBACK = int(SYSFLAG_TX_ROLLBACK)
# Stored-but-not-durable answers: the Java proxy reports them per entry.
_NOT_DURABLE = {
    ResponseCode.FLUSH_DISK_TIMEOUT: Code.MASTER_PERSISTENCE_TIMEOUT,
    ResponseCode.FLUSH_SLAVE_TIMEOUT: Code.SLAVE_PERSISTENCE_TIMEOUT,
    ResponseCode.SLAVE_NOT_AVAILABLE: Code.HA_NOT_AVAILABLE,
}


@dataclass(slots=True)
class SendOutcome:
    code: int  # a v2 code: OK or a "stored but not durable" code
    queue: MessageQueue
    queue_offset: int
    offset_msg_id: str
    transaction_id: str = ""


@dataclass(slots=True)
class _Cached:
    value: object
    at: float


@dataclass(slots=True)
class _ProducerGroup:
    """ClientInstance producer hooks: heartbeats name the group so the broker knows
    where to send CHECK_TRANSACTION_STATE for half messages of that topic."""

    group: str
    topics: set[str] = field(default_factory=set)

    def published_topics(self) -> set[str]:
        return set(self.topics)


TransactionCheckHandler = Callable[[str, MessageExt, TransactionRef], None]

# POP answers meaning "nothing to hand out" (the long poll ran out).
_POP_EMPTY = {ResponseCode.PULL_NOT_FOUND, ResponseCode.POLLING_TIMEOUT}
# Broker answers to ACK / CHANGE_INVISIBLETIME that mean the handle is unusable.
_STALE_HANDLE = {
    ResponseCode.INVALID_PARAMETER,
    ResponseCode.NO_MESSAGE,
    ResponseCode.MESSAGE_ILLEGAL,
}
_POP_CODES = {
    ResponseCode.POLLING_FULL: Code.TOO_MANY_REQUESTS,
    ResponseCode.SUBSCRIPTION_PARSE_FAILED: Code.ILLEGAL_FILTER_EXPRESSION,
}
# ConsumeInitMode: a group without progress starts at the queue's first message.
INIT_MODE_MIN = 0
# CONSUMER_SEND_MSG_BACK delayLevel that sends the message straight to %DLQ%<group>.
DLQ_DELAY_LEVEL = -1


@dataclass(slots=True)
class PoppedMessage:
    msg: MessageExt
    handle: ReceiptHandle

    @property
    def delivery_attempt(self) -> int:
        return self.msg.reconsume_times + 1


@dataclass(frozen=True, slots=True)
class PopRequest:
    broker_name: str  # "" = any broker of the topic
    topic: str
    group: str
    batch_size: int
    invisible_ms: int
    poll_ms: int
    order: bool = False
    attempt_id: str = ""
    expression_type: str = "TAG"
    expression: str = "*"


class ClusterBackend:
    def __init__(self, config: ProxyConfig, *, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
        self._queues: dict[str, tuple[TopicRoute, list[MessageQueue]]] = {}  # _publish_queues
        self.instance = ClientInstance(
            config.namesrv_addr,
            instance_name=f"proxy-{config.proxy_name}",
            request_timeout=config.request_timeout_millis / 1000,
            route_interval=30.0,
            heartbeat_interval=10.0,
        )
        self.instance.dispatcher.register(
            RequestCode.CHECK_TRANSACTION_STATE, self._on_check_transaction
        )
        self._routes: dict[str, _Cached] = {}
        self._attributes: dict[str, _Cached] = {}
        self._round_robin: dict[str, int] = {}
        self._producer_groups: dict[str, _ProducerGroup] = {}
        self.on_transaction_check: TransactionCheckHandler | None = None
        self._groups: dict[str, _Cached] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self.instance.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.instance.shutdown(force=True)

    @property
    def timeout(self) -> float:
        return self.config.request_timeout_millis / 1000

    # routes and topic attributes -------------------------------------------------------
    def _fresh(self, cached: _Cached | None) -> bool:
        return cached is not None and self._clock() - cached.at < self.config.route_cache_seconds

    async def route(self, topic: str) -> TopicRoute:
        cached = self._routes.get(topic)
        if self._fresh(cached):
            return cached.value  # type: ignore[union-attr,return-value]
        try:
            route = await self.instance.update_route(topic)
        except MQClientError as exc:
            raise ProxyError(Code.INTERNAL_SERVER_ERROR, f"NameServer unreachable: {exc}") from exc
        if route is None:
            self._routes.pop(topic, None)
            raise ProxyError(Code.TOPIC_NOT_FOUND, f"topic {topic!r} does not exist")
        self._routes[topic] = _Cached(route, self._clock())
        return route

    async def topic_attributes(self, topic: str) -> dict[str, str]:
        """The topic's attributes (e.g. message.type) from one of its masters; {} when no
        master answers, so routing still works while a broker is down."""
        cached = self._attributes.get(topic)
        if self._fresh(cached):
            return cached.value  # type: ignore[union-attr,return-value]
        route = await self.route(topic)
        attributes: dict[str, str] = {}
        for bd in sorted(route.broker_datas, key=lambda b: b.broker_name):
            addr = bd.master_addr()
            if addr is None:
                continue
            cmd = RemotingCommand(code=RequestCode.GET_TOPIC_CONFIG, ext_fields={"topic": topic})
            try:
                resp = await self.instance.invoke(addr, cmd, self.timeout)
            except MQClientError as exc:
                log.debug("topic config of %s from %s failed: %s", topic, addr, exc)
                continue
            if resp.code != ResponseCode.SUCCESS or not resp.body:
                continue
            try:
                body = json.loads(resp.body)
            except ValueError:
                continue
            attributes = {str(k): str(v) for k, v in (body.get("attributes") or {}).items()}
            break
        self._attributes[topic] = _Cached(attributes, self._clock())
        return attributes

    # sending ---------------------------------------------------------------------------
    def _pick_queue(
        self, topic: str, queues: list[MessageQueue], group: str | None
    ) -> MessageQueue:
        if group is not None:
            return queues[queue_for_group(group, len(queues))]
        index = (self._round_robin.get(topic, -1) + 1) % len(queues)
        self._round_robin[topic] = index
        return queues[index]

    def _publish_queues(self, topic: str, route: TopicRoute) -> list[MessageQueue]:
        # publish_queues sorts and filters the route on every call: one list per route
        cached = self._queues.get(topic)
        if cached is not None and cached[0] is route:
            return cached[1]
        queues = route.publish_queues(topic)
        self._queues[topic] = (route, queues)
        return queues

    async def send(self, out: OutgoingMessage, timeout: float | None = None) -> SendOutcome:
        route = await self.route(out.topic)
        queues = self._publish_queues(out.topic, route)
        if not queues:
            raise ProxyError(Code.FORBIDDEN, f"topic {out.topic!r} has no writable queue")
        mq = self._pick_queue(out.topic, queues, out.message_group)
        addr = self.instance.find_broker_addr(mq.broker_name)
        if addr is None:
            raise ProxyError(Code.INTERNAL_SERVER_ERROR, f"broker {mq.broker_name} has no master")
        header = build_send_header(
            # The Java proxy sends with the topic as producer group (see txid.py).
            group=out.topic,
            mq=mq,
            sys_flag=out.sys_flag,
            born_timestamp=out.born_timestamp_ms,
            flag=0,
            properties=out.properties,
        )
        cmd = RemotingCommand(code=RequestCode.SEND_MESSAGE_V2, ext_fields=header, body=out.body)
        try:
            resp = await self.instance.invoke(addr, cmd, timeout or self.timeout)
        except MQClientError as exc:
            raise ProxyError(Code.PROXY_TIMEOUT, f"send to broker {addr} failed: {exc}") from exc
        if resp.code != ResponseCode.SUCCESS and resp.code not in _NOT_DURABLE:
            raise broker_error(resp.code, resp.remark, f"{mq.broker_name}({addr})")
        ext = resp.ext_fields
        queue = MessageQueue(out.topic, mq.broker_name, int(ext.get("queueId", mq.queue_id)))
        queue_offset = int(ext.get("queueOffset", "-1"))
        offset_msg_id = ext.get("msgId", "")
        outcome = SendOutcome(
            code=_NOT_DURABLE.get(resp.code, Code.OK),  # type: ignore[call-overload]
            queue=queue,
            queue_offset=queue_offset,
            offset_msg_id=offset_msg_id,
        )
        if out.is_transaction:
            outcome.transaction_id = TransactionRef(
                broker_name=mq.broker_name,
                commit_log_offset=_commit_log_offset(offset_msg_id),
                tran_state_table_offset=queue_offset,
                broker_transaction_id=ext.get("transactionId") or out.message_id,
            ).encode()
        return outcome

    # transactions ------------------------------------------------------------------------
    async def end_transaction(
        self,
        ref: TransactionRef,
        *,
        topic: str,
        message_id: str,
        commit: bool,
        from_check: bool,
    ) -> None:
        """END_TRANSACTION (37), oneway as producers send it; the broker answers nothing."""
        try:
            addr = await self.instance.broker_addr(ref.broker_name, topic)
        except MQClientError as exc:
            raise ProxyError(Code.INTERNAL_SERVER_ERROR, str(exc)) from exc
        ext = {
            "producerGroup": topic,
            "tranStateTableOffset": str(ref.tran_state_table_offset),
            "commitLogOffset": str(ref.commit_log_offset),
            "commitOrRollback": str(COMMIT if commit else ROLLBACK),
            "msgId": message_id,
            "transactionId": ref.broker_transaction_id,
            "fromTransactionCheck": "true" if from_check else "false",
            "topic": topic,
        }
        cmd = RemotingCommand(code=RequestCode.END_TRANSACTION, ext_fields=ext)
        try:
            await self.instance.remoting.invoke_oneway(addr, cmd)
        except Exception as exc:
            raise ProxyError(
                Code.INTERNAL_SERVER_ERROR, f"END_TRANSACTION to {addr} failed: {exc}"
            ) from exc

    def publish_topics(self, topics: set[str]) -> None:
        """Registers each topic as a producer group (the Java proxy's convention) so
        that brokers route transaction checks for it to this proxy."""
        added = False
        for topic in topics:
            if topic not in self._producer_groups:
                hooks = _ProducerGroup(topic, {topic})
                self._producer_groups[topic] = hooks
                self.instance.register_producer(hooks)
                added = True
        if added:
            # heartbeat now: a check for a half message sent before the next periodic
            # heartbeat must already find this proxy's connection
            self._spawn(self.instance.send_heartbeat())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # consumption (POP) -------------------------------------------------------------------
    async def _readable_broker(self, topic: str, wanted: str) -> tuple[str, str]:
        """(broker name, master address) for a pop: the broker the client named if it
        serves the topic, else the next readable one."""
        route = await self.route(topic)
        names = sorted({mq.broker_name for mq in route.subscribe_queues(topic)})
        names = [n for n in names if self.instance.find_broker_addr(n) is not None] or names
        if not names:
            raise ProxyError(Code.FORBIDDEN, f"topic {topic!r} has no readable queue")
        if wanted not in names:
            index = (self._round_robin.get("\0pop", -1) + 1) % len(names)
            self._round_robin["\0pop"] = index
            wanted = names[index]
        return wanted, await self._master_of(wanted, topic)

    async def _master_of(self, broker_name: str, topic: str) -> str:
        try:
            return await self.instance.broker_addr(broker_name, topic)
        except MQClientError as exc:
            raise ProxyError(
                Code.INTERNAL_SERVER_ERROR, f"broker {broker_name} has no master: {exc}"
            ) from exc

    async def _invoke(self, addr: str, cmd: RemotingCommand, timeout: float) -> RemotingCommand:
        try:
            return await self.instance.invoke(addr, cmd, timeout)
        except MQClientError as exc:
            raise ProxyError(Code.PROXY_TIMEOUT, f"broker {addr} did not answer: {exc}") from exc

    async def pop(self, req: PopRequest) -> list[PoppedMessage]:
        """POP_MESSAGE on queue -1 (every queue of the broker, plus the group's retry
        topic), as the Java proxy does whatever queue the client named."""
        broker_name, addr = await self._readable_broker(req.topic, req.broker_name)
        ext = {
            "consumerGroup": req.group,
            "topic": req.topic,
            "queueId": "-1",
            "maxMsgNums": str(req.batch_size),
            "invisibleTime": str(req.invisible_ms),
            "pollTime": str(req.poll_ms),
            "bornTime": str(int(time.time() * 1000)),
            "initMode": str(INIT_MODE_MIN),
            "expType": req.expression_type,
            "exp": req.expression,
            "order": "true" if req.order else "false",
        }
        if req.attempt_id:
            ext["attemptId"] = req.attempt_id
        cmd = RemotingCommand(code=RequestCode.POP_MESSAGE, ext_fields=ext)
        resp = await self._invoke(addr, cmd, req.poll_ms / 1000 + self.timeout)
        if resp.code in _POP_EMPTY:
            return []
        if resp.code != ResponseCode.SUCCESS:
            where = f"{broker_name}({addr})"
            if resp.code in _POP_CODES:
                raise ProxyError(_POP_CODES[resp.code], f"broker {where}: {resp.remark}")
            raise broker_error(resp.code, resp.remark, where)
        return _popped(resp)

    async def ack(self, group: str, topic: str, handle: ReceiptHandle) -> None:
        cmd = RemotingCommand(
            code=RequestCode.ACK_MESSAGE, ext_fields=_handle_ext(group, topic, handle)
        )
        await self._handle_call(handle, topic, cmd)

    async def change_invisible(
        self, group: str, topic: str, handle: ReceiptHandle, invisible_ms: int
    ) -> ReceiptHandle:
        """CHANGE_MESSAGE_INVISIBLETIME; the returned handle replaces the old one."""
        ext = {**_handle_ext(group, topic, handle), "invisibleTime": str(invisible_ms)}
        cmd = RemotingCommand(code=RequestCode.CHANGE_MESSAGE_INVISIBLETIME, ext_fields=ext)
        resp = await self._handle_call(handle, topic, cmd)
        try:
            return handle.renewed(
                int(resp.ext_fields["popTime"]),
                int(resp.ext_fields["invisibleTime"]),
                int(resp.ext_fields["reviveQid"]),
            )
        except (KeyError, ValueError) as exc:
            raise ProxyError(
                Code.INTERNAL_SERVER_ERROR, f"broker answered a change without new handle: {exc}"
            ) from None

    async def forward_to_dlq(
        self, group: str, topic: str, handle: ReceiptHandle, message_id: str
    ) -> None:
        """CONSUMER_SEND_MSG_BACK with delayLevel -1 puts the message in %DLQ%<group>;
        then the popped copy is acked (as the Java proxy does)."""
        if handle.commit_log_offset < 0:
            raise ProxyError(
                Code.INVALID_RECEIPT_HANDLE, "the receipt handle carries no commit log offset"
            )
        try:
            origin_topic = real_topic(topic, group, handle.info.topic_type)
        except HandleError as exc:
            raise ProxyError(Code.INVALID_RECEIPT_HANDLE, str(exc)) from None
        ext = {
            "offset": str(handle.commit_log_offset),
            "group": group,
            "delayLevel": str(DLQ_DELAY_LEVEL),
            "originMsgId": message_id,
            "originTopic": origin_topic,
            "maxReconsumeTimes": "0",
        }
        cmd = RemotingCommand(code=RequestCode.CONSUMER_SEND_MSG_BACK, ext_fields=ext)
        await self._handle_call(handle, topic, cmd)
        await self.ack(group, topic, handle)

    async def _handle_call(
        self, handle: ReceiptHandle, topic: str, cmd: RemotingCommand
    ) -> RemotingCommand:
        addr = await self._master_of(handle.broker_name, topic)
        resp = await self._invoke(addr, cmd, self.timeout)
        if resp.code == ResponseCode.SUCCESS:
            return resp
        where = f"{handle.broker_name}({addr})"
        if resp.code in _STALE_HANDLE:
            raise ProxyError(
                Code.INVALID_RECEIPT_HANDLE,
                f"broker {where} refused the receipt handle: {resp.remark}",
            )
        raise broker_error(resp.code, resp.remark, where)

    async def group_config(self, group: str, topic: str) -> dict[str, Any] | None:
        """The subscription group's config from a master of `topic` (cached), or None
        if no broker knows the group (the broker then creates it with defaults)."""
        key = f"{group}\0{topic}"
        cached = self._groups.get(key)
        if self._fresh(cached):
            return cached.value  # type: ignore[union-attr,return-value]
        config: dict[str, Any] | None = None
        route = await self.route(topic)
        for bd in sorted(route.broker_datas, key=lambda b: b.broker_name):
            addr = bd.master_addr()
            if addr is None:
                continue
            cmd = RemotingCommand(code=RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG)
            try:
                resp = await self.instance.invoke(addr, cmd, self.timeout)
                table = json.loads(resp.body or b"{}").get("subscriptionGroupTable") or {}
            except (MQClientError, ValueError, AttributeError) as exc:
                log.debug("subscription groups from %s failed: %s", addr, exc)
                continue
            if resp.code == ResponseCode.SUCCESS:
                config = table.get(group)
                break
        self._groups[key] = _Cached(config, self._clock())
        return config

    async def is_orderly_group(self, group: str, topic: str) -> bool:
        """consumeMessageOrderly of the group: its consumers pop in order (FIFO)."""
        try:
            config = await self.group_config(group, topic)
        except ProxyError:
            return False
        return bool(config and str(config.get("consumeMessageOrderly")).lower() == "true")

    def _on_check_transaction(self, conn: RemotingConnection, cmd: RemotingCommand) -> None:
        ext = cmd.ext_fields
        try:
            msgs = decode_records(cmd.body or b"")
        except Exception:
            log.warning("undecodable CHECK_TRANSACTION_STATE body from %s", conn)
            return None
        if not msgs or self.on_transaction_check is None:
            return None
        msg = msgs[0]
        broker_name = ext.get("bname") or ext.get("brokerName") or self._broker_of(conn)
        ref = TransactionRef(
            broker_name=broker_name,
            commit_log_offset=int(ext.get("commitLogOffset", msg.commit_log_offset)),
            tran_state_table_offset=int(ext.get("tranStateTableOffset", msg.queue_offset)),
            broker_transaction_id=ext.get("transactionId") or msg.properties.get("UNIQ_KEY", ""),
        )
        topic = msg.properties.get("REAL_TOPIC", msg.topic)
        self.on_transaction_check(topic, msg, ref)
        return None

    def _broker_of(self, conn: RemotingConnection) -> str:
        peer = getattr(conn, "peer", None) or getattr(conn, "address", None)
        for name, addrs in self.instance.broker_addrs.items():
            if peer in addrs.values():
                return name
        return ""


def _commit_log_offset(offset_msg_id: str) -> int:
    try:
        return parse_offset_msg_id(offset_msg_id)[2]
    except Exception:
        return -1


def _handle_ext(group: str, topic: str, handle: ReceiptHandle) -> dict[str, str]:
    return {
        "consumerGroup": group,
        "topic": topic,
        "queueId": str(handle.queue_id),
        "offset": str(handle.queue_offset),
        "extraInfo": handle.info.format(),
    }


def _popped(resp: RemotingCommand) -> list[PoppedMessage]:
    """The messages of a POP answer with their receipt handles; an orderly pop's
    orderCountInfo gives how often each was handed out before."""
    try:
        counts = parse_order_count_info(resp.ext_fields.get("orderCountInfo"))
    except HandleError:
        counts = {}
    out: list[PoppedMessage] = []
    for msg in decode_records(resp.body or b""):
        if msg.sys_flag & SYSFLAG_COMPRESSED:
            try:
                msg.body = zlib.decompress(msg.body)
                msg.sys_flag &= ~SYSFLAG_COMPRESSED
            except zlib.error:
                pass
        try:
            handle = ReceiptHandle.decode(
                f"{msg.properties.get(PROPERTY_POP_CK, '')} {msg.commit_log_offset}"
            )
        except ReceiptHandleError as exc:
            log.warning("broker sent a popped message without a usable handle: %s", exc)
            continue
        info = handle.info
        count = counts.get((info.topic_type, f"qo{info.queue_id}%{info.queue_offset}"))
        if count is None:
            count = counts.get((info.topic_type, str(info.queue_id)))
        if count is not None:
            msg.reconsume_times = count
        out.append(PoppedMessage(msg, handle))
    return out
