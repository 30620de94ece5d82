"""The proxy's remoting side: routes, topic attributes, sends and transaction ends.

It is one `ledgermq.client.ClientInstance` (NameServer failover, route cache,
connection pool, heartbeats) plus small caches. The gRPC activities only call this
class, so a broker-local backend could replace it without touching them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ledgermq.client.errors import MQClientError
from ledgermq.client.instance import ClientInstance
from ledgermq.client.producer import build_send_header
from ledgermq.client.route import TopicRoute
from ledgermq.common.message import MessageExt, MessageQueue, decode_records, parse_offset_msg_id
from ledgermq.proxy.config import ProxyConfig
from ledgermq.proxy.message_codec import OutgoingMessage, queue_for_group
from ledgermq.proxy.status import Code, ProxyError, broker_error
from ledgermq.proxy.txid import TransactionRef
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.connection import RemotingConnection

log = logging.getLogger(__name__)

# END_TRANSACTION commitOrRollback values (PROTOCOL.md 2.3).
COMMIT = 8
ROLLBACK = 12
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


class ClusterBackend:
    def __init__(self, config: ProxyConfig, *, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
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

    async def start(self) -> None:
        await self.instance.start()

    async def stop(self) -> None:
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

    async def send(self, out: OutgoingMessage, timeout: float | None = None) -> SendOutcome:
        route = await self.route(out.topic)
        queues = route.publish_queues(out.topic)
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
        for topic in topics:
            if topic not in self._producer_groups:
                hooks = _ProducerGroup(topic, {topic})
                self._producer_groups[topic] = hooks
                self.instance.register_producer(hooks)

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
