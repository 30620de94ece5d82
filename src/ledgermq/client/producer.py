"""Producer: SEND_MESSAGE_V2 / SEND_BATCH_MESSAGE with Java's queue choice and retries."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from ledgermq.client.accumulator import (
    DEFAULT_BATCH_MAX_BYTES,
    BatchKey,
    HeldSend,
    SendAccumulator,
)
from ledgermq.client.errors import MQBrokerError, MQClientError
from ledgermq.client.instance import TBW102, ClientInstance, ClientRegistry
from ledgermq.client.lifecycle import InstanceClient
from ledgermq.client.message import Message, MessageQueue, SendResult, SendStatus
from ledgermq.client.route import TopicRoute
from ledgermq.common.message import (
    BATCH_ITEM_BASE_SIZE,
    MAX_PROPERTIES_LENGTH,
    PROPERTY_DELAY,
    PROPERTY_KEYS,
    PROPERTY_TAGS,
    PROPERTY_TIMER_DELAY_SEC,
    PROPERTY_TIMER_DELIVER_MS,
    PROPERTY_TRAN_MSG,
    PROPERTY_UNIQ_KEY,
    PROPERTY_WAIT,
    SYSFLAG_COMPRESSED,
    encode_batch,
    encode_batch_encoded,
    encode_properties,
    java_string_hash,
)
from ledgermq.remoting.codec import RemotingCommand, SharedFields, json_string
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.errors import RemotingException

log = logging.getLogger(__name__)

DEFAULT_TOPIC_QUEUE_NUMS = 4
# Codes after which Java tries another broker (PROTOCOL.md 2.1); 13 is final.
RETRY_CODES = frozenset(
    {
        ResponseCode.TOPIC_NOT_EXIST,
        ResponseCode.SERVICE_NOT_AVAILABLE,
        ResponseCode.SYSTEM_ERROR,
        ResponseCode.NO_PERMISSION,
    }
)
_STATUS_BY_CODE = {
    ResponseCode.SUCCESS: SendStatus.SEND_OK,
    ResponseCode.FLUSH_DISK_TIMEOUT: SendStatus.FLUSH_DISK_TIMEOUT,
    ResponseCode.FLUSH_SLAVE_TIMEOUT: SendStatus.FLUSH_SLAVE_TIMEOUT,
    ResponseCode.SLAVE_NOT_AVAILABLE: SendStatus.SLAVE_NOT_AVAILABLE,
}

Selector = Callable[[list[MessageQueue], Message, Any], MessageQueue]
# A message with one of these cannot travel in a batch (the broker stores a batch's
# messages at once, in one queue, as plain messages).
_UNBATCHABLE_PROPERTIES = (
    PROPERTY_DELAY,
    PROPERTY_TIMER_DELIVER_MS,
    PROPERTY_TIMER_DELAY_SEC,
    PROPERTY_TRAN_MSG,
)


def select_by_hash(key: str | int | None = None) -> Selector:
    """An ordered-message selector: the same key always lands on the same queue.

    With `key=None` the `arg` passed to `send` is hashed instead (Java's
    SelectMessageQueueByHash). Strings hash like Java's String.hashCode.
    """

    def select(queues: list[MessageQueue], msg: Message, arg: Any) -> MessageQueue:
        k = key if key is not None else arg
        h = java_string_hash(k) if isinstance(k, str) else hash(k)
        return queues[abs(h) % len(queues)]

    return select


def message_properties(msg: Message, uniq_id: str | None) -> dict[str, str]:
    props = dict(msg.properties or {})
    if msg.tags:
        props[PROPERTY_TAGS] = msg.tags
    keys = msg.keys_text()
    if keys:
        props[PROPERTY_KEYS] = keys
    if msg.delay_level > 0:
        props[PROPERTY_DELAY] = str(msg.delay_level)
    # Java's Message constructor sets WAIT=true (wait for the store to persist).
    props.setdefault(PROPERTY_WAIT, "true")
    if uniq_id is not None:
        props.setdefault(PROPERTY_UNIQ_KEY, uniq_id)
    return props


def build_send_header(
    *,
    group: str,
    mq: MessageQueue,
    sys_flag: int,
    born_timestamp: int,
    flag: int,
    properties: dict[str, str],
    batch: bool = False,
    reconsume_times: int = 0,
    max_reconsume_times: int | None = None,
    default_topic: str = TBW102,
    default_topic_queue_nums: int = DEFAULT_TOPIC_QUEUE_NUMS,
) -> SharedFields:
    """SEND_MESSAGE_V2 header: SendMessageRequestHeader under one-letter keys (read-only).

    Every send makes one, so its JSON is rendered here from the fixed layout instead of
    by the general encoder (about 1 us less per send)."""
    props = encode_properties(properties)
    queue_nums = int(default_topic_queue_nums)
    queue_id = int(mq.queue_id)
    sys_flag = int(sys_flag)
    born_timestamp = int(born_timestamp)
    flag = int(flag)
    reconsume_times = int(reconsume_times)
    batch_text = "true" if batch else "false"
    header = {
        "a": group,
        "b": mq.topic,
        "c": default_topic,
        "d": str(queue_nums),
        "e": str(queue_id),
        "f": str(sys_flag),
        "g": str(born_timestamp),
        "h": str(flag),
        "i": props,
        "j": str(reconsume_times),
        "k": "false",
        "m": batch_text,
        "n": mq.broker_name,
    }
    text = (
        f'{{"a":{json_string(group)},"b":{json_string(mq.topic)},'
        f'"c":{json_string(default_topic)},"d":"{queue_nums}","e":"{queue_id}",'
        f'"f":"{sys_flag}","g":"{born_timestamp}","h":"{flag}","i":{json_string(props)},'
        f'"j":"{reconsume_times}","k":"false","m":"{batch_text}",'
        f'"n":{json_string(mq.broker_name)}'
    )
    if max_reconsume_times is not None:
        header["l"] = str(int(max_reconsume_times))
        text += f',"l":"{header["l"]}"'
    return SharedFields.prerendered(header, text + "}")


def _retryable(resp: RemotingCommand, addr: str) -> MQBrokerError:
    """A send's error reply: raised unless another broker may take the message."""
    error = MQBrokerError(resp.code, resp.remark, addr)
    if resp.code not in RETRY_CODES:
        raise error
    return error


