"""TopicRouteData parsing and the queue lists derived from it (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledgermq.client import jsonbody
from ledgermq.client.message import MessageQueue

PERM_READ = 4
PERM_WRITE = 2
MASTER_ID = 0


@dataclass(slots=True)
class QueueData:
    broker_name: str
    read_queue_nums: int
    write_queue_nums: int
    perm: int
    topic_sys_flag: int = 0


@dataclass(slots=True)
class BrokerData:
    cluster: str
    broker_name: str
    # Broker id -> "ip:port"; id 0 is the master.
    broker_addrs: dict[int, str]

    def master_addr(self) -> str | None:
        return self.broker_addrs.get(MASTER_ID)

    def any_addr(self) -> str | None:
        """The master if there is one, else the lowest-id slave (read-only access)."""
        if MASTER_ID in self.broker_addrs:
            return self.broker_addrs[MASTER_ID]
        return self.broker_addrs[min(self.broker_addrs)] if self.broker_addrs else None


@dataclass(slots=True)
class TopicRoute:
    queue_datas: list[QueueData] = field(default_factory=list)
    broker_datas: list[BrokerData] = field(default_factory=list)
    order_topic_conf: str | None = None

    def broker(self, name: str) -> BrokerData | None:
        for bd in self.broker_datas:
            if bd.broker_name == name:
                return bd
        return None

    def publish_queues(self, topic: str, limit_queue_nums: int | None = None) -> list[MessageQueue]:
        """Writable queues on brokers that have a master, in route order.

        `limit_queue_nums` caps each broker's queue count; that is how a producer uses the
        TBW102 route for a topic the broker will create on first send.
        """
        out: list[MessageQueue] = []
        for qd in sorted(self.queue_datas, key=lambda q: q.broker_name):
            if not qd.perm & PERM_WRITE:
                continue
            bd = self.broker(qd.broker_name)
            if bd is None or bd.master_addr() is None:
                continue
            n = qd.write_queue_nums
            if limit_queue_nums is not None:
                n = min(n, limit_queue_nums)
            out.extend(MessageQueue(topic, qd.broker_name, i) for i in range(n))
        return out

    def subscribe_queues(self, topic: str) -> list[MessageQueue]:
        out: list[MessageQueue] = []
        for qd in self.queue_datas:
            if qd.perm & PERM_READ:
                out.extend(
                    MessageQueue(topic, qd.broker_name, i) for i in range(qd.read_queue_nums)
                )
        return sorted(out)


def _int(value: Any, default: int = 0) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def parse_broker_data(obj: dict[str, Any]) -> BrokerData:
    addrs_raw = obj.get("brokerAddrs") or {}
    addrs = {_int(k): str(v) for k, v in addrs_raw.items()}
    return BrokerData(str(obj.get("cluster", "")), str(obj.get("brokerName", "")), addrs)


def parse_topic_route(body: bytes | str) -> TopicRoute:
    """Accepts standard JSON and fastjson's unquoted numeric keys (`{0:"ip:port"}`)."""
    obj = jsonbody.loads(body) or {}
    queue_datas = [
        QueueData(
            broker_name=str(q.get("brokerName", "")),
            read_queue_nums=_int(q.get("readQueueNums")),
            write_queue_nums=_int(q.get("writeQueueNums")),
            perm=_int(q.get("perm"), 6),
            topic_sys_flag=_int(q.get("topicSysFlag")),
        )
        for q in obj.get("queueDatas") or []
    ]
    broker_datas = [parse_broker_data(b) for b in obj.get("brokerDatas") or []]
    return TopicRoute(queue_datas, broker_datas, obj.get("orderTopicConf"))
