"""Remoting routes -> v2 route queues (pure).

Clients send every RPC but QueryRoute to `message_queues[].broker.endpoints`, so the
proxy puts its own address there: all traffic comes back through the proxy, which
picks the real broker and queue itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ledgermq.common.route_data import MASTER_ID, PERM_READ, PERM_WRITE, TopicRouteData
from ledgermq.proxy.protocol import definition_pb2 as pb

MESSAGE_TYPE_ATTRIBUTE = "message.type"
# What a topic without a `message.type` attribute accepts (our brokers do not check).
ALL_SENDABLE_TYPES = (pb.NORMAL, pb.FIFO, pb.DELAY, pb.TRANSACTION)
_TYPES_BY_ATTRIBUTE: dict[str, tuple[int, ...]] = {
    "NORMAL": (pb.NORMAL,),
    "FIFO": (pb.FIFO,),
    "DELAY": (pb.DELAY,),
    "TRANSACTION": (pb.TRANSACTION,),
    "MIXED": ALL_SENDABLE_TYPES,
    "UNSPECIFIED": ALL_SENDABLE_TYPES,
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def to_proto(self) -> pb.Endpoints:
        scheme = pb.IPv6 if ":" in self.host else pb.IPv4
        if scheme == pb.IPv4 and not _is_ipv4(self.host):
            scheme = pb.DOMAIN_NAME
        return pb.Endpoints(scheme=scheme, addresses=[pb.Address(host=self.host, port=self.port)])


def _is_ipv4(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def accept_message_types(attributes: dict[str, str] | None) -> tuple[int, ...]:
    raw = (attributes or {}).get(MESSAGE_TYPE_ATTRIBUTE, "").strip().upper()
    return _TYPES_BY_ATTRIBUTE.get(raw, ALL_SENDABLE_TYPES)


def permission_of(perm: int, *, readable: bool = True, writable: bool = True) -> int:
    r = bool(perm & PERM_READ) and readable
    w = bool(perm & PERM_WRITE) and writable
    if r and w:
        return pb.READ_WRITE
    if r:
        return pb.READ
    if w:
        return pb.WRITE
    return pb.NONE


def route_queues(
    topic: pb.Resource,
    route: TopicRouteData,
    accept_types: Iterable[int],
    endpoint: Endpoint,
) -> list[pb.MessageQueue]:
    """One v2 queue per remoting queue of each master, ids as on the broker.

    Queue i is readable if i < readQueueNums and writable if i < writeQueueNums (and
    the topic's perm allows it), so queue 0 is always present: the Node.js client
    only uses queues whose id equals the master id 0. Slaves are left out because
    every queue's endpoint is this proxy anyway. (The Java proxy numbers queues
    READ, then WRITE, then READ_WRITE; that only differs when the counts differ.)
    """
    accept = list(accept_types)
    endpoints = endpoint.to_proto()
    masters = {
        bd.broker_name for bd in route.broker_datas if bd.broker_addrs.get(MASTER_ID) is not None
    }
    out: list[pb.MessageQueue] = []
    for qd in sorted(route.queue_datas, key=lambda q: q.broker_name):
        if qd.broker_name not in masters:
            continue
        broker = pb.Broker(name=qd.broker_name, id=MASTER_ID, endpoints=endpoints)
        count = max(qd.read_queue_nums, qd.write_queue_nums, 1)
        for qid in range(count):
            perm = permission_of(
                qd.perm, readable=qid < qd.read_queue_nums, writable=qid < qd.write_queue_nums
            )
            out.append(
                pb.MessageQueue(
                    topic=topic,
                    id=qid,
                    permission=perm,
                    broker=broker,
                    accept_message_types=accept,
                )
            )
    return out


def assignment_queues(
    topic: pb.Resource, route: TopicRouteData, endpoint: Endpoint, *, fifo: bool
) -> list[pb.Assignment]:
    """QueryAssignment: one queue per readable master; id -1 means "POP from every
    queue of this broker" unless the group consumes in order (then one per queue)."""
    endpoints = endpoint.to_proto()
    masters = {
        bd.broker_name for bd in route.broker_datas if bd.broker_addrs.get(MASTER_ID) is not None
    }
    out: list[pb.Assignment] = []
    for qd in sorted(route.queue_datas, key=lambda q: q.broker_name):
        if qd.broker_name not in masters or not qd.perm & PERM_READ or qd.read_queue_nums <= 0:
            continue
        broker = pb.Broker(name=qd.broker_name, id=MASTER_ID, endpoints=endpoints)
        perm = permission_of(qd.perm)
        ids = range(qd.read_queue_nums) if fifo else (-1,)
        for qid in ids:
            mq = pb.MessageQueue(topic=topic, id=qid, permission=perm, broker=broker)
            out.append(pb.Assignment(message_queue=mq))
    return out
