"""SimpleConsumer: RocketMQ 5's POP consumption over the remoting protocol.

consumer = SimpleConsumer("group", "127.0.0.1:9876", topic="Topic", expression="A || B")
await consumer.start()
for msg in await consumer.receive(max_num=16, invisible_time=30, poll_time=10):
    ...  # work
    await consumer.ack(msg)

The broker keeps each received message invisible for `invisible_time` seconds and hands
it out again (reconsume times + 1) unless it is acked first; `change_invisible_duration`
buys more time. A message's receipt handle is its POP_CK property; `ack` and
`change_invisible_duration` take the message (or a `ReceivedMessage`) back.
"""

from __future__ import annotations

import itertools
import logging
import time
import zlib
from dataclasses import dataclass

from ledgermq.client.errors import MQClientError
from ledgermq.client.instance import ClientInstance, ClientRegistry, check_response
from ledgermq.client.lifecycle import InstanceClient
from ledgermq.common.message import (
    PROPERTY_POP_CK,
    SYSFLAG_COMPRESSED,
    MessageExt,
    decode_records,
)
from ledgermq.common.pop_handle import (
    BatchAck,
    BatchAckBody,
    ExtraInfo,
    HandleError,
    parse_order_count_info,
)
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode

log = logging.getLogger(__name__)

_MS = 1000
# the request may take the whole long poll plus the usual round trip
_POLL_GRACE_S = 3.0


@dataclass(slots=True)
class ReceivedMessage:
    """A popped message and where to ack it."""

    msg: MessageExt
    handle: ExtraInfo
    group: str

    @property
    def body(self) -> bytes:
        return self.msg.body

    @property
    def topic(self) -> str:
        return self.msg.topic

    @property
    def reconsume_times(self) -> int:
        return self.msg.reconsume_times

    @property
    def receipt_handle(self) -> str:
        return self.handle.format()


