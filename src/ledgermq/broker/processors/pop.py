"""POP_MESSAGE (200050), ACK_MESSAGE (200051), CHANGE_MESSAGE_INVISIBLETIME (200053),
BATCH_ACK_MESSAGE (200151) and NOTIFICATION (200054): RocketMQ 5's broker-managed
consumption (PROTOCOL.md 2.7).

A pop picks messages from the group's progress in each queue, writes one checkpoint per
queue into the revive topic, moves the progress past them and hands them out with a
receipt handle (property POP_CK). Picking, writing the checkpoint and moving progress
happen in one synchronous stretch, so two pops on one event loop never get the same
messages. Acks are records in the same revive queue; the revive service does the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ledgermq.broker import topics as t
from ledgermq.broker.pop.records import AckRecord, CheckPoint
from ledgermq.broker.processors.responses import put_status_code
from ledgermq.broker.store_port import PutOutcome
from ledgermq.broker.subscription import SubscriptionData, build_subscription
from ledgermq.common.message import (
    PROPERTY_POP_CK,
    MessageDecodeError,
    MessageExt,
    decode_record,
    encode_record,
)
from ledgermq.common.pop_handle import (
    ORDER_REVIVE_QID,
    BatchAck,
    ExtraInfo,
    HandleError,
    format_msg_offset_info,
    format_order_count_info,
    format_start_offset_info,
    parse_batch_ack_body,
    pop_retry_topic,
    real_topic,
    topic_type_of,
)
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.connection import Dispatcher, HandlerResult, RemotingConnection
from ledgermq.remoting.errors import RemotingError
from ledgermq.remoting.headers import get_bool, get_int, get_str, req_int, req_str

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker

log = logging.getLogger(__name__)

MAX_POP_NUMS = 32  # a checkpoint covers at most 32 messages (RocketMQ's bitmap)
# the proxy's limit (12 h): a checkpoint holds revive progress back until it is due,
# so an unbounded invisible time would pin the revive queue (and its replay) forever
MAX_INVISIBLE_MS = 12 * 3600 * 1000
INIT_MODE_MIN = 0  # ConsumeInitMode: a group without progress starts at the queue's start
# RocketMQ: a request that waited in the client or network this much longer than its
# own poll time is answered POLLING_TIMEOUT (the client gave up on it already)
_EXPIRED_SLACK_MS = 500
_RETRY_FIRST_EVERY = 5  # one pop in five looks at the retry topic before the topic
_ALL = 1 << 62
_SUB_CACHE_LIMIT = 4096
_OFFSET_MOVED = frozenset({"OFFSET_TOO_SMALL", "OFFSET_OVERFLOW_BADLY", "OFFSET_RESET"})


@dataclass(slots=True)
class PopRequest:
    group: str
    topic: str
    queue_id: int
    max_nums: int
    invisible_time: int
    poll_time: int
    born_time: int
    init_mode: int
    order: bool
    attempt_id: str | None
    sub: SubscriptionData


@dataclass(slots=True)
class _QueuePop:
    topic: str
    queue_id: int
    start_offset: int
    msgs: list[MessageExt] = field(default_factory=list)
    order_count: int = 0


@dataclass(slots=True)
class _PopResult:
    pop_time: int
    revive_qid: int
    queues: list[_QueuePop] = field(default_factory=list)
    rest: int = 0
    outcomes: list[PutOutcome] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(q.msgs) for q in self.queues)


def _bad(code: int, remark: str) -> RemotingError:
    return RemotingError(code, remark)


class PopProcessor:
    def __init__(self, broker: Broker) -> None:
        self._b = broker
        self._sub_cache: dict[tuple[str, str], SubscriptionData] = {}
        self._rotation = 0

    # --- POP_MESSAGE -------------------------------------------------------------------
    def pop(self, conn: RemotingConnection, cmd: RemotingCommand) -> HandlerResult:
        req = self._pop_request(cmd)
        result = self._pop_all(req)
        if result.count:
            return self._answer(cmd, req, result)
        if req.poll_time > 0:
            return self._poll(cmd, req, time.monotonic() + req.poll_time / 1000)
        return self._not_found(cmd, req, result)

    def _pop_request(self, cmd: RemotingCommand) -> PopRequest:
        b = self._b
        group = req_str(cmd, "consumerGroup")
        topic = req_str(cmd, "topic")
        queue_id = req_int(cmd, "queueId")
        max_nums = req_int(cmd, "maxMsgNums")
        invisible = req_int(cmd, "invisibleTime")
        poll_time = get_int(cmd, "pollTime", 0) or 0
        born_time = get_int(cmd, "bornTime", 0) or 0
        if not t.is_readable(b.config.broker_permission):
            raise _bad(
                ResponseCode.NO_PERMISSION, f"the broker[{b.address}] pop message is forbidden"
            )
        if not 0 < max_nums <= MAX_POP_NUMS:
            raise _bad(
                ResponseCode.INVALID_PARAMETER,
                f"the broker[{b.address}] pop message's num {max_nums} is not in [1, 32]",
            )
        if not 0 < invisible <= MAX_INVISIBLE_MS or poll_time < 0:
            raise _bad(
                ResponseCode.INVALID_PARAMETER,
                f"invisibleTime must be in (0, {MAX_INVISIBLE_MS}] ms, pollTime >= 0",
            )
        if born_time > 0 and b.clock_ms() - born_time - poll_time > _EXPIRED_SLACK_MS:
            raise _bad(
                ResponseCode.POLLING_TIMEOUT,
                f"the broker[{b.address}] pop message is timeout too much",
            )
        topic_cfg = b.topic_config.get(topic)
        if topic_cfg is None:
            raise _bad(
                ResponseCode.TOPIC_NOT_EXIST, f"topic[{topic}] not exist, apply first please!"
            )
        if not t.is_readable(topic_cfg.perm):
            raise _bad(
                ResponseCode.NO_PERMISSION, f"the topic[{topic}] peeking message is forbidden"
            )
        if queue_id < -1 or queue_id >= topic_cfg.read_queue_nums:
            raise _bad(
                ResponseCode.INVALID_PARAMETER,
                f"queueId[{queue_id}] is illegal, topic:[{topic}] "
                f"topicConfig.readQueueNums:[{topic_cfg.read_queue_nums}]",
            )
        self._check_group(group)
        if not b.pop.serving:
            raise _bad(
                ResponseCode.SERVICE_NOT_AVAILABLE,
                f"the broker[{b.address}] is not the master: pop needs one",
            )
        exp_type = (get_str(cmd, "expType") or "TAG").upper()
        if exp_type != "TAG":
            raise _bad(
                ResponseCode.SUBSCRIPTION_PARSE_FAILED,
                f"expression type {exp_type} is not supported yet",
            )
        return PopRequest(
            group,
            topic,
            queue_id,
            max_nums,
            invisible,
            poll_time,
            born_time,
            get_int(cmd, "initMode", INIT_MODE_MIN) or INIT_MODE_MIN,
            get_bool(cmd, "order"),
            get_str(cmd, "attemptId") or None,
            self._subscription(topic, get_str(cmd, "exp")),
        )

    def _check_group(self, group: str) -> None:
        group_cfg = self._b.subscription_groups.find_or_create(group)
        if group_cfg is None:
            raise _bad(
                ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST,
                f"subscription group [{group}] does not exist",
            )
        if not group_cfg.consume_enable:
            raise _bad(ResponseCode.NO_PERMISSION, f"subscription group no permission, {group}")

    def _subscription(self, topic: str, expr: str | None) -> SubscriptionData:
        key = (topic, expr or "*")
        sub = self._sub_cache.get(key)
        if sub is None:
            if len(self._sub_cache) >= _SUB_CACHE_LIMIT:
                self._sub_cache.clear()
            sub = self._sub_cache[key] = build_subscription(topic, expr, 0, "TAG")
        return sub

    def _queues(self, req: PopRequest) -> list[tuple[str, int]]:
        b = self._b
        self._rotation += 1
        if req.queue_id >= 0:
            normal = [(req.topic, req.queue_id)]
        else:
            n = b.topic_config.get(req.topic).read_queue_nums  # type: ignore[union-attr]
            normal = [(req.topic, (self._rotation + i) % n) for i in range(n)]
        if req.order:
            return normal  # FIFO redelivers in place, never through the retry topic
        retry_name = pop_retry_topic(req.topic, req.group)
        retry_cfg = b.topic_config.get(retry_name)
        retry = [(retry_name, q) for q in range(retry_cfg.read_queue_nums)] if retry_cfg else []
        return retry + normal if self._rotation % _RETRY_FIRST_EVERY == 0 else normal + retry

    def _pop_all(self, req: PopRequest) -> _PopResult:
        """Synchronous on purpose (see the module docstring)."""
        pop = self._b.pop
        result = _PopResult(
            self._b.clock_ms(), ORDER_REVIVE_QID if req.order else pop.next_revive_qid()
        )
        for topic, queue_id in self._queues(req):
            want = req.max_nums - result.count
            if want <= 0:
                break
            self._pop_queue(req, topic, queue_id, want, result)
        return result

    def _start_offset(self, req: PopRequest, topic: str, queue_id: int) -> int:
        store, pop = self._b.store, self._b.pop
        offset = pop.offset(req.group, topic, queue_id)
        if offset < 0:
            retry = topic != req.topic
            if retry or req.init_mode == INIT_MODE_MIN:
                offset = store.min_offset(topic, queue_id)
            else:
                offset = store.max_offset(topic, queue_id)
            pop.commit(req.group, topic, queue_id, offset)
        return max(offset, store.min_offset(topic, queue_id))

    def _pop_queue(
        self, req: PopRequest, topic: str, queue_id: int, want: int, result: _PopResult
    ) -> None:
        b, pop = self._b, self._b.pop
        order_key = (topic, req.group, queue_id)
        if req.order and pop.order.blocked(order_key, result.pop_time, req.attempt_id):
            return
        offset = self._start_offset(req, topic, queue_id)
        sub = req.sub
        code_filter = None if sub.match_all else sub.matches_code
        got = b.store.get(topic, queue_id, offset, want, _ALL, code_filter)
        if got.status in _OFFSET_MOVED and got.next_begin_offset != offset:
            offset = got.next_begin_offset  # outside the queue (files removed): follow it
            pop.commit(req.group, topic, queue_id, offset)
            got = b.store.get(topic, queue_id, offset, want, _ALL, code_filter)
        msgs: list[MessageExt] = []
        for record in got.records:
            try:
                msg, _ = decode_record(record)
            except MessageDecodeError as e:
                # skipped for good (the offset moves past it): say so
                log.error("%s/%d: an unreadable record is skipped by pop: %s", topic, queue_id, e)
                continue
            if sub.match_all or sub.matches_tags(msg.tags):  # hash collisions drop here
                msgs.append(msg)
        next_offset = max(got.next_begin_offset, offset)
        result.rest += max(0, got.max_offset - next_offset)
        if not msgs:
            if next_offset != offset:
                pop.commit(req.group, topic, queue_id, next_offset)  # all filtered out
            return
        offsets = [m.queue_offset for m in msgs]
        queue_pop = _QueuePop(topic, queue_id, offset, msgs)
        if req.order:
            queue_pop.order_count = pop.order.popped(
                order_key, offsets, next_offset, result.pop_time, req.invisible_time, req.attempt_id
            )
        else:
            ck = CheckPoint(
                topic,
                req.group,
                queue_id,
                offset,
                result.pop_time,
                req.invisible_time,
                [o - offset for o in offsets],
                b.config.broker_name,
            )
            outcome = pop.put_record(result.revive_qid, ck)
            if not outcome.ok:
                code, remark = put_status_code(outcome.status, outcome.remark)
                raise _bad(code, f"writing the pop checkpoint failed: {remark}")
            result.outcomes.append(outcome)
            pop.commit(req.group, topic, queue_id, next_offset)
        result.queues.append(queue_pop)

    def _headers(self, req: PopRequest, result: _PopResult) -> dict[str, str]:
        return {
            "popTime": str(result.pop_time),
            "invisibleTime": str(req.invisible_time),
            "reviveQid": str(result.revive_qid),
            "restNum": str(result.rest),
        }

    def _not_found(
        self, cmd: RemotingCommand, req: PopRequest, result: _PopResult
    ) -> RemotingCommand:
        return cmd.make_response(
            ResponseCode.PULL_NOT_FOUND, "no new message", self._headers(req, result)
        )

    def _answer(
        self, cmd: RemotingCommand, req: PopRequest, result: _PopResult
    ) -> RemotingCommand | Awaitable[RemotingCommand]:
        broker_name = self._b.config.broker_name
        header = self._headers(req, result)
        starts, msg_offsets, counts, records = [], [], [], []
        for q in result.queues:
            topic_type = topic_type_of(q.topic)
            starts.append((topic_type, q.queue_id, q.start_offset))
            msg_offsets.append((topic_type, q.queue_id, [m.queue_offset for m in q.msgs]))
            counts.append((topic_type, q.queue_id, q.order_count))
            for m in q.msgs:
                m.properties[PROPERTY_POP_CK] = ExtraInfo(
                    q.start_offset,
                    result.pop_time,
                    req.invisible_time,
                    result.revive_qid,
                    topic_type,
                    broker_name,
                    q.queue_id,
                    m.queue_offset,
                ).format()
                if q.topic != req.topic:
                    m.topic = req.topic  # clients see a retried message under its topic
                records.append(encode_record(m))
        header["startOffsetInfo"] = format_start_offset_info(starts)
        header["msgOffsetInfo"] = format_msg_offset_info(msg_offsets)
        if req.order:
            header["orderCountInfo"] = format_order_count_info(counts)
        self._b.stats.get_total += result.count
        response = cmd.make_response(ResponseCode.SUCCESS, None, header, b"".join(records))
        if not result.outcomes:
            return response
        return self._when_durable(cmd, result.outcomes, response)

    async def _when_durable(
        self, cmd: RemotingCommand, outcomes: list[PutOutcome], response: RemotingCommand
    ) -> RemotingCommand:
        # the handles are good only once their checkpoints would survive a crash (a
        # failover): otherwise an unacked message could be lost for the group
        for outcome in outcomes:
            status, remark = await self._b.pop.durable(outcome)
            if status != "PUT_OK":
                code, text = put_status_code(status, remark)
                return cmd.make_response(code, text)
        return response

    async def _poll(
        self, cmd: RemotingCommand, req: PopRequest, deadline: float
    ) -> RemotingCommand:
        topics = (req.topic, pop_retry_topic(req.topic, req.group))
        while True:
            left = deadline - time.monotonic()
            woken = left > 0 and await self._b.pop.waiters.wait(topics, left)
            result = (
                self._pop_all(req) if self._b.pop.serving else _PopResult(self._b.clock_ms(), 0)
            )
            if result.count:
                answer = self._answer(cmd, req, result)
                return answer if isinstance(answer, RemotingCommand) else await answer
            if not woken:
                return self._not_found(cmd, req, result)

    # --- ACK_MESSAGE / CHANGE_MESSAGE_INVISIBLETIME -----------------------------------------
    def _handle(self, cmd: RemotingCommand) -> tuple[str, str, int, int, ExtraInfo]:
        """The validated (group, stored topic, queue, offset, handle) of an ack/change."""
        group = req_str(cmd, "consumerGroup")
        topic = req_str(cmd, "topic")
        queue_id = req_int(cmd, "queueId")
        offset = req_int(cmd, "offset")
        try:
            info = ExtraInfo.parse(get_str(cmd, "extraInfo"))
            topic = real_topic(topic, group, info.topic_type)
        except HandleError as exc:
            raise _bad(ResponseCode.INVALID_PARAMETER, f"bad receipt handle: {exc}") from None
        self._check_handle(info, queue_id)
        self._check_target(topic, queue_id, offset, offset)
        return group, topic, queue_id, offset, info

    def _check_handle(self, info: ExtraInfo, queue_id: int) -> None:
        name = self._b.config.broker_name
        if info.broker_name != name:
            raise _bad(
                ResponseCode.INVALID_PARAMETER,
                f"the receipt handle is from broker {info.broker_name}, this is {name}",
            )
        if not (info.is_order or 0 <= info.revive_qid < self._b.pop.revive_queue_num):
            raise _bad(ResponseCode.INVALID_PARAMETER, f"reviveQid {info.revive_qid} is illegal")
        if info.queue_id != queue_id:
            raise _bad(
                ResponseCode.INVALID_PARAMETER,
                f"the receipt handle is for queue {info.queue_id}, not {queue_id}",
            )

    def _check_target(self, topic: str, queue_id: int, low: int, high: int) -> None:
        b = self._b
        topic_cfg = b.topic_config.get(topic)
        if topic_cfg is None:
            raise _bad(
                ResponseCode.TOPIC_NOT_EXIST, f"topic[{topic}] not exist, apply first please!"
            )
        if queue_id < 0 or queue_id >= topic_cfg.read_queue_nums:
            raise _bad(
                ResponseCode.MESSAGE_ILLEGAL,
                f"queueId[{queue_id}] is illegal, topic:[{topic}] "
                f"topicConfig.readQueueNums:[{topic_cfg.read_queue_nums}]",
            )
        min_offset = b.store.min_offset(topic, queue_id)
        max_offset = b.store.max_offset(topic, queue_id)
        if low < min_offset or high >= max_offset:
            raise _bad(
                ResponseCode.NO_MESSAGE,
                f"offset is illegal, key:{topic}@{queue_id}, commit:{low}, "
                f"store:{min_offset}~{max_offset}",
            )

    def ack(self, conn: RemotingConnection, cmd: RemotingCommand) -> HandlerResult:
        group, topic, queue_id, offset, info = self._handle(cmd)
        if info.is_order:
            self._ack_orderly(group, topic, queue_id, offset)
            return cmd.make_response(ResponseCode.SUCCESS)
        record = AckRecord(
            topic, group, queue_id, info.ck_queue_offset, info.pop_time, [offset], info.broker_name
        )
        return self._put_then_answer(cmd, [(info.revive_qid, record)], None)

    def _ack_orderly(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        pop = self._b.pop
        commit_to = pop.order.ack((topic, group, queue_id), offset)
        if commit_to is None and offset == pop.offset(group, topic, queue_id):
            # no batch known (a restart forgot it): the in-order ack of the head
            commit_to = offset + 1
        if commit_to is not None and commit_to > pop.offset(group, topic, queue_id):
            pop.commit(group, topic, queue_id, commit_to)
        pop.waiters.notify(topic)  # the queue may be unblocked for waiting FIFO pops

    def change_invisible_time(
        self, conn: RemotingConnection, cmd: RemotingCommand
    ) -> HandlerResult:
        group, topic, queue_id, offset, info = self._handle(cmd)
        invisible = req_int(cmd, "invisibleTime")
        if invisible < 0:
            raise _bad(ResponseCode.INVALID_PARAMETER, "invisibleTime must not be negative")
        if invisible > MAX_INVISIBLE_MS:
            raise _bad(
                ResponseCode.INVALID_PARAMETER,
                f"invisibleTime must be at most {MAX_INVISIBLE_MS} ms",
            )
        now = self._b.clock_ms()
        if info.is_order:
            pop_time = self._b.pop.order.change_invisible(
                (topic, group, queue_id), offset, now + invisible
            )
            if pop_time is None:
                pop_time = info.pop_time
            header = {
                "popTime": str(pop_time),
                "invisibleTime": str(now + invisible - pop_time),
                "reviveQid": str(ORDER_REVIVE_QID),
            }
            return cmd.make_response(ResponseCode.SUCCESS, None, header)
        # a new checkpoint for this one message first, then the ack of the old one: a
        # crash in between redelivers (twice at worst), never loses it. Its pop time
        # must differ from the old one's: a checkpoint is known by (queue offset, pop
        # time), and a twin would be dropped as a duplicate, then struck by the ack
        now = max(now, info.pop_time + 1)
        new_ck = CheckPoint(
            topic, group, queue_id, offset, now, invisible, [0], self._b.config.broker_name
        )
        old_ack = AckRecord(
            topic, group, queue_id, info.ck_queue_offset, info.pop_time, [offset], info.broker_name
        )
        header = {
            "popTime": str(now),
            "invisibleTime": str(invisible),
            "reviveQid": str(info.revive_qid),
        }
        return self._put_then_answer(
            cmd, [(info.revive_qid, new_ck), (info.revive_qid, old_ack)], header
        )

    def _put_then_answer(
        self,
        cmd: RemotingCommand,
        records: list[tuple[int, CheckPoint | AckRecord]],
        header: dict[str, str] | None,
    ) -> HandlerResult:
        pop = self._b.pop
        outcomes = []
        for revive_qid, record in records:
            outcome = pop.put_record(revive_qid, record)
            if not outcome.ok:
                code, remark = put_status_code(outcome.status, outcome.remark)
                raise _bad(code, f"writing to the revive topic failed: {remark}")
            outcomes.append(outcome)
        response = cmd.make_response(ResponseCode.SUCCESS, None, header)
        if not outcomes:
            return response
        return self._when_durable(cmd, outcomes, response)

    # --- BATCH_ACK_MESSAGE -----------------------------------------------------------------
    def batch_ack(self, conn: RemotingConnection, cmd: RemotingCommand) -> HandlerResult:
        if not cmd.body:
            raise _bad(ResponseCode.NO_MESSAGE, "batch ack without acks")
        try:
            body = parse_batch_ack_body(cmd.body)
        except HandleError as exc:
            raise _bad(ResponseCode.INVALID_PARAMETER, str(exc)) from None
        if not body.acks:
            raise _bad(ResponseCode.NO_MESSAGE, "batch ack without acks")
        records: list[tuple[int, CheckPoint | AckRecord]] = []
        for ack in body.acks:
            records.extend(self._batch_entry(ack))
        return self._put_then_answer(cmd, records, None)

    def _batch_entry(self, ack: BatchAck) -> list[tuple[int, CheckPoint | AckRecord]]:
        b = self._b
        try:
            topic = real_topic(ack.topic, ack.group, ack.topic_type)
        except HandleError as exc:
            raise _bad(ResponseCode.INVALID_PARAMETER, str(exc)) from None
        is_order = ack.revive_qid == ORDER_REVIVE_QID
        if not (is_order or 0 <= ack.revive_qid < b.pop.revive_queue_num):
            raise _bad(ResponseCode.INVALID_PARAMETER, f"reviveQid {ack.revive_qid} is illegal")
        min_offset = b.store.min_offset(topic, ack.queue_id)
        max_offset = b.store.max_offset(topic, ack.queue_id)
        offsets = [o for o in ack.offsets() if min_offset <= o < max_offset]
        if is_order:
            for o in offsets:
                self._ack_orderly(ack.group, topic, ack.queue_id, o)
            return []
        if not offsets:
            return []
        return [
            (
                ack.revive_qid,
                AckRecord(
                    topic,
                    ack.group,
                    ack.queue_id,
                    ack.start_offset,
                    ack.pop_time,
                    offsets,
                    b.config.broker_name,
                ),
            )
        ]

    # --- NOTIFICATION ------------------------------------------------------------------------
    def notification(self, conn: RemotingConnection, cmd: RemotingCommand) -> HandlerResult:
        """Long-polls "would a pop find something?" without popping (answers hasMsg)."""
        group = req_str(cmd, "consumerGroup")
        topic = req_str(cmd, "topic")
        queue_id = get_int(cmd, "queueId", -1)
        poll_time = get_int(cmd, "pollTime", 0) or 0
        # a FIFO consumer asks about queues it may pop: one blocked by an unacked
        # batch has nothing for it (else it would spin on hasMsg=true)
        order = (cmd.ext_fields.get("order") or "").lower() == "true"
        topic_cfg = self._b.topic_config.get(topic)
        if topic_cfg is None:
            raise _bad(
                ResponseCode.TOPIC_NOT_EXIST, f"topic[{topic}] not exist, apply first please!"
            )
        self._check_group(group)
        queues = (
            [queue_id]
            if queue_id is not None and queue_id >= 0
            else range(topic_cfg.read_queue_nums)
        )
        targets = [(topic, q) for q in queues]
        retry = pop_retry_topic(topic, group)
        retry_cfg = self._b.topic_config.get(retry)
        if retry_cfg is not None:
            targets += [(retry, q) for q in range(retry_cfg.read_queue_nums)]
        if order:
            now = self._b.clock_ms()
            blocked = self._b.pop.order.blocked
            targets = [(tp, q) for tp, q in targets if not blocked((tp, group, q), now, None)]
        if self._has_message(group, targets) or poll_time <= 0:
            return self._notify_answer(cmd, self._has_message(group, targets))
        return self._notify_poll(cmd, group, (topic, retry), targets, poll_time)

    def _has_message(self, group: str, targets: list[tuple[str, int]]) -> bool:
        store, pop = self._b.store, self._b.pop
        for topic, q in targets:
            offset = pop.offset(group, topic, q)
            if offset < 0:
                offset = store.min_offset(topic, q)
            if offset < store.max_offset(topic, q):
                return True
        return False

    async def _notify_poll(
        self,
        cmd: RemotingCommand,
        group: str,
        topics: tuple[str, ...],
        targets: list[tuple[str, int]],
        poll_ms: int,
    ) -> RemotingCommand:
        deadline = time.monotonic() + poll_ms / 1000
        while True:
            left = deadline - time.monotonic()
            woken = left > 0 and await self._b.pop.waiters.wait(topics, left)
            has = self._has_message(group, targets)
            if has or not woken:
                return self._notify_answer(cmd, has)

    @staticmethod
    def _notify_answer(cmd: RemotingCommand, has: bool) -> RemotingCommand:
        return cmd.make_response(ResponseCode.SUCCESS, None, {"hasMsg": "true" if has else "false"})


def register_pop_processors(broker: Broker, d: Dispatcher) -> None:
    pop = PopProcessor(broker)
    d.register(RequestCode.POP_MESSAGE, pop.pop)
    d.register(RequestCode.ACK_MESSAGE, pop.ack)
    d.register(RequestCode.CHANGE_MESSAGE_INVISIBLETIME, pop.change_invisible_time)
    d.register(RequestCode.BATCH_ACK_MESSAGE, pop.batch_ack)
    d.register(RequestCode.NOTIFICATION, pop.notification)
