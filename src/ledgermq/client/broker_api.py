"""Consumer-side broker requests shared by the push, lite-pull and admin clients."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

from ledgermq.client.errors import MQBrokerError, MQClientError
from ledgermq.client.instance import ClientInstance, check_response
from ledgermq.client.message import MessageExt, MessageQueue
from ledgermq.common import fastjson
from ledgermq.common.message import (
    PROPERTY_MAX_OFFSET,
    PROPERTY_MIN_OFFSET,
    SYSFLAG_COMPRESSED,
    decode_records,
)
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode

log = logging.getLogger(__name__)

# PULL_MESSAGE sysFlag bits (PROTOCOL.md 2.2).
PULL_COMMIT_OFFSET = 0x1
PULL_SUSPEND = 0x2
PULL_SUBSCRIPTION = 0x4
PULL_CLASS_FILTER = 0x8
PULL_LITE = 0x10


@dataclass(slots=True)
class PullResult:
    code: int
    next_begin_offset: int
    min_offset: int
    max_offset: int
    suggest_broker_id: int = 0
    msgs: list[MessageExt] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.code == ResponseCode.SUCCESS


def _i(ext: dict[str, str], key: str, default: int = 0) -> int:
    try:
        return int(ext.get(key, default))
    except ValueError:
        return default


def decode_pulled(body: bytes, min_offset: int, max_offset: int) -> list[MessageExt]:
    msgs = decode_records(body)
    for m in msgs:
        if m.sys_flag & SYSFLAG_COMPRESSED:
            try:
                m.body = zlib.decompress(m.body)
            except zlib.error:
                log.warning("message %s has the compressed flag but a bad body", m.offset_msg_id)
        m.properties[PROPERTY_MIN_OFFSET] = str(min_offset)
        m.properties[PROPERTY_MAX_OFFSET] = str(max_offset)
    return msgs


async def pull(
    inst: ClientInstance,
    addr: str,
    *,
    group: str,
    mq: MessageQueue,
    offset: int,
    max_nums: int,
    sys_flag: int,
    commit_offset: int,
    suspend_ms: int,
    subscription: str,
    sub_version: int,
    timeout: float,
    expression_type: str = "TAG",
    code: int = RequestCode.PULL_MESSAGE,
) -> PullResult:
    ext = {
        "consumerGroup": group,
        "topic": mq.topic,
        "queueId": str(mq.queue_id),
        "queueOffset": str(offset),
        "maxMsgNums": str(max_nums),
        "sysFlag": str(sys_flag),
        "commitOffset": str(commit_offset),
        "suspendTimeoutMillis": str(suspend_ms),
        "subscription": subscription,
        "subVersion": str(sub_version),
        "expressionType": expression_type,
        "bname": mq.broker_name,
    }
    resp = await inst.invoke(addr, RemotingCommand(code=code, ext_fields=ext), timeout)
    if resp.code not in (
        ResponseCode.SUCCESS,
        ResponseCode.PULL_NOT_FOUND,
        ResponseCode.PULL_RETRY_IMMEDIATELY,
        ResponseCode.PULL_OFFSET_MOVED,
    ):
        raise MQBrokerError(resp.code, resp.remark, addr)
    e = resp.ext_fields
    result = PullResult(
        code=resp.code,
        next_begin_offset=_i(e, "nextBeginOffset", offset),
        min_offset=_i(e, "minOffset"),
        max_offset=_i(e, "maxOffset"),
        suggest_broker_id=_i(e, "suggestWhichBrokerId"),
    )
    if resp.code == ResponseCode.SUCCESS and resp.body:
        result.msgs = decode_pulled(resp.body, result.min_offset, result.max_offset)
    return result


def _queue_ext(mq: MessageQueue) -> dict[str, str]:
    return {"topic": mq.topic, "queueId": str(mq.queue_id), "bname": mq.broker_name}


async def query_consumer_offset(
    inst: ClientInstance, addr: str, group: str, mq: MessageQueue
) -> int:
    """The stored offset, or -1 when the broker has none (22 QUERY_NOT_FOUND)."""
    ext = {"consumerGroup": group, **_queue_ext(mq)}
    resp = await inst.invoke(
        addr, RemotingCommand(code=RequestCode.QUERY_CONSUMER_OFFSET, ext_fields=ext)
    )
    if resp.code == ResponseCode.QUERY_NOT_FOUND:
        return -1
    check_response(resp, addr)
    return _i(resp.ext_fields, "offset", -1)


async def update_consumer_offset(
    inst: ClientInstance,
    addr: str,
    group: str,
    mq: MessageQueue,
    offset: int,
    *,
    oneway: bool = False,
) -> None:
    ext = {"consumerGroup": group, "commitOffset": str(offset), **_queue_ext(mq)}
    cmd = RemotingCommand(code=RequestCode.UPDATE_CONSUMER_OFFSET, ext_fields=ext)
    if oneway:
        try:
            await inst.remoting.invoke_oneway(addr, cmd)
        except Exception as exc:
            raise MQClientError(f"offset update to {addr} failed: {exc}") from exc
        return
    await inst.invoke_ok(addr, cmd)


async def get_max_offset(inst: ClientInstance, addr: str, mq: MessageQueue) -> int:
    ext = {**_queue_ext(mq), "committed": "true"}
    resp = await inst.invoke_ok(
        addr, RemotingCommand(code=RequestCode.GET_MAX_OFFSET, ext_fields=ext)
    )
    return _i(resp.ext_fields, "offset")


async def get_min_offset(inst: ClientInstance, addr: str, mq: MessageQueue) -> int:
    resp = await inst.invoke_ok(
        addr, RemotingCommand(code=RequestCode.GET_MIN_OFFSET, ext_fields=_queue_ext(mq))
    )
    return _i(resp.ext_fields, "offset")


async def search_offset(
    inst: ClientInstance, addr: str, mq: MessageQueue, timestamp_ms: int, boundary: str = "LOWER"
) -> int:
    ext = {**_queue_ext(mq), "timestamp": str(timestamp_ms), "boundaryType": boundary}
    resp = await inst.invoke_ok(
        addr, RemotingCommand(code=RequestCode.SEARCH_OFFSET_BY_TIMESTAMP, ext_fields=ext)
    )
    return _i(resp.ext_fields, "offset")


async def consumer_ids(inst: ClientInstance, addr: str, group: str) -> list[str]:
    resp = await inst.invoke_ok(
        addr,
        RemotingCommand(
            code=RequestCode.GET_CONSUMER_LIST_BY_GROUP, ext_fields={"consumerGroup": group}
        ),
    )
    body = fastjson.loads(resp.body) or {}
    return [str(c) for c in body.get("consumerIdList") or []]


async def send_back(
    inst: ClientInstance,
    addr: str,
    msg: MessageExt,
    group: str,
    delay_level: int,
    max_reconsume_times: int,
) -> None:
    """CONSUMER_SEND_MSG_BACK: the broker re-stores the message at `commit_log_offset`
    in the retry topic (or the DLQ when delay_level < 0 or retries are used up)."""
    ext = {
        "offset": str(msg.commit_log_offset),
        "group": group,
        "delayLevel": str(delay_level),
        "originMsgId": msg.msg_id,
        "originTopic": msg.topic,
        "unitMode": "false",
        "maxReconsumeTimes": str(max_reconsume_times),
    }
    await inst.invoke_ok(
        addr, RemotingCommand(code=RequestCode.CONSUMER_SEND_MSG_BACK, ext_fields=ext)
    )


def _lock_body(group: str, client_id: str, mqs: list[MessageQueue]) -> bytes:
    return fastjson.dumps(
        {
            "consumerGroup": group,
            "clientId": client_id,
            "onlyThisBroker": False,
            "mqSet": [mq.to_json() for mq in sorted(mqs)],
        }
    )


async def lock_batch(
    inst: ClientInstance, addr: str, group: str, mqs: list[MessageQueue]
) -> set[MessageQueue]:
    resp = await inst.invoke_ok(
        addr,
        RemotingCommand(
            code=RequestCode.LOCK_BATCH_MQ, body=_lock_body(group, inst.client_id, mqs)
        ),
    )
    body = fastjson.loads(resp.body) or {}
    return {MessageQueue.from_json(m) for m in body.get("lockOKMQSet") or []}


async def unlock_batch(
    inst: ClientInstance, addr: str, group: str, mqs: list[MessageQueue]
) -> None:
    await inst.invoke_ok(
        addr,
        RemotingCommand(
            code=RequestCode.UNLOCK_BATCH_MQ, body=_lock_body(group, inst.client_id, mqs)
        ),
    )
