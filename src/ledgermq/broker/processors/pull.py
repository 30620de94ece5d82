"""PULL_MESSAGE (11) and LITE_PULL_MESSAGE (361), with long polling."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ledgermq.broker import topics as t
from ledgermq.broker.subscription import SubscriptionData, build_subscription
from ledgermq.common.message import (
    PROPERTY_TAGS,
    MessageDecodeError,
    decode_record,
    record_physical_offset,
)
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import ResponseCode
from ledgermq.remoting.connection import HandlerResult, RemotingConnection
from ledgermq.remoting.errors import RemotingError
from ledgermq.remoting.headers import get_int, req_int, req_str

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker

FLAG_COMMIT_OFFSET = 0x1
FLAG_SUSPEND = 0x2
FLAG_SUBSCRIPTION = 0x4
FLAG_CLASS_FILTER = 0x8
FLAG_LITE_PULL = 0x10

_NOT_FOUND = ResponseCode.PULL_NOT_FOUND
_RETRY = ResponseCode.PULL_RETRY_IMMEDIATELY
_MOVED = ResponseCode.PULL_OFFSET_MOVED

# GetMessageStatus -> response code (PROTOCOL.md §2.2). None = depends on the offset.
_STATUS_CODES: dict[str, int | None] = {
    "FOUND": ResponseCode.SUCCESS,
    "MESSAGE_WAS_REMOVING": _RETRY,
    "NO_MATCHED_MESSAGE": _RETRY,
    "NO_MATCHED_LOGIC_QUEUE": None,
    "NO_MESSAGE_IN_QUEUE": None,
    "OFFSET_FOUND_NULL": _NOT_FOUND,
    "OFFSET_OVERFLOW_BADLY": _MOVED,
    "OFFSET_OVERFLOW_ONE": _NOT_FOUND,
    "OFFSET_TOO_SMALL": _MOVED,
    "OFFSET_RESET": _MOVED,
}

_SUB_CACHE_LIMIT = 4096


def _tags_of(record: bytes) -> str | None:
    msg, _ = decode_record(record, decode_body=False)
    return msg.properties.get(PROPERTY_TAGS)


class PullProcessor:
    def __init__(self, broker: Broker) -> None:
        self._b = broker
        # Parsing `a || b` once per distinct expression, not once per pull.
        self._sub_cache: dict[tuple[str, str, str], SubscriptionData] = {}

    def handle(self, conn: RemotingConnection, cmd: RemotingCommand) -> HandlerResult:
        return self._answer(conn, cmd, allow_suspend=True)

    def _answer(
        self, conn: RemotingConnection, cmd: RemotingCommand, allow_suspend: bool
    ) -> HandlerResult:
        try:
            return self._process(conn, cmd, allow_suspend)
        except RemotingError as exc:
            # PROTOCOL.md 2.2: the four mandatory response fields go on *every* code;
            # clients decode the header before they look at the code.
            offset = cmd.ext_fields.get("queueOffset", "0")
            return cmd.make_response(
                exc.code,
                exc.remark,
                {
                    "suggestWhichBrokerId": "0",
                    "nextBeginOffset": offset if offset.lstrip("-").isdigit() else "0",
                    "minOffset": "0",
                    "maxOffset": "0",
                },
            )

    def _far_behind(self, record: bytes) -> bool:
        """RocketMQ's isSuggestPullingFromSlave: the commit log holds more after this
        record than accessMessageInMemoryMaxRatio percent of the machine's memory."""
        try:
            phy = record_physical_offset(record)
        except MessageDecodeError:
            return False
        behind = self._b.store.commit_log_max_offset() - phy
        return behind > _physical_memory() * self._b.config.access_message_in_memory_max_ratio / 100

    def _subscription(self, cmd: RemotingCommand, group: str, topic: str, sys_flag: int):
        expr = cmd.ext_fields.get("subscription")
        if sys_flag & FLAG_SUBSCRIPTION or expr is not None:
            if not (sys_flag & FLAG_SUBSCRIPTION):
                # Prefer what the group announced in its heartbeat, like RocketMQ does.
                known = self._b.clients.find_subscription(group, topic)
                if known is not None:
                    return known
            expr_type = cmd.ext_fields.get("expressionType") or "TAG"
            if expr_type.upper() != "TAG":
                raise RemotingError(
                    ResponseCode.SUBSCRIPTION_PARSE_FAILED,
                    f"expression type {expr_type} is not supported yet",
                )
            key = (topic, expr or "*", expr_type)
            sub = self._sub_cache.get(key)
            if sub is None:
                if len(self._sub_cache) >= _SUB_CACHE_LIMIT:
                    self._sub_cache.clear()
                sub = self._sub_cache[key] = build_subscription(topic, expr, 0, expr_type)
            return sub
        sub = self._b.clients.find_subscription(group, topic)
        if sub is None:
            if self._b.clients.consumer_group(group) is None:
                raise RemotingError(
                    ResponseCode.SUBSCRIPTION_NOT_EXIST,
                    f"the consumer's group info not exist, group: {group}",
                )
            raise RemotingError(
                ResponseCode.SUBSCRIPTION_NOT_EXIST,
                f"the consumer's subscription not exist, group: {group}, topic: {topic}",
            )
        return sub

    def _process(
        self, conn: RemotingConnection, cmd: RemotingCommand, allow_suspend: bool
    ) -> HandlerResult:
        b = self._b
        group = req_str(cmd, "consumerGroup")
        topic = req_str(cmd, "topic")
        queue_id = req_int(cmd, "queueId")
        offset = req_int(cmd, "queueOffset")
        max_nums = get_int(cmd, "maxMsgNums", 32) or 32
        sys_flag = get_int(cmd, "sysFlag", 0) or 0
        if not t.is_readable(b.config.broker_permission):
            raise RemotingError(
                ResponseCode.NO_PERMISSION,
                f"the broker[{b.config.broker_ip1}] pulling message is forbidden",
            )
        group_cfg = b.subscription_groups.find_or_create(group)
        if group_cfg is None:
            raise RemotingError(
                ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST,
                f"subscription group [{group}] does not exist",
            )
        if not group_cfg.consume_enable:
            raise RemotingError(
                ResponseCode.NO_PERMISSION, f"subscription group no permission, {group}"
            )
        topic_cfg = b.topic_config.get(topic)
        if topic_cfg is None:
            raise RemotingError(
                ResponseCode.TOPIC_NOT_EXIST, f"topic[{topic}] not exist, apply first please!"
            )
        if not t.is_readable(topic_cfg.perm):
            raise RemotingError(
                ResponseCode.NO_PERMISSION, f"the topic[{topic}] pulling message is forbidden"
            )
        if queue_id < 0 or queue_id >= topic_cfg.read_queue_nums:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR,
                f"queueId[{queue_id}] is illegal, topic:[{topic}] topicConfig.readQueueNums:"
                f"[{topic_cfg.read_queue_nums}] consumer:[{conn.remote_address}]",
            )
        sub = self._subscription(cmd, group, topic, sys_flag)
        slave_read = b.config.slave_read_enable
        if b.is_slave and not slave_read:
            # RocketMQ: a slave that may not serve reads sends the consumer to the master
            return cmd.make_response(
                ResponseCode.PULL_RETRY_IMMEDIATELY,
                "this broker is a slave and slaveReadEnable=false",
                {
                    "suggestWhichBrokerId": "0",
                    "nextBeginOffset": str(offset),
                    "minOffset": str(b.store.min_offset(topic, queue_id)),
                    "maxOffset": str(b.store.max_offset(topic, queue_id)),
                },
            )
        max_bytes = get_int(cmd, "maxMsgBytes", 0) or 0
        got = b.store.get(
            topic,
            queue_id,
            offset,
            max_nums,
            max_bytes if max_bytes > 0 else 1 << 62,
            None if sub.match_all else sub.matches_code,
        )
        records = got.records
        if records and not sub.match_all:
            # The ConsumeQueue check used hashes; drop hash collisions by the real tag.
            records = [r for r in records if sub.matches_tags(_tags_of(r))]
        code = _STATUS_CODES.get(got.status, ResponseCode.SYSTEM_ERROR)
        if code is None:
            code = _MOVED if offset != 0 else _NOT_FOUND
        if code == ResponseCode.SUCCESS and not records:
            code = _RETRY
        suggest = 0
        if slave_read:
            # a consumer far behind (what it reads is unlikely to be in memory) is sent to
            # another member, so the master's page cache serves the ones keeping up
            slow = bool(records) and self._far_behind(records[-1])
            suggest = group_cfg.which_broker_when_consume_slowly if slow else group_cfg.broker_id
        header = {
            "suggestWhichBrokerId": str(suggest),
            "nextBeginOffset": str(got.next_begin_offset),
            "minOffset": str(got.min_offset),
            "maxOffset": str(got.max_offset),
        }
        # Store the consumer's progress that rode along (master only, first pass only).
        if allow_suspend and sys_flag & FLAG_COMMIT_OFFSET and not b.is_slave:
            commit = get_int(cmd, "commitOffset", -1)
            if commit is not None and commit >= 0:
                b.commit_offset(group, topic, queue_id, commit)
        if code == ResponseCode.SUCCESS:
            b.stats.get_total += len(records)
            return cmd.make_response(code, None, header, b"".join(records))
        if code == _NOT_FOUND and allow_suspend and sys_flag & FLAG_SUSPEND:
            if b.config.long_polling_enable:
                timeout_ms = get_int(cmd, "suspendTimeoutMillis", 15_000) or 0
            else:
                timeout_ms = b.config.short_polling_time_mills
            if timeout_ms > 0:
                code_filter = None if sub.match_all else sub.matches_code
                return self._suspend(
                    conn, cmd, topic, queue_id, offset, timeout_ms / 1000.0, code_filter
                )
        remark = "OFFSET_MOVED" if code == _MOVED else None
        return cmd.make_response(code, remark, header)

    async def _suspend(
        self,
        conn: RemotingConnection,
        cmd: RemotingCommand,
        topic: str,
        queue_id: int,
        offset: int,
        timeout_s: float,
        code_filter: Callable[[int], bool] | None,
    ) -> RemotingCommand | None:
        deadline = time.monotonic() + timeout_s
        hold = self._b.pull_hold
        while True:
            left = deadline - time.monotonic()
            arrived = left > 0 and await hold.wait(topic, queue_id, offset, left, code_filter)
            result = self._answer(conn, cmd, allow_suspend=False)
            assert not hasattr(result, "__await__")
            if not arrived or result is None or result.code != _NOT_FOUND:
                return result  # type: ignore[return-value]


@functools.cache
def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30
