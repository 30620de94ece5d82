"""SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320).

The hot path is synchronous: decode the header, build the message, put it, reply. Only
SYNC_FLUSH returns an awaitable (the group-commit wait), so ASYNC_FLUSH sends create no
task at all.
"""

from __future__ import annotations

import inspect
import random
from typing import TYPE_CHECKING

from ledgermq.broker import topics as t
from ledgermq.broker.processors.responses import put_status_code
from ledgermq.broker.send_header import SendHeader, decode_send_header
from ledgermq.broker.store_port import PutOutcome, StorePort
from ledgermq.broker.transaction.records import amend_half_reply, is_half_send, to_half
from ledgermq.common.message import (
    MAX_PROPERTIES_LENGTH,
    PROPERTY_CLUSTER,
    PROPERTY_WAIT,
    TRANSIENT_PREFIX,
    BatchItem,
    MessageDecodeError,
    decode_batch,
    decode_properties,
)
from ledgermq.remoting.codec import RemotingCommand, SharedFields, json_string
from ledgermq.remoting.codes import ResponseCode
from ledgermq.remoting.connection import HandlerResult, RemotingConnection
from ledgermq.remoting.errors import RemotingError
from ledgermq.store.message_store import BatchToStore, MessageToStore

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker


def parse_host(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host.strip("[]") or "127.0.0.1", int(port) if port.isdigit() else 0)


def born_host(conn: RemotingConnection) -> tuple[str, int]:
    """The producer's address, parsed once per connection rather than once per message."""
    host = conn.attributes.get("bornHost")
    if host is None:
        host = conn.attributes["bornHost"] = parse_host(conn.remote_address)
    return host


def _stored_text(sent: str, cluster: str) -> str | None:
    """The properties text to store: the producer's own plus CLUSTER, which decodes to
    the same properties as re-encoding would give; None when it might not (transient
    keys must be dropped, or CLUSTER is already there)."""
    if TRANSIENT_PREFIX in sent or "CLUSTER\x01" in sent:
        return None
    if sent and not sent.endswith("\x02"):
        sent += "\x02"
    return f"{sent}CLUSTER\x01{cluster}\x02"


