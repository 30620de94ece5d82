"""The client instance shared by producers and consumers of one client id.

It owns the remoting connections, the NameServer failover, the topic route cache and the
heartbeats (Java's MQClientInstance). Producers and consumers register with it by group.
There is no process-wide registry: pass a `ClientRegistry` (or one `ClientInstance`) to
several clients to share connections, otherwise each client makes its own instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ledgermq.client.errors import MQBrokerError, MQClientError
from ledgermq.client.message import MessageQueue
from ledgermq.client.route import TopicRoute, parse_topic_route
from ledgermq.common import fastjson
from ledgermq.common.message import UniqueIdGenerator
from ledgermq.common.route_data import MASTER_ID
from ledgermq.remoting.client import RemotingClient, split_address
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.connection import Dispatcher, RemotingConnection
from ledgermq.remoting.errors import RemotingException

log = logging.getLogger(__name__)

TBW102 = "TBW102"


class ConsumerHooks(Protocol):
    """What the instance needs from a consumer registered with it."""

    group: str

    def heartbeat_data(self) -> dict[str, Any]: ...
    def subscribed_topics(self) -> set[str]: ...
    def on_consumer_ids_changed(self) -> None: ...
    def running_info(self) -> dict[str, Any]: ...
    def consumer_status(self, topic: str) -> dict[MessageQueue, int]: ...
    async def reset_offset(self, topic: str, offsets: dict[MessageQueue, int]) -> None: ...


class ProducerHooks(Protocol):
    group: str

    def published_topics(self) -> set[str]: ...


def split_namesrv(namesrv_addr: str | list[str]) -> list[str]:
    if isinstance(namesrv_addr, str):
        parts = namesrv_addr.replace(",", ";").split(";")
    else:
        parts = list(namesrv_addr)
    addrs = [p.strip() for p in parts if p.strip()]
    if not addrs:
        raise MQClientError("no NameServer address given")
    for a in addrs:
        split_address(a)  # validates host:port
    return addrs


def local_ip(towards: str) -> str:
    """The local address used to reach `towards`; no packet is sent (UDP connect)."""
    host, port = split_address(towards)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def check_response(resp: RemotingCommand, addr: str | None = None) -> RemotingCommand:
    if resp.code != ResponseCode.SUCCESS:
        raise MQBrokerError(resp.code, resp.remark, addr)
    return resp


class ClientInstance:
    def __init__(
        self,
        namesrv_addr: str | list[str],
        *,
        instance_name: str | None = None,
        client_ip: str | None = None,
        heartbeat_interval: float = 30.0,
        route_interval: float = 30.0,
        request_timeout: float = 3.0,
    ) -> None:
        self.namesrv_addrs = split_namesrv(namesrv_addr)
        self._ns_index = 0
        self.client_ip = client_ip or local_ip(self.namesrv_addrs[0])
        self.pid = os.getpid()
        # A random suffix by default: two consumers of one group in one process must
        # have different ids or the rebalance would hand both the same queues.
        self.instance_name = instance_name or secrets.token_hex(4)
        self.client_id = f"{self.client_ip}@{self.pid}@{self.instance_name}"
        self.heartbeat_interval = heartbeat_interval
        self.route_interval = route_interval
        self.request_timeout = request_timeout
        self.uniq_ids = UniqueIdGenerator(
            self.client_ip,
            self.pid,
            lambda: int(time.time() * 1000),
            instance_hash=secrets.randbits(32),
        )
        self.dispatcher = Dispatcher()
        self.dispatcher.register(RequestCode.NOTIFY_CONSUMER_IDS_CHANGED, self._on_ids_changed)
        self.dispatcher.register(RequestCode.GET_CONSUMER_RUNNING_INFO, self._on_running_info)
        self.dispatcher.register(RequestCode.RESET_CONSUMER_CLIENT_OFFSET, self._on_reset_offset)
        self.dispatcher.register(
            RequestCode.GET_CONSUMER_STATUS_FROM_CLIENT, self._on_consumer_status
        )
        self.remoting = RemotingClient(dispatcher=self.dispatcher)
        self.routes: dict[str, TopicRoute] = {}
        # topic -> when its route was fetched (a sequence number; higher is newer)
        self._route_fetched: dict[str, int] = {}
        self._route_seq = itertools.count(1)
        # brokerName -> {brokerId: addr}, the union of all cached routes.
        self.broker_addrs: dict[str, dict[int, str]] = {}
        self.producers: dict[str, ProducerHooks] = {}
        self.consumers: dict[str, ConsumerHooks] = {}
        self._route_locks: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._started = False
        self._closed = False
        self._users = 0

    # lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._users += 1
        if self._started:
            return
        self._started = True
        self._tasks = [
            asyncio.create_task(self._every(self.route_interval, self.refresh_all_routes)),
            asyncio.create_task(self._every(self.heartbeat_interval, self.send_heartbeat)),
        ]

    async def shutdown(self, *, force: bool = False) -> None:
        """Drops one user; the last one (or `force`) stops timers and closes connections."""
        self._users = max(0, self._users - 1)
        if (self._users and not force) or self._closed:
            return
        self._closed = True
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.dispatcher.cancel_all()
        await self.remoting.close()

    async def _every(self, interval: float, fn: Callable[[], Awaitable[Any]]) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            if self._stop.is_set():
                return
            try:
                await fn()
            except Exception:
                log.exception("periodic task %s failed", getattr(fn, "__name__", fn))

    # registration -------------------------------------------------------------------------
    def register_producer(self, producer: ProducerHooks) -> None:
        if producer.group in self.producers and self.producers[producer.group] is not producer:
            raise MQClientError(f"producer group {producer.group!r} already registered")
        self.producers[producer.group] = producer

    def register_consumer(self, consumer: ConsumerHooks) -> None:
        if consumer.group in self.consumers and self.consumers[consumer.group] is not consumer:
            raise MQClientError(f"consumer group {consumer.group!r} already registered")
        self.consumers[consumer.group] = consumer

    async def unregister(
        self, *, producer_group: str | None = None, consumer_group: str | None = None
    ) -> None:
        if producer_group is not None:
            self.producers.pop(producer_group, None)
        if consumer_group is not None:
            self.consumers.pop(consumer_group, None)
        ext = {"clientID": self.client_id}
        if producer_group is not None:
            ext["producerGroup"] = producer_group
        if consumer_group is not None:
            ext["consumerGroup"] = consumer_group

        async def one(addr: str) -> None:
            cmd = RemotingCommand(code=RequestCode.UNREGISTER_CLIENT, ext_fields=dict(ext))
            try:
                await self.remoting.invoke(addr, cmd, self.request_timeout)
            except RemotingException as exc:
                log.debug("unregister at %s failed: %s", addr, exc)

        await asyncio.gather(*(one(a) for a in self._heartbeat_targets()))

    # NameServer ---------------------------------------------------------------------------
    async def invoke_namesrv(
        self, cmd: RemotingCommand, timeout: float | None = None
    ) -> RemotingCommand:
        """Sends to the current NameServer, failing over to the next ones in order."""
        timeout = timeout or self.request_timeout
        last: Exception | None = None
        n = len(self.namesrv_addrs)
        for attempt in range(n):
            idx = (self._ns_index + attempt) % n
            addr = self.namesrv_addrs[idx]
            try:
                resp = await self.remoting.invoke(addr, _copy(cmd), timeout)
            except RemotingException as exc:
                last = exc
                log.debug("NameServer %s failed: %s", addr, exc)
                continue
            self._ns_index = idx
            return resp
        raise MQClientError(f"no NameServer answered ({last})")

    async def invoke(
        self, addr: str, cmd: RemotingCommand, timeout: float | None = None
    ) -> RemotingCommand:
        try:
            return await self.remoting.invoke(addr, cmd, timeout or self.request_timeout)
        except RemotingException as exc:
            raise MQClientError(f"request {cmd.code} to {addr} failed: {exc}") from exc

    async def invoke_ok(
        self, addr: str, cmd: RemotingCommand, timeout: float | None = None
    ) -> RemotingCommand:
        return check_response(await self.invoke(addr, cmd, timeout), addr)

    # routes -------------------------------------------------------------------------------
    async def fetch_route(self, topic: str) -> TopicRoute | None:
        """Asks the NameServer; None when the topic does not exist (17)."""
        cmd = RemotingCommand(
            code=RequestCode.GET_ROUTEINFO_BY_TOPIC,
            ext_fields={"topic": topic, "acceptStandardJsonOnly": "true"},
        )
        resp = await self.invoke_namesrv(cmd)
        if resp.code == ResponseCode.TOPIC_NOT_EXIST:
            return None
        check_response(resp, "namesrv")
        return parse_topic_route(resp.body)

    async def update_route(self, topic: str) -> TopicRoute | None:
        """Refreshes one topic; concurrent callers for the same topic share the request."""
        lock = self._route_locks.setdefault(topic, asyncio.Lock())
        async with lock:
            route = await self.fetch_route(topic)
            if route is None:
                return None
            self.routes[topic] = route
            self._route_fetched[topic] = next(self._route_seq)
            self._rebuild_broker_addrs()
            return route

    async def route(self, topic: str, *, refresh: bool = False) -> TopicRoute | None:
        if not refresh and topic in self.routes:
            return self.routes[topic]
        return await self.update_route(topic)

    def _rebuild_broker_addrs(self) -> None:
        table: dict[str, dict[int, str]] = {}
        # Oldest route first, so the newest one's ids win: after a failover a route
        # fetched before it (e.g. TBW102's, which is not refreshed periodically) must
        # not keep naming the old master as brokerId 0.
        order = sorted(self.routes, key=lambda t: self._route_fetched.get(t, 0))
        for route in (self.routes[t] for t in order):
            for bd in route.broker_datas:
                table.setdefault(bd.broker_name, {}).update(bd.broker_addrs)
        known = {a for addrs in self.broker_addrs.values() for a in addrs.values()}
        fresh = {a for addrs in table.values() for a in addrs.values()} - known
        self.broker_addrs = table
        if fresh and self._started and not self._closed and (self.consumers or self.producers):
            # A broker we never talked to must learn about our consumers now, not at
            # the next heartbeat tick, or its consumer list (and our rebalance) lags.
            task = asyncio.get_running_loop().create_task(self.send_heartbeat())
            self._tasks.append(task)
            task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    def interesting_topics(self) -> set[str]:
        topics: set[str] = set()
        for p in self.producers.values():
            topics |= p.published_topics()
        for c in self.consumers.values():
            topics |= c.subscribed_topics()
        return topics

    async def refresh_all_routes(self) -> None:
        topics = self.interesting_topics() | (set(self.routes) - {TBW102})
        for topic in sorted(topics):
            try:
                route = await self.fetch_route(topic)
            except MQClientError as exc:
                log.debug("route refresh for %s failed: %s", topic, exc)
                continue
            if route is not None:
                self.routes[topic] = route
                self._route_fetched[topic] = next(self._route_seq)
        self._rebuild_broker_addrs()

    async def subscribe_queues(self, topic: str, *, refresh: bool = False) -> list[MessageQueue]:
        route = await self.route(topic, refresh=refresh)
        return route.subscribe_queues(topic) if route else []

    def find_broker_addr(
        self, broker_name: str, *, master_only: bool = True, broker_id: int = MASTER_ID
    ) -> str | None:
        addrs = self.broker_addrs.get(broker_name) or {}
        if broker_id in addrs:
            return addrs[broker_id]
        if master_only:
            return addrs.get(MASTER_ID)
        return addrs[min(addrs)] if addrs else None

    async def broker_addr(
        self,
        broker_name: str,
        topic: str | None = None,
        *,
        master_only: bool = True,
        broker_id: int = MASTER_ID,
    ) -> str:
        addr = self.find_broker_addr(broker_name, master_only=master_only, broker_id=broker_id)
        if addr is None and topic is not None:
            await self.update_route(topic)
            addr = self.find_broker_addr(broker_name, master_only=master_only, broker_id=broker_id)
        if addr is None:
            raise MQClientError(
                f"broker {broker_name!r} has no {'master ' if master_only else ''}address"
            )
        return addr

    async def any_broker_of_topic(self, topic: str) -> str | None:
        route = await self.route(topic)
        if route is None:
            return None
        for bd in sorted(route.broker_datas, key=lambda b: b.broker_name):
            addr = bd.any_addr()
            if addr:
                return addr
        return None

    # heartbeats ---------------------------------------------------------------------------
    def heartbeat_data(self) -> dict[str, Any]:
        return {
            "clientID": self.client_id,
            "producerDataSet": [{"groupName": g} for g in sorted(self.producers)],
            "consumerDataSet": [c.heartbeat_data() for _, c in sorted(self.consumers.items())],
        }

    def _heartbeat_targets(self) -> list[str]:
        # Producers only talk to masters; consumers may pull from slaves too.
        targets: list[str] = []
        for addrs in self.broker_addrs.values():
            for bid, addr in sorted(addrs.items()):
                if bid == MASTER_ID or self.consumers:
                    targets.append(addr)
        return targets

    async def send_heartbeat(self) -> None:
        if not self.producers and not self.consumers:
            return
        body = fastjson.dumps(self.heartbeat_data())

        async def one(addr: str) -> None:
            cmd = RemotingCommand(code=RequestCode.HEART_BEAT, body=body)
            try:
                resp = await self.remoting.invoke(addr, cmd, self.request_timeout)
                if resp.code != ResponseCode.SUCCESS:
                    log.warning("heartbeat to %s refused: %s %s", addr, resp.code, resp.remark)
            except RemotingException as exc:
                log.debug("heartbeat to %s failed: %s", addr, exc)

        await asyncio.gather(*(one(a) for a in self._heartbeat_targets()))

    # server -> client requests ----------------------------------------------------------
    def _on_ids_changed(self, conn: RemotingConnection, cmd: RemotingCommand) -> None:
        consumer = self.consumers.get(cmd.ext_fields.get("consumerGroup", ""))
        if consumer is not None:
            consumer.on_consumer_ids_changed()
        return None

    def _on_running_info(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        consumer = self.consumers.get(cmd.ext_fields.get("consumerGroup", ""))
        if consumer is None:
            return cmd.make_response(ResponseCode.SYSTEM_ERROR, "consumer group not online here")
        return cmd.make_response(ResponseCode.SUCCESS, body=fastjson.dumps(consumer.running_info()))

    async def _on_reset_offset(
        self, conn: RemotingConnection, cmd: RemotingCommand
    ) -> RemotingCommand:
        group = cmd.ext_fields.get("group") or cmd.ext_fields.get("consumerGroup", "")
        topic = cmd.ext_fields.get("topic", "")
        consumer = self.consumers.get(group)
        if consumer is not None and cmd.body:
            raw = fastjson.loads(cmd.body) or {}
            table = raw.get("offsetTable") or {}
            offsets = {mq: int(v) for mq, v in table.items() if isinstance(mq, MessageQueue)}
            await consumer.reset_offset(topic, offsets)
        return cmd.make_response(ResponseCode.SUCCESS)

    def _on_consumer_status(
        self, conn: RemotingConnection, cmd: RemotingCommand
    ) -> RemotingCommand:
        consumer = self.consumers.get(cmd.ext_fields.get("group", ""))
        table = consumer.consumer_status(cmd.ext_fields.get("topic", "")) if consumer else {}
        return cmd.make_response(
            ResponseCode.SUCCESS, body=fastjson.dumps({"messageQueueTable": table})
        )


def _copy(cmd: RemotingCommand) -> RemotingCommand:
    # A retried command needs a fresh opaque; copy so the caller's object stays untouched.
    return RemotingCommand(
        code=cmd.code, ext_fields=dict(cmd.ext_fields), body=cmd.body, remark=cmd.remark
    )


class ClientRegistry:
    """Shares one ClientInstance per (NameServer list, instance name) among clients.

    Java does this with a JVM-wide singleton; here it is an object you pass around.
    """

    def __init__(self) -> None:
        self._instances: dict[tuple[tuple[str, ...], str], ClientInstance] = {}
        # Two registries in one process must not produce the same client id.
        self._token = secrets.token_hex(3)

    def get(
        self, namesrv_addr: str | list[str], instance_name: str = "DEFAULT", **kwargs: Any
    ) -> ClientInstance:
        key = (tuple(split_namesrv(namesrv_addr)), instance_name)
        inst = self._instances.get(key)
        if inst is None or inst._closed:
            inst = ClientInstance(
                namesrv_addr, instance_name=f"{instance_name}-{self._token}", **kwargs
            )
            self._instances[key] = inst
        return inst
