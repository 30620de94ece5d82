"""CONSUMER_SEND_MSG_BACK (36): a failed message goes to %RETRY%<group> or %DLQ%<group>."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from ledgermq.broker import topics as t
from ledgermq.broker.processors.responses import put_status_code
from ledgermq.broker.store_port import PutOutcome, StorePort
from ledgermq.common.message import (
    PROPERTY_DELAY,
    PROPERTY_ORIGIN_MESSAGE_ID,
    PROPERTY_RETRY_TOPIC,
    PROPERTY_WAIT,
    MessageDecodeError,
    decode_record,
)
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import ResponseCode
from ledgermq.remoting.connection import RemotingConnection
from ledgermq.remoting.errors import RemotingError
from ledgermq.remoting.headers import get_int, get_str, req_int, req_str
from ledgermq.store.message_store import MessageToStore

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker


class SendBackProcessor:
    def __init__(self, broker: Broker) -> None:
        self._b = broker
        self._random = random.Random()

    def handle(self, conn: RemotingConnection, cmd: RemotingCommand):
        b = self._b
        phy_offset = req_int(cmd, "offset")
        group = req_str(cmd, "group")
        delay_level = req_int(cmd, "delayLevel")
        group_cfg = b.subscription_groups.find_or_create(group)
        if group_cfg is None:
            raise RemotingError(
                ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST, f"subscription group not exist, {group}"
            )
        if not t.is_writeable(b.config.broker_permission):
            raise RemotingError(
                ResponseCode.NO_PERMISSION,
                f"the broker[{b.config.broker_ip1}] sending message is forbidden",
            )
        if group_cfg.retry_queue_nums <= 0:
            return cmd.make_response(ResponseCode.SUCCESS)
        record = b.store.read_record(phy_offset)
        if record is None:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"look message by offset failed, {phy_offset}"
            )
        try:
            orig, _ = decode_record(record)
        except MessageDecodeError as exc:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"look message by offset failed, {phy_offset}: {exc}"
            ) from None
        props = dict(orig.properties)
        props.setdefault(PROPERTY_RETRY_TOPIC, orig.topic)
        # The retry copy is not worth a flush wait: the original is already durable.
        props[PROPERTY_WAIT] = "false"
        props.setdefault(
            PROPERTY_ORIGIN_MESSAGE_ID, get_str(cmd, "originMsgId") or orig.offset_msg_id
        )
        max_times = get_int(cmd, "maxReconsumeTimes")
        if max_times is None:
            max_times = group_cfg.retry_max_times
        if orig.reconsume_times >= max_times or delay_level < 0:
            topic = t.dlq_topic(group)
            topic_cfg = b.topic_config.create_system_group_topic(
                topic, 1, t.PERM_READ | t.PERM_WRITE
            )
            queue_id = 0
            props.pop(PROPERTY_DELAY, None)
        else:
            topic = t.retry_topic(group)
            topic_cfg = b.topic_config.create_system_group_topic(
                topic, max(1, group_cfg.retry_queue_nums), t.PERM_READ | t.PERM_WRITE
            )
            queue_id = self._random.randrange(max(1, topic_cfg.write_queue_nums))
            props[PROPERTY_DELAY] = str(
                delay_level if delay_level > 0 else 3 + orig.reconsume_times
            )
        if not t.is_writeable(topic_cfg.perm):
            raise RemotingError(
                ResponseCode.NO_PERMISSION, f"the topic[{topic}] sending message is forbidden"
            )
        msg = MessageToStore(
            topic=topic,
            body=orig.body,
            flag=orig.flag,
            properties=props,
            queue_id=queue_id,
            sys_flag=orig.sys_flag,
            born_timestamp=orig.born_timestamp,
            born_host=orig.born_host,
            reconsume_times=orig.reconsume_times + 1,
        )
        outcome = b.putter.put(msg)
        if StorePort.must_wait(outcome):
            return self._answer_when_replicated(cmd, outcome)
        code, remark = put_status_code(outcome.status, outcome.remark)
        return cmd.make_response(code, remark)

    async def _answer_when_replicated(
        self, cmd: RemotingCommand, outcome: PutOutcome
    ) -> RemotingCommand:
        # a DLedger group: the consumer may drop its copy only once a majority has the
        # retry message
        status, remark = await self._b.store.wait_durable(outcome)
        code, text = put_status_code(status, remark)
        return cmd.make_response(code, text)