def parse_send_response(
    resp: RemotingCommand, mq: MessageQueue, uniq_id: str, addr: str
) -> SendResult:
    status = _STATUS_BY_CODE.get(resp.code)  # type: ignore[call-overload]
    if status is None:
        raise MQBrokerError(resp.code, resp.remark, addr)
    ext = resp.ext_fields
    get = ext.get
    queue_id = get("queueId")
    if queue_id is not None and int(queue_id) != mq.queue_id:
        mq = MessageQueue(mq.topic, mq.broker_name, int(queue_id))
    return SendResult(
        status,
        uniq_id,
        get("msgId", ""),
        mq,
        int(get("queueOffset", "-1")),
        get("transactionId"),
        get("MSG_REGION"),
        # a reply's fields are its own (decoded for it), unless shared and read-only
        ext if type(ext) is dict else dict(ext),
    )


class Producer(InstanceClient):
    ROLE = "producer"

    def __init__(
        self,
        group: str,
        namesrv_addr: str | list[str],
        *,
        send_timeout: float = 3.0,
        retry_times: int = 2,
        compress_over: int = 4096,
        max_message_size: int = 4 * 1024 * 1024,
        default_topic_queue_nums: int = DEFAULT_TOPIC_QUEUE_NUMS,
        instance: ClientInstance | None = None,
        registry: ClientRegistry | None = None,
        instance_name: str | None = None,
        auto_batch: bool = False,
        batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES,
        batch_max_delay_ms: float = 0.0,
        total_batch_max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        """`auto_batch` (Java: autoBatch) sends single sends that meet within
        `batch_max_delay_ms` (0: within one event-loop iteration) as one batch request
        of at most `batch_max_bytes`; each send still gets its own SendResult. See
        client/accumulator.py for what is batched."""
        if not group:
            raise MQClientError("producer group must not be empty")
        self.group = group
        self.namesrv_addr = namesrv_addr
        self.send_timeout = send_timeout
        self.retry_times = retry_times
        self.compress_over = compress_over
        self.max_message_size = max_message_size
        self.default_topic_queue_nums = default_topic_queue_nums
        self._given_instance = instance
        self._registry = registry
        self._instance_name = instance_name
        self._instance: ClientInstance | None = None
        # Topic -> queues we may write to, and a rotating index per topic.
        # Topic -> (the instance's route object the queues were derived from, queues).
        # When the instance's periodic refresh replaces the route, the queues are
        # derived again, so a topic that grows (or is auto-created) is seen in 30 s.
        self._publish: dict[str, tuple[TopicRoute | None, list[MessageQueue]]] = {}
        self._index: dict[str, int] = {}
        self._inflight: set[asyncio.Task[Any]] = set()
        self._accumulator = (
            SendAccumulator(
                self._send_held,
                max_bytes=batch_max_bytes,
                max_delay_ms=batch_max_delay_ms,
                total_max_bytes=total_batch_max_bytes,
            )
            if auto_batch
            else None
        )

    # lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._instance is not None:
            return
        inst = self._acquire_instance()
        inst.register_producer(self)
        await inst.start()
        self._instance = inst
        await inst.send_heartbeat()

    async def shutdown(self) -> None:
        inst = self._instance
        if inst is None:
            return
        if self._accumulator is not None:
            await self._accumulator.drain()
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)
        await inst.unregister(producer_group=self.group)
        await inst.shutdown()
        self._instance = None

    def published_topics(self) -> set[str]:
        return set(self._publish)

    # routing -----------------------------------------------------------------------------
    async def publish_queues(self, topic: str, *, refresh: bool = False) -> list[MessageQueue]:
        inst = self.instance
        route = inst.routes.get(topic)
        cached = self._publish.get(topic)
        if not refresh and cached is not None and cached[0] is route:
            return cached[1]
        if refresh or route is None:
            route = await inst.update_route(topic)
        queues = route.publish_queues(topic) if route else []
        if not queues:
            # Unknown topic: send to brokers that carry TBW102 so they auto-create it.
            default = await inst.update_route(TBW102)
            if default is not None:
                queues = default.publish_queues(topic, self.default_topic_queue_nums)
        if not queues:
            raise MQClientError(f"no route for topic {topic!r} (and no {TBW102} to create it)")
        self._publish[topic] = (route, queues)
        return queues

    def _quick_queue(self, topic: str) -> tuple[MessageQueue, Any, str] | None:
        """The next queue, its master's open connection and address, when all are at
        hand without waiting (else None: the general path fetches what is missing)."""
        inst = self._instance
        if inst is None:
            return None
        cached = self._publish.get(topic)
        if cached is None or cached[0] is not inst.routes.get(topic):
            return None
        before = self._index.get(topic)
        mq = self._pick(topic, cached[1], None)
        addr = inst.find_broker_addr(mq.broker_name)
        conn = inst.remoting.open_connection(addr) if addr else None
        if conn is None:
            # the loop connects and picks this queue again
            if before is None:
                del self._index[topic]
            else:
                self._index[topic] = before
            return None
        return mq, conn, addr  # type: ignore[return-value]

    def _pick(self, topic: str, queues: list[MessageQueue], avoid: str | None) -> MessageQueue:
        start = self._index.get(topic, -1) + 1
        n = len(queues)
        for i in range(n):
            mq = queues[(start + i) % n]
            if avoid is None or mq.broker_name != avoid:
                self._index[topic] = (start + i) % n
                return mq
        self._index[topic] = start % n
        return queues[start % n]

    # sending -----------------------------------------------------------------------------
    def _validate(self, msg: Message) -> None:
        if not msg.topic:
            raise MQClientError("message topic must not be empty")
        if not isinstance(msg.body, bytes | bytearray | memoryview):
            raise MQClientError("message body must be bytes")
        if not msg.body:
            raise MQClientError("message body must not be empty")
        if len(msg.body) > self.max_message_size:
            raise MQClientError(
                f"message body of {len(msg.body)} bytes exceeds "
                f"max_message_size {self.max_message_size}"
            )

    def _prepare(self, msg: Message) -> tuple[bytes, int, dict[str, str], str]:
        self._validate(msg)
        uniq = (msg.properties or {}).get(PROPERTY_UNIQ_KEY) or self.instance.uniq_ids.next_id()
        props = message_properties(msg, uniq)
        body = bytes(msg.body)
        sys_flag = 0
        if len(body) >= self.compress_over:
            body = zlib.compress(body, 5)
            sys_flag |= SYSFLAG_COMPRESSED
        return body, sys_flag, props, uniq

    def _command(
        self,
        mq: MessageQueue,
        body: bytes,
        sys_flag: int,
        flag: int,
        props: dict[str, str],
        *,
        batch: bool = False,
    ) -> RemotingCommand:
        header = build_send_header(
            group=self.group,
            mq=mq,
            sys_flag=sys_flag,
            born_timestamp=int(time.time() * 1000),
            flag=flag,
            properties=props,
            batch=batch,
            default_topic_queue_nums=self.default_topic_queue_nums,
        )
        code = RequestCode.SEND_BATCH_MESSAGE if batch else RequestCode.SEND_MESSAGE_V2
        return RemotingCommand(code=code, ext_fields=header, body=body)

    async def _send_to(
        self, mq: MessageQueue, cmd: RemotingCommand, uniq: str, timeout: float
    ) -> SendResult:
        addr = await self.instance.broker_addr(mq.broker_name, mq.topic)
        resp = await self.instance.invoke(addr, cmd, timeout)
        return parse_send_response(resp, mq, uniq, addr)

    async def send(
        self,
        msg: Message,
        *,
        queue: MessageQueue | None = None,
        selector: Selector | None = None,
        arg: Any = None,
        timeout: float | None = None,
    ) -> SendResult:
        """Sends and waits for the broker's answer.

        Without `queue`/`selector` it rotates over the topic's queues and retries up to
        `retry_times` more times on another broker after a retryable code or a transport
        error. With an explicit queue or selector (ordered messages) it sends once, since
        moving to another queue would break the order.
        """
        body, sys_flag, props, uniq = self._prepare(msg)
        if self._accumulator is not None and selector is None:
            held = self._hold(msg, body, sys_flag, props, uniq, queue, timeout)
            if held is not None:
                return await held
        return await self._send_prepared(
            msg, body, sys_flag, props, uniq, queue, selector, arg, timeout
        )

    # auto-batching -----------------------------------------------------------------------
    def _hold(
        self,
        msg: Message,
        body: bytes,
        sys_flag: int,
        props: dict[str, str],
        uniq: str,
        queue: MessageQueue | None,
        timeout: float | None,
    ) -> asyncio.Future[SendResult] | None:
        """Hands a send to the accumulator, or None when it must go on its own."""
        acc = self._accumulator
        assert acc is not None
        if sys_flag or msg.topic.startswith("%RETRY%") or msg.topic.startswith("%DLQ%"):
            return None  # a compressed body, or a consumer's re-send
        for name in _UNBATCHABLE_PROPERTIES:
            if name in props:
                return None
        encoded = encode_properties(props).encode()
        size = BATCH_ITEM_BASE_SIZE + len(body) + len(encoded)
        if len(encoded) > MAX_PROPERTIES_LENGTH or not acc.accepts(size):
            return None  # too big to share a request; the single send says why if bad
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.send_timeout)
        key = BatchKey(msg.topic, queue, props.get(PROPERTY_WAIT, "true") != "false")
        return acc.add(key, HeldSend(body, msg.flag, encoded, uniq, deadline, loop.create_future()))

    async def _send_held(self, key: BatchKey, sends: list[HeldSend]) -> None:
        """Sends one accumulated batch and settles each of its callers' futures."""
        try:
            left = min(s.deadline for s in sends) - asyncio.get_running_loop().time()
            if left <= 0:
                raise MQClientError(f"send to {key.topic!r} timed out")
            body = encode_batch_encoded((s.body, s.flag, s.properties) for s in sends)
            result = await self._send_prepared(
                Message(topic=key.topic, body=body),
                body,
                0,
                {PROPERTY_WAIT: "true" if key.wait_store_msg_ok else "false"},
                ",".join(s.uniq_id for s in sends),
                key.queue,
                None,
                None,
                left,
                batch=True,
            )
        except Exception as exc:
            for s in sends:
                if not s.future.done():
                    s.future.set_exception(exc)
            return
        offset_ids = result.offset_msg_id.split(",")
        if len(offset_ids) != len(sends):
            offset_ids = [result.offset_msg_id] * len(sends)
        for i, s in enumerate(sends):
            if not s.future.done():  # a caller may have been cancelled meanwhile
                s.future.set_result(
                    SendResult(
                        result.status,
                        s.uniq_id,
                        offset_ids[i],
                        result.message_queue,
                        result.queue_offset + i,
                        None,
                        result.region_id,
                        dict(result.extra),
                    )
                )

    async def _send_prepared(
        self,
        msg: Message,
        body: bytes,
        sys_flag: int,
        props: dict[str, str],
        uniq: str,
        queue: MessageQueue | None,
        selector: Selector | None,
        arg: Any,
        timeout: float | None,
        *,
        batch: bool = False,
    ) -> SendResult:
        deadline = asyncio.get_running_loop().time() + (timeout or self.send_timeout)

        def remaining() -> float:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise MQClientError(f"send to {msg.topic!r} timed out")
            return left

        if queue is not None or selector is not None:
            if queue is None:
                queues = await self.publish_queues(msg.topic)
                queue = selector(list(queues), msg, arg)  # type: ignore[misc]
            cmd = self._command(queue, body, sys_flag, msg.flag, props, batch=batch)
            return await self._send_to(queue, cmd, uniq, remaining())

        attempts = 1 + max(0, self.retry_times)
        last_broker: str | None = None
        last_exc: Exception | None = None
        first = 0
        quick = self._quick_queue(msg.topic)
        if quick is not None:
            # the hot path: route and connection cached, one future and no coroutine
            # layers; anything unusual falls through to the loop as its first failure
            mq, conn, addr = quick
            cmd = self._command(mq, body, sys_flag, msg.flag, props, batch=batch)
            try:
                resp = await conn.start_request(cmd, remaining())
            except RemotingException as exc:
                last_exc = MQClientError(f"request {cmd.code} to {addr} failed: {exc}")
            else:
                if resp.code in _STATUS_BY_CODE:
                    return parse_send_response(resp, mq, uniq, addr)
                last_exc = _retryable(resp, addr)
            last_broker, first = mq.broker_name, 1
        for attempt in range(first, attempts):
            queues = await self.publish_queues(
                msg.topic, refresh=attempt > 0 and last_exc is not None
            )
            mq = self._pick(msg.topic, queues, last_broker)
            cmd = self._command(mq, body, sys_flag, msg.flag, props, batch=batch)
            try:
                return await self._send_to(mq, cmd, uniq, remaining())
            except MQBrokerError as exc:
                if exc.code not in RETRY_CODES:
                    raise
                last_exc = exc
            except MQClientError as exc:
                if deadline <= asyncio.get_running_loop().time():
                    raise
                last_exc = exc
            last_broker = mq.broker_name
            log.debug("send to %s failed (attempt %d): %s", mq, attempt + 1, last_exc)
        assert last_exc is not None
        if isinstance(last_exc, MQBrokerError):
            raise last_exc
        raise MQClientError(f"send failed after {attempts} attempts: {last_exc}") from last_exc

    def send_async(
        self,
        msg: Message,
        *,
        queue: MessageQueue | None = None,
        selector: Selector | None = None,
        arg: Any = None,
        timeout: float | None = None,
    ) -> asyncio.Task[SendResult]:
        """Starts a send and returns its task; any number may be in flight."""
        # Prepare now so argument errors surface to the caller, not in the task.
        body, sys_flag, props, uniq = self._prepare(msg)
        held = (
            self._hold(msg, body, sys_flag, props, uniq, queue, timeout)
            if self._accumulator is not None and selector is None
            else None
        )
        task = asyncio.get_running_loop().create_task(
            self._await_held(held)
            if held is not None
            else self._send_prepared(
                msg, body, sys_flag, props, uniq, queue, selector, arg, timeout
            )
        )
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return task

    @staticmethod
    async def _await_held(held: asyncio.Future[SendResult]) -> SendResult:
        return await held

    async def send_oneway(
        self,
        msg: Message,
        *,
        queue: MessageQueue | None = None,
        selector: Selector | None = None,
        arg: Any = None,
    ) -> None:
        """Fire and forget: no reply, no retry."""
        body, sys_flag, props, _ = self._prepare(msg)
        queues = await self.publish_queues(msg.topic)
        if queue is None:
            queue = (
                selector(list(queues), msg, arg)
                if selector
                else self._pick(msg.topic, queues, None)
            )
        cmd = self._command(queue, body, sys_flag, msg.flag, props)
        addr = await self.instance.broker_addr(queue.broker_name, queue.topic)
        try:
            await self.instance.remoting.invoke_oneway(addr, cmd)
        except Exception as exc:
            raise MQClientError(f"oneway send to {addr} failed: {exc}") from exc

    async def send_batch(
        self,
        msgs: Sequence[Message],
        *,
        queue: MessageQueue | None = None,
        timeout: float | None = None,
    ) -> SendResult:
        """SEND_BATCH_MESSAGE: all messages must share a topic and have no delay."""
        if not msgs:
            raise MQClientError("batch is empty")
        topic = msgs[0].topic
        items: list[tuple[bytes, int, dict[str, str]]] = []
        uniqs: list[str] = []
        for m in msgs:
            self._validate(m)
            if m.topic != topic:
                raise MQClientError("all messages of a batch must have the same topic")
            if m.delay_level > 0:
                raise MQClientError("delayed messages cannot be batched")
            uniq = (m.properties or {}).get(PROPERTY_UNIQ_KEY) or self.instance.uniq_ids.next_id()
            uniqs.append(uniq)
            items.append((bytes(m.body), m.flag, message_properties(m, uniq)))
        body = encode_batch(items)
        if len(body) > self.max_message_size:
            raise MQClientError(f"batch of {len(body)} bytes exceeds max_message_size")
        carrier = Message(topic=topic, body=body)
        result = await self._send_prepared(
            carrier,
            body,
            0,
            {PROPERTY_WAIT: "true"},
            ",".join(uniqs),
            queue,
            None,
            None,
            timeout,
            batch=True,
        )
        return result
