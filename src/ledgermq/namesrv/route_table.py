"""The NameServer's route table (RocketMQ's RouteInfoManager) as a pure object.

Sans-I/O (DESIGN.md principle 1): no clock, no sockets. Every operation that depends on
time takes ``now_ms``; a broker's connection is an opaque ``channel`` token the driver
hands in at registration and gets back when the broker expires, so the driver can close
it. The asyncio driver is single-threaded, so the read-write lock of the Java original
is not needed: each method runs to completion before the next request is looked at.

Rules are PROTOCOL.md section 4.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ledgermq.common.route_data import (
    MASTER_ID,
    PERM_READ,
    PERM_WRITE,
    BrokerData,
    DataVersion,
    QueueData,
    TopicConfig,
    TopicRouteData,
)

__all__ = [
    "DEFAULT_BROKER_CHANNEL_EXPIRED_TIME",
    "BrokerAddrInfo",
    "BrokerLiveInfo",
    "BrokerRegistration",
    "ExpiredBroker",
    "RegisterResult",
    "RouteTable",
    "UnregisterRequest",
]

log = logging.getLogger(__name__)

DEFAULT_BROKER_CHANNEL_EXPIRED_TIME = 120_000


@dataclass(slots=True, frozen=True)
class BrokerAddrInfo:
    """Key of the live table: the same address may serve brokers of two clusters."""

    cluster: str
    addr: str


@dataclass(slots=True)
class BrokerLiveInfo:
    last_update_ms: int
    timeout_ms: int
    data_version: DataVersion
    ha_server_addr: str | None
    channel: Any = None


@dataclass(slots=True)
class BrokerRegistration:
    """Everything a REGISTER_BROKER request carries, already parsed."""

    cluster: str
    broker_addr: str
    broker_name: str
    broker_id: int
    ha_server_addr: str | None = None
    zone_name: str | None = None
    timeout_ms: int | None = None
    # None means an old broker that does not know about acting-master mode.
    enable_acting_master: bool | None = None
    topic_configs: dict[str, TopicConfig] = field(default_factory=dict)
    data_version: DataVersion = field(default_factory=DataVersion)
    filter_servers: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RegisterResult:
    ha_server_addr: str | None = None
    master_addr: str | None = None


@dataclass(slots=True, frozen=True)
class UnregisterRequest:
    cluster: str
    broker_addr: str
    broker_name: str
    broker_id: int


@dataclass(slots=True)
class ExpiredBroker:
    addr_info: BrokerAddrInfo
    channel: Any
    last_update_ms: int


# ---------------------------------------------------------------------------------


class RouteTable:
    def __init__(
        self,
        *,
        support_acting_master: bool = False,
        delete_topic_with_broker_registration: bool = False,
        default_timeout_ms: int = DEFAULT_BROKER_CHANNEL_EXPIRED_TIME,
    ) -> None:
        self.support_acting_master = support_acting_master
        self.delete_topic_with_broker_registration = delete_topic_with_broker_registration
        self.default_timeout_ms = default_timeout_ms
        self.topic_queue_table: dict[str, dict[str, QueueData]] = {}
        self.broker_addr_table: dict[str, BrokerData] = {}
        self.cluster_addr_table: dict[str, set[str]] = {}
        self.broker_live_table: dict[BrokerAddrInfo, BrokerLiveInfo] = {}
        self.filter_server_table: dict[BrokerAddrInfo, list[str]] = {}

    # -- registration ---------------------------------------------------------------

    def register_broker(
        self, reg: BrokerRegistration, now_ms: int, channel: Any = None
    ) -> RegisterResult | None:
        """Apply a REGISTER_BROKER. Returns None when the registration must be refused
        (answered with SYSTEM_ERROR), an empty result when a stale broker is ignored."""
        result = RegisterResult()
        name, addr, bid = reg.broker_name, reg.broker_addr, reg.broker_id
        # A one-topic registration (a broker announcing a single new topic) before the
        # broker ever registered fully would create a broker with a partial topic set.
        # Checked before touching any table so that a refusal leaves no trace.
        known = self.broker_addr_table.get(name)
        if (known is None or bid not in known.broker_addrs) and len(reg.topic_configs) == 1:
            log.warning(
                "single-topic registration from %s refused: %s[%d] has not registered yet",
                addr,
                name,
                bid,
            )
            return None
        self.cluster_addr_table.setdefault(reg.cluster, set()).add(name)

        broker_data = self.broker_addr_table.get(name)
        register_first = broker_data is None
        if broker_data is None:
            broker_data = BrokerData(reg.cluster, name)
            self.broker_addr_table[name] = broker_data
        old_version_broker = reg.enable_acting_master is None
        broker_data.enable_acting_master = bool(reg.enable_acting_master)
        broker_data.zone_name = reg.zone_name
        addrs = broker_data.broker_addrs

        # A slave promoted to master re-registers the same address under id 0: drop the
        # address from every other id first so it is never listed twice.
        for other_id in [i for i, a in addrs.items() if a == addr and i != bid]:
            del addrs[other_id]

        # Another address already holds this id: after a failover the old master may
        # still be registering. The one with the higher stateVersion wins.
        old_addr = addrs.get(bid)
        if old_addr is not None and old_addr != addr:
            old_live = self.broker_live_table.get(BrokerAddrInfo(reg.cluster, old_addr))
            if (
                old_live is not None
                and old_live.data_version.state_version > reg.data_version.state_version
            ):
                log.warning(
                    "registration of %s as %s[%d] rejected: stateVersion %d is older than %d of %s",
                    addr,
                    name,
                    bid,
                    reg.data_version.state_version,
                    old_live.data_version.state_version,
                    old_addr,
                )
                self.broker_live_table.pop(BrokerAddrInfo(reg.cluster, addr), None)
                return result

        previous = addrs.get(bid)
        addrs[bid] = addr
        register_first = register_first or not previous

        is_master = bid == MASTER_ID
        is_prime_slave = not old_version_broker and not is_master and bid == min(addrs)
        if is_master or is_prime_slave:
            self._update_queue_datas(reg, broker_data, register_first, is_prime_slave)

        key = BrokerAddrInfo(reg.cluster, addr)
        prev_live = self.broker_live_table.get(key)
        self.broker_live_table[key] = BrokerLiveInfo(
            last_update_ms=now_ms,
            timeout_ms=reg.timeout_ms if reg.timeout_ms else self.default_timeout_ms,
            data_version=reg.data_version,
            ha_server_addr=reg.ha_server_addr,
            channel=channel,
        )
        if prev_live is None:
            log.info(
                "new broker registered: %s %s[%d] at %s, HA %s",
                reg.cluster,
                name,
                bid,
                addr,
                reg.ha_server_addr,
            )
        if reg.filter_servers:
            self.filter_server_table[key] = list(reg.filter_servers)
        else:
            self.filter_server_table.pop(key, None)

        if not is_master:
            master_addr = addrs.get(MASTER_ID)
            if master_addr is not None:
                master_live = self.broker_live_table.get(BrokerAddrInfo(reg.cluster, master_addr))
                if master_live is not None:
                    result.ha_server_addr = master_live.ha_server_addr
                    result.master_addr = master_addr
        return result

    def _update_queue_datas(
        self,
        reg: BrokerRegistration,
        broker_data: BrokerData,
        register_first: bool,
        is_prime_slave: bool,
    ) -> None:
        name = reg.broker_name
        if self.delete_topic_with_broker_registration:
            for topic in self.topics_of_broker(name) - set(reg.topic_configs):
                self._remove_queue_data(topic, name)
        version_changed = self.is_broker_topic_config_changed(
            reg.cluster, reg.broker_addr, reg.data_version
        )
        for topic, config in reg.topic_configs.items():
            queues = self.topic_queue_table.get(topic)
            if not (register_first or version_changed or not queues or name not in queues):
                continue
            perm = config.perm
            if is_prime_slave and broker_data.enable_acting_master:
                # An acting master serves reads only: clients must not send to a slave.
                perm &= ~PERM_WRITE
            self._put_queue_data(
                topic,
                QueueData(
                    broker_name=name,
                    read_queue_nums=config.read_queue_nums,
                    write_queue_nums=config.write_queue_nums,
                    perm=perm,
                    topic_sys_flag=config.topic_sys_flag,
                ),
            )

    def _put_queue_data(self, topic: str, queue_data: QueueData) -> None:
        queues = self.topic_queue_table.setdefault(topic, {})
        existing = queues.get(queue_data.broker_name)
        if existing is None:
            log.debug("new topic registered: %s %s", topic, queue_data)
        elif existing != queue_data:
            log.debug("topic changed: %s %s -> %s", topic, existing, queue_data)
        queues[queue_data.broker_name] = queue_data

    def _remove_queue_data(self, topic: str, broker_name: str) -> None:
        queues = self.topic_queue_table.get(topic)
        if queues is None:
            return
        queues.pop(broker_name, None)
        if not queues:
            del self.topic_queue_table[topic]

    def topics_of_broker(self, broker_name: str) -> set[str]:
        return {t for t, q in self.topic_queue_table.items() if broker_name in q}

    # -- data version and liveness --------------------------------------------------

    def query_broker_topic_config(self, cluster: str, addr: str) -> DataVersion | None:
        live = self.broker_live_table.get(BrokerAddrInfo(cluster, addr))
        return live.data_version if live is not None else None

    def is_broker_topic_config_changed(
        self, cluster: str, addr: str, data_version: DataVersion
    ) -> bool:
        stored = self.query_broker_topic_config(cluster, addr)
        return stored is None or stored != data_version

    def update_broker_info_update_timestamp(self, cluster: str, addr: str, now_ms: int) -> bool:
        """QUERY_DATA_VERSION and BROKER_HEARTBEAT keep a broker alive."""
        live = self.broker_live_table.get(BrokerAddrInfo(cluster, addr))
        if live is None:
            return False
        live.last_update_ms = now_ms
        return True

    def scan_not_active(self, now_ms: int) -> list[ExpiredBroker]:
        """Unregister every broker silent for longer than its timeout and return them
        (the driver closes their channels)."""
        expired: list[ExpiredBroker] = []
        for key, live in list(self.broker_live_table.items()):
            if live.last_update_ms + live.timeout_ms < now_ms:
                log.warning(
                    "broker %s of cluster %s expired: silent for %d ms (timeout %d ms)",
                    key.addr,
                    key.cluster,
                    now_ms - live.last_update_ms,
                    live.timeout_ms,
                )
                expired.append(ExpiredBroker(key, live.channel, live.last_update_ms))
                self._destroy(key)
        return expired

    def on_channel_destroy(self, channel: Any) -> list[UnregisterRequest]:
        """The connection a broker registered on closed: unregister that broker."""
        keys = [k for k, v in self.broker_live_table.items() if v.channel is channel]
        requests: list[UnregisterRequest] = []
        for key in keys:
            requests.extend(self._destroy(key))
        return requests

    def _destroy(self, key: BrokerAddrInfo) -> list[UnregisterRequest]:
        self.broker_live_table.pop(key, None)
        requests = [
            UnregisterRequest(key.cluster, key.addr, bd.broker_name, bid)
            for bd in self.broker_addr_table.values()
            if bd.cluster == key.cluster
            for bid, a in bd.broker_addrs.items()
            if a == key.addr
        ]
        if requests:
            self.unregister_brokers(requests)
        else:
            self.filter_server_table.pop(key, None)
        return requests

    # -- unregistration -------------------------------------------------------------

    def unregister_broker(
        self, cluster: str, broker_addr: str, broker_name: str, broker_id: int
    ) -> None:
        self.unregister_brokers([UnregisterRequest(cluster, broker_addr, broker_name, broker_id)])

    def unregister_brokers(self, requests: Iterable[UnregisterRequest]) -> None:
        removed: set[str] = set()
        reduced: set[str] = set()
        for req in requests:
            key = BrokerAddrInfo(req.cluster, req.broker_addr)
            if self.broker_live_table.pop(key, None) is not None:
                log.info(
                    "broker unregistered: %s %s[%d] at %s",
                    req.cluster,
                    req.broker_name,
                    req.broker_id,
                    req.broker_addr,
                )
            self.filter_server_table.pop(key, None)
            broker_data = self.broker_addr_table.get(req.broker_name)
            remove_name = False
            if broker_data is not None:
                addrs = broker_data.broker_addrs
                for bid in [i for i, a in addrs.items() if a == req.broker_addr]:
                    del addrs[bid]
                if not addrs:
                    del self.broker_addr_table[req.broker_name]
                    remove_name = True
            if remove_name:
                names = self.cluster_addr_table.get(req.cluster)
                if names is not None:
                    names.discard(req.broker_name)
                    if not names:
                        del self.cluster_addr_table[req.cluster]
                removed.add(req.broker_name)
                reduced.discard(req.broker_name)
            elif req.broker_name not in removed:
                reduced.add(req.broker_name)
        self._clean_topics(removed, reduced)

    def _clean_topics(self, removed: set[str], reduced: set[str]) -> None:
        for topic in list(self.topic_queue_table):
            queues = self.topic_queue_table[topic]
            for name in removed:
                if queues.pop(name, None) is not None:
                    log.debug("removed %s's queues of topic %s", name, topic)
            if not queues:
                log.debug("topic %s has no queues left: removed", topic)
                del self.topic_queue_table[topic]
                continue
            for name in reduced:
                queue_data = queues.get(name)
                broker_data = self.broker_addr_table.get(name)
                if (
                    queue_data is not None
                    and broker_data is not None
                    and broker_data.enable_acting_master
                    and MASTER_ID not in broker_data.broker_addrs
                ):
                    # The master is gone; the surviving slaves must not take writes.
                    queue_data.perm &= ~PERM_WRITE

    # -- routes and listings --------------------------------------------------------

    def pickup_topic_route_data(self, topic: str) -> TopicRouteData | None:
        queues = self.topic_queue_table.get(topic)
        if not queues:
            return None
        queue_datas = [q.copy() for _, q in sorted(queues.items())]
        broker_datas: list[BrokerData] = []
        filter_servers: dict[str, list[str]] = {}
        for name in sorted(queues):
            broker_data = self.broker_addr_table.get(name)
            if broker_data is None:
                continue
            clone = broker_data.copy()
            broker_datas.append(clone)
            for addr in clone.broker_addrs.values():
                servers = self.filter_server_table.get(BrokerAddrInfo(clone.cluster, addr))
                if servers:
                    filter_servers[addr] = list(servers)
        if not broker_datas:
            return None
        if self.support_acting_master:
            self._present_acting_masters(broker_datas, queue_datas)
        return TopicRouteData(queue_datas, broker_datas, None, filter_servers)

    @staticmethod
    def _present_acting_masters(
        broker_datas: list[BrokerData], queue_datas: list[QueueData]
    ) -> None:
        # With no master left, the lowest-id slave is shown under id 0 (read-only
        # queues) so that clients keep consuming from it.
        by_name = {q.broker_name: q for q in queue_datas}
        for bd in broker_datas:
            addrs = bd.broker_addrs
            if not addrs or MASTER_ID in addrs or not bd.enable_acting_master:
                continue
            queue_data = by_name.get(bd.broker_name)
            if queue_data is not None and not queue_data.perm & PERM_WRITE:
                addrs[MASTER_ID] = addrs.pop(min(addrs))

    def cluster_info(self) -> dict[str, Any]:
        return {
            "brokerAddrTable": {n: bd.copy() for n, bd in self.broker_addr_table.items()},
            "clusterAddrTable": {c: set(names) for c, names in self.cluster_addr_table.items()},
        }

    def all_topics(self) -> list[str]:
        return sorted(self.topic_queue_table)

    def topics_by_cluster(self, cluster: str) -> list[str]:
        names = self.cluster_addr_table.get(cluster, set())
        return sorted(
            topic
            for topic, queues in self.topic_queue_table.items()
            if any(name in queues for name in names)
        )

    def broker_member_group(self, cluster: str, broker_name: str) -> dict[str, Any]:
        broker_data = self.broker_addr_table.get(broker_name)
        return {
            "brokerAddrs": dict(broker_data.broker_addrs) if broker_data else {},
            "brokerName": broker_name,
            "cluster": cluster,
        }

    # -- topic admin ----------------------------------------------------------------

    def delete_topic(self, topic: str, cluster: str | None = None) -> None:
        if not cluster:
            self.topic_queue_table.pop(topic, None)
            return
        for name in self.cluster_addr_table.get(cluster, set()):
            self._remove_queue_data(topic, name)

    def register_topic(self, topic: str, queue_datas: Iterable[QueueData]) -> bool:
        """REGISTER_TOPIC_IN_NAMESRV: refused (False) if a queue names an unknown broker."""
        queue_datas = list(queue_datas)
        if not queue_datas:
            return False
        unknown = [
            q.broker_name for q in queue_datas if q.broker_name not in self.broker_addr_table
        ]
        if unknown:
            log.warning("register topic %s refused: unknown brokers %s", topic, unknown)
            return False
        for queue_data in queue_datas:
            self._put_queue_data(topic, queue_data.copy())
        return True

    def wipe_write_perm_of_broker(self, broker_name: str) -> int:
        return self._operate_write_perm(broker_name, wipe=True)

    def add_write_perm_of_broker(self, broker_name: str) -> int:
        return self._operate_write_perm(broker_name, wipe=False)

    def _operate_write_perm(self, broker_name: str, *, wipe: bool) -> int:
        count = 0
        for queues in self.topic_queue_table.values():
            queue_data = queues.get(broker_name)
            if queue_data is None:
                continue
            if wipe:
                queue_data.perm &= ~PERM_WRITE
            else:
                queue_data.perm = PERM_READ | PERM_WRITE
            count += 1
        return count