class SendProcessor:
    def __init__(self, broker: Broker) -> None:
        self._b = broker
        self._random = random.Random()

    # --- checks shared with batch ------------------------------------------------------
    def _check(self, conn: RemotingConnection, h: SendHeader) -> int:
        """Validates topic and permissions; returns the write queue count."""
        b = self._b
        cfg = b.config
        if b.is_slave:
            raise RemotingError(
                ResponseCode.SERVICE_NOT_AVAILABLE, "the broker is a slave, sending is not allowed"
            )
        if not t.is_writeable(cfg.broker_permission):
            raise RemotingError(
                ResponseCode.NO_PERMISSION,
                f"the broker[{cfg.broker_ip1}] sending message is forbidden",
            )
        topic_cfg = b.topic_config.get(h.topic)
        if topic_cfg is None:
            error = t.topic_error(h.topic)
            if error is not None:
                raise RemotingError(ResponseCode.MESSAGE_ILLEGAL, error)
            if h.topic in t.NOT_ALLOWED_SEND_TOPICS:
                raise RemotingError(
                    ResponseCode.NO_PERMISSION, f"Sending message to topic[{h.topic}] is forbidden."
                )
            if h.topic.startswith(t.RETRY_PREFIX):
                topic_cfg = b.topic_config.create_system_group_topic(
                    h.topic, 1, t.PERM_READ | t.PERM_WRITE
                )
            else:
                topic_cfg = b.topic_config.create_for_send(
                    h.topic, h.default_topic, h.default_topic_queue_nums, 0
                )
            if topic_cfg is None:
                raise RemotingError(
                    ResponseCode.TOPIC_NOT_EXIST,
                    f"topic[{h.topic}] not exist, apply first please!",
                )
        elif h.topic in t.NOT_ALLOWED_SEND_TOPICS:
            raise RemotingError(
                ResponseCode.NO_PERMISSION, f"Sending message to topic[{h.topic}] is forbidden."
            )
        if not t.is_writeable(topic_cfg.perm):
            raise RemotingError(
                ResponseCode.NO_PERMISSION, f"the topic[{h.topic}] sending message is forbidden"
            )
        return topic_cfg.write_queue_nums

    def _queue_id(self, requested: int, write_queues: int) -> int:
        if 0 <= requested < write_queues:
            return requested
        return self._random.randrange(write_queues) if write_queues > 0 else 0

    def _check_body(self, body: bytes) -> None:
        limit = self._b.config.max_message_size
        if len(body) > limit:
            raise RemotingError(
                ResponseCode.MESSAGE_ILLEGAL,
                f"the message body size over max value, MAX: {limit}, got {len(body)}",
            )

    # --- SEND_MESSAGE / V2 ------------------------------------------------------------
    def handle(self, conn: RemotingConnection, cmd: RemotingCommand) -> HandlerResult:
        if cmd.ext_fields.get("m") == "true" or cmd.code == 320:
            return self.handle_batch(conn, cmd)
        msg = self._build(conn, cmd)
        return self._finish(cmd, msg, self._b.putter.put(msg))

    def handle_group(
        self, conn: RemotingConnection, cmds: list[RemotingCommand]
    ) -> list[HandlerResult]:
        """Pipelined sends that arrived in one read: one store append for all of them.

        Each send still succeeds or fails on its own, exactly as `handle` would answer it.
        """
        results: list[HandlerResult] = [None] * len(cmds)
        msgs: list[MessageToStore] = []
        positions: list[int] = []
        batches = False
        for i, cmd in enumerate(cmds):
            try:
                if cmd.ext_fields.get("m") == "true" or cmd.code == 320:
                    results[i] = self.handle_batch(conn, cmd)
                    batches = True
                    continue
                msgs.append(self._build(conn, cmd))
                positions.append(i)
            except RemotingError as exc:
                results[i] = cmd.make_response(exc.code, exc.remark)
        if not msgs:
            return results
        outcomes = self._b.putter.put_group(msgs)
        durable: list[tuple[int, PutOutcome]] = []
        for i, msg, outcome in zip(positions, msgs, outcomes, strict=True):
            results[i] = self._reply_to(cmds[i], msg, outcome)
            if self._must_wait(msg, outcome):
                durable.append((i, outcome))
        if durable:
            # SYNC_FLUSH: one wait for the whole group (the fsync that covers the last
            # record covers them all), one task instead of one per send.
            return self._await_group(results, durable, batches)  # type: ignore[return-value]
        return results

    async def _await_group(
        self, results: list[HandlerResult], durable: list[tuple[int, PutOutcome]], batches: bool
    ) -> list[HandlerResult]:
        last = max(durable, key=lambda item: item[1].commit_log_offset)[1]
        status, remark = await self._b.store.wait_durable(last)
        if status != "PUT_OK":
            code, text = put_status_code(status, remark)
            for i, _ in durable:
                results[i].code = code  # type: ignore[union-attr]
                results[i].remark = text  # type: ignore[union-attr]
        if batches:  # a batch send in the group waits on its own
            for i, result in enumerate(results):
                if inspect.isawaitable(result):
                    results[i] = await result
        return results

    def _must_wait(self, msg: MessageToStore, outcome: PutOutcome) -> bool:
        if StorePort.must_wait(outcome):
            return True  # a DLedger group acknowledges only what a majority holds
        return (
            outcome.ok
            and self._b.sync_flush
            and msg.properties.get(PROPERTY_WAIT, "true") != "false"
        )

    def _finish(
        self, cmd: RemotingCommand, msg: MessageToStore, outcome: PutOutcome
    ) -> HandlerResult:
        response = self._reply_to(cmd, msg, outcome)
        if self._must_wait(msg, outcome):
            return self._await_durable(cmd, outcome, response)
        return response

    def _build(self, conn: RemotingConnection, cmd: RemotingCommand) -> MessageToStore:
        """Decodes and validates one send; raises RemotingError with the reply's code."""
        h = decode_send_header(cmd.code, cmd.ext_fields)
        write_queues = self._check(conn, h)
        body = cmd.body or b""
        self._check_body(body)
        if len(h.properties.encode()) > MAX_PROPERTIES_LENGTH:
            raise RemotingError(
                ResponseCode.MESSAGE_ILLEGAL,
                f"the message properties size over max value, MAX: {MAX_PROPERTIES_LENGTH}",
            )
        props = decode_properties(h.properties)
        b = self._b
        half = is_half_send(props)  # a transaction's prepared message (broker/transaction)
        if half and b.config.reject_transaction_message:
            raise RemotingError(
                ResponseCode.NO_PERMISSION,
                f"the broker[{b.config.broker_ip1}] sending transaction message is forbidden",
            )
        queue_id = self._queue_id(h.queue_id, write_queues)
        topic = h.topic
        if topic.startswith(t.RETRY_PREFIX):
            topic, queue_id = self._retry_or_dlq(h, topic, queue_id)
        cluster = b.config.broker_cluster_name
        props[PROPERTY_CLUSTER] = cluster
        msg = MessageToStore(
            topic=topic,
            body=body,
            flag=h.flag,
            properties=props,
            queue_id=queue_id,
            sys_flag=h.sys_flag,
            born_timestamp=h.born_timestamp,
            born_host=born_host(conn),
            reconsume_times=h.reconsume_times,
            properties_text=_stored_text(h.properties, cluster),
        )
        return to_half(msg, h.producer_group) if half else msg

    def _retry_or_dlq(self, h: SendHeader, topic: str, queue_id: int) -> tuple[str, int]:
        """A consumer re-sending to %RETRY%: past the retry limit it goes to the DLQ."""
        group = topic[len(t.RETRY_PREFIX) :]
        max_times = h.max_reconsume_times
        if max_times is None:
            sub = self._b.subscription_groups.get(group)
            max_times = sub.retry_max_times if sub is not None else 16
        if h.reconsume_times < max_times:
            return topic, queue_id
        dlq = t.dlq_topic(group)
        self._b.topic_config.create_system_group_topic(dlq, 1, t.PERM_READ | t.PERM_WRITE)
        return dlq, 0

    def _reply_to(
        self, cmd: RemotingCommand, msg: MessageToStore, outcome: PutOutcome
    ) -> RemotingCommand:
        """The reply to one stored send; a transaction's half message gets its own
        fields (the producer's queue and the transaction id) in a mutable reply."""
        if msg.topic != t.TRANS_HALF_TOPIC:
            return self._response(cmd, outcome, msg.queue_id)
        response = self._response(cmd, outcome, msg.queue_id, shared=False)
        amend_half_reply(msg, response.ext_fields)
        return response

    def _response(
        self, cmd: RemotingCommand, outcome: PutOutcome, queue_id: int, *, shared: bool = True
    ) -> RemotingCommand:
        """The reply to a send; `shared`: its fields are read-only, their JSON rendered
        here from the fixed layout (every send has one: ~0.5 us less than the encoder)."""
        code, remark = put_status_code(outcome.status, outcome.remark)
        if code not in (
            ResponseCode.SUCCESS,
            ResponseCode.FLUSH_DISK_TIMEOUT,
            ResponseCode.FLUSH_SLAVE_TIMEOUT,
            ResponseCode.SLAVE_NOT_AVAILABLE,
        ):
            return cmd.make_response(code, remark)
        cfg = self._b.config
        msg_id = ",".join(outcome.msg_ids)
        queue_id = int(queue_id)
        queue_offset = int(outcome.queue_offset)
        trace_on = "true" if cfg.trace_on else "false"
        fields = {
            "msgId": msg_id,
            "queueId": str(queue_id),
            "queueOffset": str(queue_offset),
            "MSG_REGION": cfg.region_id,
            "TRACE_ON": trace_on,
        }
        if shared:
            fields = SharedFields.prerendered(
                fields,
                f'{{"msgId":{json_string(msg_id)},"queueId":"{queue_id}",'
                f'"queueOffset":"{queue_offset}","MSG_REGION":{json_string(cfg.region_id)},'
                f'"TRACE_ON":"{trace_on}"}}',
            )
        return cmd.make_response(code, remark, fields)

    async def _await_durable(
        self, cmd: RemotingCommand, outcome: PutOutcome, response: RemotingCommand
    ) -> RemotingCommand:
        status, remark = await self._b.store.wait_durable(outcome)
        if status != "PUT_OK":
            response.code, response.remark = put_status_code(status, remark)
        return response

    # --- SEND_BATCH_MESSAGE -----------------------------------------------------------
    def handle_batch(self, conn: RemotingConnection, cmd: RemotingCommand) -> HandlerResult:
        h = decode_send_header(cmd.code, cmd.ext_fields)
        write_queues = self._check(conn, h)
        if h.topic.startswith(t.RETRY_PREFIX):
            raise RemotingError(
                ResponseCode.MESSAGE_ILLEGAL, "batch request does not support retry group"
            )
        body = cmd.body or b""
        self._check_body(body)
        try:
            items = decode_batch(body)
        except MessageDecodeError as exc:
            raise RemotingError(ResponseCode.MESSAGE_ILLEGAL, f"bad batch body: {exc}") from None
        if not items:
            raise RemotingError(ResponseCode.MESSAGE_ILLEGAL, "the batch is empty")
        b = self._b
        queue_id = self._queue_id(h.queue_id, write_queues)
        host = born_host(conn)
        cluster = b.config.broker_cluster_name
        stored: list[BatchItem] = []
        for item in items:
            props = item.properties
            if props.get("DELAY", "0") not in ("", "0"):
                raise RemotingError(
                    ResponseCode.MESSAGE_ILLEGAL, "delay level is not supported for batch messages"
                )
            props[PROPERTY_CLUSTER] = cluster
            stored.append(
                BatchItem(item.body, item.flag, props, _stored_text(item.properties_text, cluster))
            )
        batch = BatchToStore(
            topic=h.topic,
            queue_id=queue_id,
            items=stored,
            sys_flag=h.sys_flag,
            born_timestamp=h.born_timestamp,
            born_host=host,
            reconsume_times=h.reconsume_times,
        )
        outcome = b.putter.put_batch(batch)
        response = self._response(cmd, outcome, queue_id)
        if outcome.ok and (b.sync_flush or StorePort.must_wait(outcome)):
            return self._await_durable(cmd, outcome, response)
        return response
