"""Local mode's backend: sends to this broker go straight into its put path.

`ClusterBackend` reaches every broker, the one the proxy runs in included, over
loopback remoting: encode a SEND_MESSAGE_V2, decode it again in the same process, and
two socket hops per message. Here a send whose queue the route puts on this broker
(and this broker is that queue's master) is checked and stored the way the broker's
SendProcessor does it for a remoting send -- same topic and permission checks (the
processor's own), same MessageToStore, same putter (delay levels, stats), same
durability wait (SYNC_FLUSH group commit, a DLedger master's quorum) -- and answered
with the SendOutcome the remoting reply would have become. Everything else (routes,
topic attributes, sends whose queue lives on another broker, transactions, consuming)
is ClusterBackend's.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ledgermq.broker import topics as t
from ledgermq.broker.processors.responses import put_status_code
from ledgermq.broker.processors.send import SendProcessor, _stored_text
from ledgermq.broker.send_header import SendHeader
from ledgermq.broker.store_port import PutOutcome
from ledgermq.broker.transaction.records import is_half_send, real_queue_id, to_half
from ledgermq.client.producer import DEFAULT_TOPIC_QUEUE_NUMS
from ledgermq.common.message import (
    MAX_PROPERTIES_LENGTH,
    PROPERTY_CLUSTER,
    MessageQueue,
    encode_properties,
)
from ledgermq.proxy.backend import ClusterBackend, SendOutcome, _commit_log_offset
from ledgermq.proxy.config import ProxyConfig
from ledgermq.proxy.message_codec import OutgoingMessage
from ledgermq.proxy.status import Code, ProxyError, broker_error
from ledgermq.proxy.txid import TransactionRef
from ledgermq.remoting.codes import ResponseCode
from ledgermq.remoting.errors import RemotingError
from ledgermq.store.message_store import MessageToStore

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker

# Stored-but-not-durable put statuses: reported per entry, as ClusterBackend does.
_NOT_DURABLE = {
    ResponseCode.FLUSH_DISK_TIMEOUT: Code.MASTER_PERSISTENCE_TIMEOUT,
    ResponseCode.FLUSH_SLAVE_TIMEOUT: Code.SLAVE_PERSISTENCE_TIMEOUT,
    ResponseCode.SLAVE_NOT_AVAILABLE: Code.HA_NOT_AVAILABLE,
}


class LocalBackend(ClusterBackend):
    def __init__(self, config: ProxyConfig, broker: Broker) -> None:
        super().__init__(config)
        self.broker = broker
        # The processor's checks (topic, permissions, auto-creation) are reused as they
        # are, so a local send is refused exactly when a remoting one would be.
        self._processor = SendProcessor(broker)
        self.local_sends = 0  # for tests and diagnostics: sends that skipped remoting

    async def send(self, out: OutgoingMessage, timeout: float | None = None) -> SendOutcome:
        route = await self.route(out.topic)
        queues = self._publish_queues(out.topic, route)
        if not queues:
            raise ProxyError(Code.FORBIDDEN, f"topic {out.topic!r} has no writable queue")
        mq = self._pick_queue(out.topic, queues, out.message_group)
        broker = self.broker
        local = (
            mq.broker_name == broker.config.broker_name
            and self.instance.find_broker_addr(mq.broker_name) == broker.address
            # consumer retries (%RETRY%) take the processor's retry/DLQ path
            and not out.topic.startswith(t.RETRY_PREFIX)
        )
        if not local:
            # Another broker's queue: remoting, as in cluster mode (ClusterBackend picks
            # its own queue from the same round robin, which is as good a choice).
            return await super().send(out, timeout)
        where = f"{mq.broker_name}({broker.address})"
        try:
            msg = self._build(out, mq)
        except RemotingError as exc:
            raise broker_error(exc.code, exc.remark, where) from None
        outcome = broker.putter.put(msg)
        status, remark = outcome.status, outcome.remark
        if self._processor._must_wait(msg, outcome):
            budget = timeout or self.timeout
            try:
                # shield: a client deadline must not cancel the store's own wait
                status, remark = await asyncio.wait_for(
                    asyncio.shield(broker.store.wait_durable(outcome)), budget
                )
            except TimeoutError:
                raise ProxyError(
                    Code.PROXY_TIMEOUT, f"send to broker {broker.address} timed out"
                ) from None
        self.local_sends += 1
        return self._outcome(out, mq, msg, outcome, status, remark, where)

    def _build(self, out: OutgoingMessage, mq: MessageQueue) -> MessageToStore:
        """SendProcessor._build for a message that never was a remoting command."""
        properties_text = encode_properties(out.properties)
        header = SendHeader(
            # The Java proxy sends with the topic as producer group (see txid.py).
            producer_group=out.topic,
            topic=out.topic,
            default_topic=t.TBW102,
            # build_send_header's defaults: an unknown topic may be created from TBW102
            default_topic_queue_nums=DEFAULT_TOPIC_QUEUE_NUMS,
            queue_id=mq.queue_id,
            sys_flag=out.sys_flag,
            born_timestamp=out.born_timestamp_ms,
            flag=0,
            properties=properties_text,
            reconsume_times=0,
            max_reconsume_times=None,
            batch=False,
        )
        processor = self._processor
        write_queues = processor._check(None, header)  # type: ignore[arg-type]  # conn unused
        processor._check_body(out.body)
        if len(properties_text.encode()) > MAX_PROPERTIES_LENGTH:
            raise RemotingError(
                ResponseCode.MESSAGE_ILLEGAL,
                f"the message properties size over max value, MAX: {MAX_PROPERTIES_LENGTH}",
            )
        broker = self.broker
        props = dict(out.properties)
        half = is_half_send(props)
        if half and broker.config.reject_transaction_message:
            raise RemotingError(
                ResponseCode.NO_PERMISSION,
                f"the broker[{broker.config.broker_ip1}] sending transaction message is forbidden",
            )
        # Set last, as the remoting path appends it to the producer's properties.
        cluster = broker.config.broker_cluster_name
        props[PROPERTY_CLUSTER] = cluster
        msg = MessageToStore(
            topic=out.topic,
            body=out.body,
            flag=0,
            properties=props,
            queue_id=processor._queue_id(mq.queue_id, write_queues),
            sys_flag=out.sys_flag,
            born_timestamp=out.born_timestamp_ms,
            # The producer's host as the broker sees it: the proxy, i.e. this host.
            born_host=(broker.ip1, 0),
            reconsume_times=0,
            # the encoded text is reused, as for a remoting send (saves re-encoding)
            properties_text=_stored_text(properties_text, cluster),
        )
        return to_half(msg, out.topic) if half else msg

    def _outcome(
        self,
        out: OutgoingMessage,
        mq: MessageQueue,
        msg: MessageToStore,
        put: PutOutcome,
        status: str,
        remark: str,
        where: str,
    ) -> SendOutcome:
        code, text = put_status_code(status, remark)
        if code != ResponseCode.SUCCESS and code not in _NOT_DURABLE:
            raise broker_error(code, text, where)
        half = msg.topic == t.TRANS_HALF_TOPIC
        # A half message's reply names the queue the producer chose (amend_half_reply).
        queue_id = real_queue_id(msg.properties) if half else msg.queue_id
        offset_msg_id = ",".join(put.msg_ids)
        outcome = SendOutcome(
            code=_NOT_DURABLE.get(code, Code.OK),  # type: ignore[call-overload]
            queue=MessageQueue(out.topic, mq.broker_name, queue_id),
            queue_offset=put.queue_offset,
            offset_msg_id=offset_msg_id,
        )
        if out.is_transaction:
            outcome.transaction_id = TransactionRef(
                broker_name=mq.broker_name,
                commit_log_offset=_commit_log_offset(offset_msg_id),
                tran_state_table_offset=put.queue_offset,
                broker_transaction_id=(msg.properties.get("UNIQ_KEY") if half else None)
                or out.message_id,
            ).encode()
        return outcome