class SimpleConsumer(InstanceClient):
    ROLE = "simple consumer"

    def __init__(
        self,
        group: str,
        namesrv_addr: str | list[str],
        *,
        topic: str,
        expression: str = "*",
        order: bool = False,
        instance: ClientInstance | None = None,
        registry: ClientRegistry | None = None,
        instance_name: str | None = None,
    ) -> None:
        self.group = group
        self.namesrv_addr = namesrv_addr
        self.topic = topic
        self.expression = expression
        self.order = order
        self._given_instance = instance
        self._registry = registry
        self._instance_name = instance_name
        self._instance = None
        self._brokers = itertools.count()

    async def start(self) -> None:
        if self._instance is not None:
            return
        inst = self._acquire_instance()
        await inst.start()
        self._instance = inst

    async def shutdown(self) -> None:
        inst, self._instance = self._instance, None
        if inst is not None:
            await inst.shutdown()

    # --- receive ---------------------------------------------------------------------------
    async def _broker_for_pop(self) -> tuple[str, str]:
        route = await self.instance.route(self.topic)
        names = (
            sorted({mq.broker_name for mq in route.subscribe_queues(self.topic)}) if route else []
        )
        if not names:
            raise MQClientError(f"topic {self.topic!r} has no readable queue")
        name = names[next(self._brokers) % len(names)]
        return name, await self.instance.broker_addr(name, self.topic)

    async def receive(
        self, max_num: int = 16, invisible_time: float = 30.0, poll_time: float = 0.0
    ) -> list[ReceivedMessage]:
        """Pops up to `max_num` (≤ 32) messages from one broker of the topic, waiting up to
        `poll_time` seconds for some to arrive; [] when there are none."""
        _, addr = await self._broker_for_pop()
        ext = {
            "consumerGroup": self.group,
            "topic": self.topic,
            "queueId": "-1",
            "maxMsgNums": str(max_num),
            "invisibleTime": str(int(invisible_time * _MS)),
            "pollTime": str(int(poll_time * _MS)),
            "bornTime": str(int(time.time() * _MS)),
            "initMode": "0",
            "expType": "TAG",
            "exp": self.expression,
            "order": "true" if self.order else "false",
        }
        cmd = RemotingCommand(code=RequestCode.POP_MESSAGE, ext_fields=ext)
        resp = await self.instance.invoke(addr, cmd, poll_time + _POLL_GRACE_S)
        if resp.code == ResponseCode.POLLING_TIMEOUT:
            # the broker judged the request expired on arrival: a clock far off the
            # broker's (bornTime) makes every receive come back empty, so say it
            log.warning("receive from %s expired on arrival (clock skew?): %s", addr, resp.remark)
            return []
        if resp.code == ResponseCode.PULL_NOT_FOUND:
            return []
        check_response(resp, addr)
        return self._unpack(resp)

    def _unpack(self, resp: RemotingCommand) -> list[ReceivedMessage]:
        counts = parse_order_count_info(resp.ext_fields.get("orderCountInfo"))
        out = []
        for msg in decode_records(resp.body or b""):
            if msg.sys_flag & SYSFLAG_COMPRESSED:
                msg.body = zlib.decompress(msg.body)
            try:
                handle = ExtraInfo.parse(msg.properties.get(PROPERTY_POP_CK))
            except HandleError as exc:
                raise MQClientError(
                    f"broker sent a message without a usable handle: {exc}"
                ) from None
            count = counts.get((handle.topic_type, str(handle.queue_id)))
            if count is not None:
                msg.reconsume_times = count  # FIFO redeliveries in place
            out.append(ReceivedMessage(msg, handle, self.group))
        return out

    # --- ack / change ---------------------------------------------------------------------
    @staticmethod
    def _received(msg: ReceivedMessage | MessageExt, group: str) -> ReceivedMessage:
        if isinstance(msg, ReceivedMessage):
            return msg
        try:
            return ReceivedMessage(msg, ExtraInfo.parse(msg.properties.get(PROPERTY_POP_CK)), group)
        except HandleError as exc:
            raise MQClientError(f"not a received message: {exc}") from None

    def _handle_ext(self, r: ReceivedMessage) -> dict[str, str]:
        offset = r.handle.queue_offset if r.handle.queue_offset is not None else r.msg.queue_offset
        return {
            "consumerGroup": self.group,
            "topic": r.msg.topic,
            "queueId": str(r.handle.queue_id),
            "offset": str(offset),
            "extraInfo": r.handle.format(),
        }

    async def ack(self, msg: ReceivedMessage | MessageExt) -> None:
        r = self._received(msg, self.group)
        addr = await self.instance.broker_addr(r.handle.broker_name, self.topic)
        cmd = RemotingCommand(code=RequestCode.ACK_MESSAGE, ext_fields=self._handle_ext(r))
        await self.instance.invoke_ok(addr, cmd)

    async def batch_ack(self, msgs: list[ReceivedMessage]) -> None:
        """Acks many with one request per broker (messages of one pop share a handle
        prefix, so they travel as one bitset)."""
        groups: dict[tuple, list[ReceivedMessage]] = {}
        for r in msgs:
            h = r.handle
            key = (h.broker_name, h.topic_type, h.queue_id, h.ck_queue_offset, h.pop_time)
            groups.setdefault(key, []).append(r)
        by_broker: dict[str, list[BatchAck]] = {}
        for (broker, topic_type, queue_id, start, pop_time), rs in groups.items():
            h = rs[0].handle
            bits = tuple(sorted(r.msg.queue_offset - start for r in rs))
            by_broker.setdefault(broker, []).append(
                BatchAck(
                    self.group,
                    self.topic,
                    topic_type,
                    start,
                    queue_id,
                    h.revive_qid,
                    pop_time,
                    h.invisible_time,
                    bits,
                )
            )
        for broker, acks in by_broker.items():
            addr = await self.instance.broker_addr(broker, self.topic)
            body = BatchAckBody(broker, tuple(acks)).encode()
            cmd = RemotingCommand(code=RequestCode.BATCH_ACK_MESSAGE, body=body)
            await self.instance.invoke_ok(addr, cmd)

    async def change_invisible_duration(
        self, msg: ReceivedMessage | MessageExt, invisible_time: float
    ) -> ReceivedMessage:
        """Makes the message invisible for `invisible_time` seconds from now; returns it
        with its new handle (the old one no longer acks it)."""
        r = self._received(msg, self.group)
        addr = await self.instance.broker_addr(r.handle.broker_name, self.topic)
        ext = {**self._handle_ext(r), "invisibleTime": str(int(invisible_time * _MS))}
        cmd = RemotingCommand(code=RequestCode.CHANGE_MESSAGE_INVISIBLETIME, ext_fields=ext)
        resp = await self.instance.invoke_ok(addr, cmd)
        offset = r.handle.queue_offset if r.handle.queue_offset is not None else r.msg.queue_offset
        order = r.handle.is_order
        handle = ExtraInfo(
            r.handle.ck_queue_offset if order else offset,
            int(resp.ext_fields["popTime"]),
            int(resp.ext_fields["invisibleTime"]),
            int(resp.ext_fields["reviveQid"]),
            r.handle.topic_type,
            r.handle.broker_name,
            r.handle.queue_id,
            offset,
        )
        r.msg.properties[PROPERTY_POP_CK] = handle.format()
        return ReceivedMessage(r.msg, handle, self.group)
