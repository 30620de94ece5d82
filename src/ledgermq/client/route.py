"""The queue lists a client derives from a TopicRouteData (pure, no I/O).

The route types and their JSON forms are the shared ones in `ledgermq.common.route_data`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledgermq.common import fastjson
from ledgermq.common.message import MessageQueue
from ledgermq.common.route_data import PERM_READ, PERM_WRITE, BrokerData, TopicRouteData


@dataclass(slots=True)
class TopicRoute(TopicRouteData):
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


def parse_topic_route(body: bytes | str) -> TopicRoute:
    """Accepts standard JSON and fastjson's unquoted numeric keys (`{0:"ip:port"}`)."""
    return TopicRoute.from_json(fastjson.loads(body) or {})
