"""AdminClient: the mqadmin operations over the remoting protocol."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from ledgermq.client import broker_api
from ledgermq.client.errors import MQBrokerError, MQClientError
from ledgermq.client.instance import ClientInstance, check_response
from ledgermq.client.lifecycle import Startable
from ledgermq.client.message import MessageExt, MessageQueue
from ledgermq.client.route import TopicRoute
from ledgermq.common import fastjson
from ledgermq.common.message import PROPERTY_UNIQ_KEY, parse_offset_msg_id
from ledgermq.common.route_data import BrokerData
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode

TOOLS_GROUP = "TOOLS_CONSUMER"


@dataclass(slots=True)
class ClusterInfo:
    broker_addr_table: dict[str, BrokerData] = field(default_factory=dict)
    cluster_addr_table: dict[str, list[str]] = field(default_factory=dict)

    def masters(self, cluster: str | None = None) -> dict[str, str]:
        """brokerName -> master address, of one cluster or all."""
        names = (
            self.cluster_addr_table.get(cluster, [])
            if cluster is not None
            else list(self.broker_addr_table)
        )
        out: dict[str, str] = {}
        for name in names:
            bd = self.broker_addr_table.get(name)
            addr = bd.master_addr() if bd else None
            if addr:
                out[name] = addr
        return out


@dataclass(slots=True)
class TopicOffset:
    min_offset: int
    max_offset: int
    last_update_timestamp: int = 0


@dataclass(slots=True)
class OffsetWrapper:
    broker_offset: int
    consumer_offset: int
    pull_offset: int = 0
    last_timestamp: int = 0

    @property
    def lag(self) -> int:
        return max(0, self.broker_offset - self.consumer_offset)


@dataclass(slots=True)
class ConsumeStats:
    offset_table: dict[MessageQueue, OffsetWrapper] = field(default_factory=dict)
    consume_tps: float = 0.0

    @property
    def diff_total(self) -> int:
        return sum(o.lag for o in self.offset_table.values())


def parse_properties_text(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def _mq_key(key: Any) -> MessageQueue | None:
    return key if isinstance(key, MessageQueue) else None


class AdminClient(Startable):
    def __init__(
        self,
        namesrv_addr: str | list[str],
        *,
        timeout: float = 5.0,
        instance: ClientInstance | None = None,
    ) -> None:
        self._given = instance
        self.namesrv_addr = namesrv_addr
        self.timeout = timeout
        self._instance: ClientInstance | None = None

    @property
    def instance(self) -> ClientInstance:
        if self._instance is None:
            raise MQClientError("admin client is not started")
        return self._instance

    async def start(self) -> None:
        if self._instance is None:
            inst = self._given or ClientInstance(self.namesrv_addr, request_timeout=self.timeout)
            await inst.start()
            self._instance = inst

    async def shutdown(self) -> None:
        if self._instance is not None:
            await self._instance.shutdown()
            self._instance = None

    # helpers ------------------------------------------------------------------------------
    async def _ns(self, code: int, ext: dict[str, str] | None = None) -> RemotingCommand:
        cmd = RemotingCommand(code=code, ext_fields=ext or {})
        return check_response(await self.instance.invoke_namesrv(cmd, self.timeout), "namesrv")

    async def _ns_all(self, code: int, ext: dict[str, str]) -> None:
        """Sends to every NameServer (writes must reach all of them)."""
        errors: list[str] = []
        for addr in self.instance.namesrv_addrs:
            cmd = RemotingCommand(code=code, ext_fields=dict(ext))
            try:
                await self.instance.invoke_ok(addr, cmd, self.timeout)
            except MQClientError as exc:
                errors.append(f"{addr}: {exc}")
        if len(errors) == len(self.instance.namesrv_addrs):
            raise MQClientError("; ".join(errors))

    async def _broker(
        self, addr: str, code: int, ext: dict[str, str] | None = None, body: bytes = b""
    ) -> RemotingCommand:
        cmd = RemotingCommand(code=code, ext_fields=ext or {}, body=body)
        return await self.instance.invoke_ok(addr, cmd, self.timeout)

    async def _topic_masters(self, topic: str) -> dict[str, str]:
        route = await self.topic_route(topic)
        return {bd.broker_name: addr for bd in route.broker_datas if (addr := bd.master_addr())}

    # NameServer ---------------------------------------------------------------------------
    async def cluster_info(self) -> ClusterInfo:
        resp = await self._ns(RequestCode.GET_BROKER_CLUSTER_INFO)
        raw = fastjson.loads(resp.body) or {}
        return ClusterInfo(
            {
                str(k): BrokerData.from_json(v)
                for k, v in (raw.get("brokerAddrTable") or {}).items()
            },
            {str(k): sorted(v) for k, v in (raw.get("clusterAddrTable") or {}).items()},
        )

    async def topic_route(self, topic: str) -> TopicRoute:
        route = await self.instance.fetch_route(topic)
        if route is None:
            raise MQBrokerError(ResponseCode.TOPIC_NOT_EXIST, f"no route for {topic}")
        return route

    async def topic_list(self) -> list[str]:
        resp = await self._ns(RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER)
        return sorted((fastjson.loads(resp.body) or {}).get("topicList") or [])

    async def get_kv_config(self, namespace: str, key: str) -> str | None:
        cmd = RemotingCommand(
            code=RequestCode.GET_KV_CONFIG, ext_fields={"namespace": namespace, "key": key}
        )
        resp = await self.instance.invoke_namesrv(cmd, self.timeout)
        if resp.code == ResponseCode.QUERY_NOT_FOUND:
            return None
        return check_response(resp).ext_fields.get("value")

    async def put_kv_config(self, namespace: str, key: str, value: str) -> None:
        await self._ns_all(
            RequestCode.PUT_KV_CONFIG, {"namespace": namespace, "key": key, "value": value}
        )

    async def delete_kv_config(self, namespace: str, key: str) -> None:
        await self._ns_all(RequestCode.DELETE_KV_CONFIG, {"namespace": namespace, "key": key})

    async def kv_list(self, namespace: str) -> dict[str, str]:
        cmd = RemotingCommand(
            code=RequestCode.GET_KVLIST_BY_NAMESPACE, ext_fields={"namespace": namespace}
        )
        resp = await self.instance.invoke_namesrv(cmd, self.timeout)
        if resp.code == ResponseCode.QUERY_NOT_FOUND:
            return {}
        check_response(resp)
        return dict((fastjson.loads(resp.body) or {}).get("table") or {})

    # topics -------------------------------------------------------------------------------
    async def create_topic(
        self,
        topic: str,
        *,
        broker_addr: str | None = None,
        cluster: str | None = None,
        read_queue_nums: int = 8,
        write_queue_nums: int = 8,
        perm: int = 6,
        order: bool = False,
        topic_filter_type: str = "SINGLE_TAG",
        attributes: dict[str, str] | None = None,
    ) -> list[str]:
        """UPDATE_AND_CREATE_TOPIC on one broker or on every master of a cluster.

        Returns the broker addresses that accepted it.
        """
        if broker_addr is None:
            info = await self.cluster_info()
            if cluster is not None and cluster not in info.cluster_addr_table:
                raise MQClientError(f"cluster {cluster!r} not found")
            addrs = sorted(info.masters(cluster).values())
        else:
            addrs = [broker_addr]
        if not addrs:
            raise MQClientError("no broker to create the topic on")
        ext = {
            "topic": topic,
            "defaultTopic": "TBW102",
            "readQueueNums": str(read_queue_nums),
            "writeQueueNums": str(write_queue_nums),
            "perm": str(perm),
            "topicFilterType": topic_filter_type,
            "topicSysFlag": "0",
            "order": "true" if order else "false",
        }
        if attributes:
            ext["attributes"] = ",".join(f"+{k}={v}" for k, v in attributes.items())
        await asyncio.gather(
            *(self._broker(a, RequestCode.UPDATE_AND_CREATE_TOPIC, dict(ext)) for a in addrs)
        )
        return addrs

    async def delete_topic(self, topic: str, *, cluster: str | None = None) -> None:
        """Deletes on the brokers (215) and then on every NameServer (216)."""
        info = await self.cluster_info()
        addrs = set(info.masters(cluster).values())
        try:
            addrs |= set((await self._topic_masters(topic)).values())
        except MQBrokerError:
            pass
        for addr in sorted(addrs):
            await self._broker(addr, RequestCode.DELETE_TOPIC_IN_BROKER, {"topic": topic})
        ext = {"topic": topic}
        if cluster is not None:
            ext["clusterName"] = cluster
        await self._ns_all(RequestCode.DELETE_TOPIC_IN_NAMESRV, ext)
        self.instance.routes.pop(topic, None)

    async def topic_stats(self, topic: str) -> dict[MessageQueue, TopicOffset]:
        out: dict[MessageQueue, TopicOffset] = {}
        for addr in (await self._topic_masters(topic)).values():
            resp = await self._broker(addr, RequestCode.GET_TOPIC_STATS_INFO, {"topic": topic})
            table = (fastjson.loads(resp.body) or {}).get("offsetTable") or {}
            for k, v in table.items():
                mq = _mq_key(k)
                if mq is not None:
                    out[mq] = TopicOffset(
                        int(v.get("minOffset", 0)),
                        int(v.get("maxOffset", 0)),
                        int(v.get("lastUpdateTimestamp", 0)),
                    )
        return dict(sorted(out.items()))

    # consumers ----------------------------------------------------------------------------
    async def _group_brokers(self, group: str, topic: str | None) -> list[str]:
        for t in (topic, f"%RETRY%{group}"):
            if t is None:
                continue
            try:
                return sorted((await self._topic_masters(t)).values())
            except MQBrokerError:
                continue
        return sorted((await self.cluster_info()).masters().values())

    async def consume_stats(self, group: str, topic: str | None = None) -> ConsumeStats:
        stats = ConsumeStats()
        ext = {"consumerGroup": group}
        if topic is not None:
            ext["topic"] = topic
        for addr in await self._group_brokers(group, topic):
            resp = await self._broker(addr, RequestCode.GET_CONSUME_STATS, dict(ext))
            raw = fastjson.loads(resp.body) or {}
            stats.consume_tps += float(raw.get("consumeTps") or 0)
            for k, v in (raw.get("offsetTable") or {}).items():
                mq = _mq_key(k)
                if mq is not None:
                    stats.offset_table[mq] = OffsetWrapper(
                        int(v.get("brokerOffset", 0)),
                        int(v.get("consumerOffset", 0)),
                        int(v.get("pullOffset", 0)),
                        int(v.get("lastTimestamp", 0)),
                    )
        stats.offset_table = dict(sorted(stats.offset_table.items()))
        return stats

    async def consumer_connection(self, group: str) -> dict[str, Any]:
        last: Exception | None = None
        for addr in await self._group_brokers(group, None):
            try:
                resp = await self._broker(
                    addr, RequestCode.GET_CONSUMER_CONNECTION_LIST, {"consumerGroup": group}
                )
            except MQBrokerError as exc:
                last = exc
                continue
            return fastjson.loads(resp.body) or {}
        raise last or MQClientError(f"no broker knows consumer group {group!r}")

    async def consumer_ids(self, group: str, topic: str | None = None) -> list[str]:
        addrs = await self._group_brokers(group, topic)
        if not addrs:
            return []
        return await broker_api.consumer_ids(self.instance, addrs[0], group)

    async def consumer_running_info(
        self, group: str, client_id: str, *, jstack: bool = False
    ) -> dict[str, Any]:
        """GET_CONSUMER_RUNNING_INFO via a broker, which forwards it to the client."""
        conn = await self.consumer_connection(group)
        del conn  # only proves the group is online somewhere
        last: Exception | None = None
        for addr in await self._group_brokers(group, None):
            ext = {
                "consumerGroup": group,
                "clientId": client_id,
                "jstackEnable": "true" if jstack else "false",
            }
            try:
                resp = await self._broker(addr, RequestCode.GET_CONSUMER_RUNNING_INFO, ext)
            except MQClientError as exc:
                last = exc
                continue
            return fastjson.loads(resp.body) or {}
        raise last or MQClientError(f"no broker reached client {client_id}")

    async def reset_offset_by_time(
        self, group: str, topic: str, timestamp_ms: int, *, force: bool = True
    ) -> dict[MessageQueue, int]:
        """INVOKE_BROKER_TO_RESET_OFFSET on every master of the topic."""
        out: dict[MessageQueue, int] = {}
        ext = {
            "topic": topic,
            "group": group,
            "timestamp": str(timestamp_ms),
            "isForce": "true" if force else "false",
        }
        for addr in (await self._topic_masters(topic)).values():
            resp = await self._broker(addr, RequestCode.INVOKE_BROKER_TO_RESET_OFFSET, dict(ext))
            table = (fastjson.loads(resp.body) or {}).get("offsetTable") or {}
            out.update({k: int(v) for k, v in table.items() if isinstance(k, MessageQueue)})
        return dict(sorted(out.items()))

    async def update_subscription_group(self, broker_addr: str, config: dict[str, Any]) -> None:
        await self._broker(
            broker_addr,
            RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
            body=fastjson.dumps(config),
        )

    # brokers ------------------------------------------------------------------------------
    async def broker_runtime_info(self, broker_addr: str) -> dict[str, str]:
        resp = await self._broker(broker_addr, RequestCode.GET_BROKER_RUNTIME_INFO)
        return dict((fastjson.loads(resp.body) or {}).get("table") or {})

    async def broker_config(self, broker_addr: str) -> dict[str, str]:
        resp = await self._broker(broker_addr, RequestCode.GET_BROKER_CONFIG)
        return parse_properties_text(resp.body.decode("utf-8", "replace"))

    async def update_broker_config(self, broker_addr: str, props: dict[str, str]) -> None:
        body = "".join(f"{k}={v}\n" for k, v in props.items()).encode()
        await self._broker(broker_addr, RequestCode.UPDATE_BROKER_CONFIG, body=body)

    # messages -----------------------------------------------------------------------------
    async def view_message(self, offset_msg_id: str) -> MessageExt:
        """By offsetMsgId: the id itself names the broker address and commit log offset."""
        ip, port, offset = parse_offset_msg_id(offset_msg_id)
        resp = await self._broker(
            f"{ip}:{port}", RequestCode.VIEW_MESSAGE_BY_ID, {"offset": str(offset)}
        )
        msgs = broker_api.decode_pulled(resp.body, 0, 0)
        if not msgs:
            raise MQClientError(f"message {offset_msg_id} not found")
        m = msgs[0]
        m.properties.pop("MIN_OFFSET", None)
        m.properties.pop("MAX_OFFSET", None)
        return m

    async def query_message_by_key(
        self,
        topic: str,
        key: str,
        *,
        max_num: int = 32,
        begin_ms: int = 0,
        end_ms: int | None = None,
        unique_key: bool = False,
    ) -> list[MessageExt]:
        """QUERY_MESSAGE on every master of the topic; results merged."""
        ext = {
            "topic": topic,
            "key": key,
            "maxNum": str(max_num),
            "beginTimestamp": str(begin_ms),
            "endTimestamp": str(end_ms if end_ms is not None else int(time.time() * 1000) + 1000),
            "_UNIQUE_KEY_QUERY": "true" if unique_key else "false",
        }
        out: list[MessageExt] = []
        for addr in (await self._topic_masters(topic)).values():
            cmd = RemotingCommand(code=RequestCode.QUERY_MESSAGE, ext_fields=dict(ext))
            resp = await self.instance.invoke(addr, cmd, self.timeout)
            if resp.code == ResponseCode.QUERY_NOT_FOUND:
                continue
            check_response(resp, addr)
            for m in broker_api.decode_pulled(resp.body, 0, 0):
                m.properties.pop("MIN_OFFSET", None)
                m.properties.pop("MAX_OFFSET", None)
                if m.topic != topic:
                    continue
                if unique_key:
                    if m.properties.get(PROPERTY_UNIQ_KEY) != key:
                        continue
                elif key not in m.keys:
                    continue
                out.append(m)
        out.sort(key=lambda m: m.store_timestamp)
        return out[:max_num]

    async def query_message_by_unique_key(self, topic: str, uniq_key: str) -> MessageExt:
        found = await self.query_message_by_key(topic, uniq_key, unique_key=True, max_num=32)
        if not found:
            raise MQClientError(f"message with UNIQ_KEY {uniq_key} not found in {topic}")
        return found[0]

    async def query_message_by_queue_offset(self, mq: MessageQueue, offset: int) -> MessageExt:
        addr = await self.instance.broker_addr(mq.broker_name, mq.topic, master_only=False)
        result = await broker_api.pull(
            self.instance,
            addr,
            group=TOOLS_GROUP,
            mq=mq,
            offset=offset,
            max_nums=1,
            sys_flag=broker_api.PULL_SUBSCRIPTION,
            commit_offset=0,
            suspend_ms=0,
            subscription="*",
            sub_version=0,
            timeout=self.timeout,
        )
        for m in result.msgs:
            if m.queue_offset == offset:
                return m
        raise MQClientError(f"no message at offset {offset} of {mq} (code {result.code})")

    async def max_offset(self, mq: MessageQueue) -> int:
        addr = await self.instance.broker_addr(mq.broker_name, mq.topic, master_only=False)
        return await broker_api.get_max_offset(self.instance, addr, mq)

    async def min_offset(self, mq: MessageQueue) -> int:
        addr = await self.instance.broker_addr(mq.broker_name, mq.topic, master_only=False)
        return await broker_api.get_min_offset(self.instance, addr, mq)

    async def search_offset(self, mq: MessageQueue, timestamp_ms: int) -> int:
        addr = await self.instance.broker_addr(mq.broker_name, mq.topic, master_only=False)
        return await broker_api.search_offset(self.instance, addr, mq, timestamp_ms)
