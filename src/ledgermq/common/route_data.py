"""Route data as it travels between NameServer, brokers and clients (PROTOCOL.md 3.5).

Shared by the NameServer (route table, registration bodies), the broker (its topic
table, DataVersions) and the client (routes). Field names on the wire are RocketMQ's
camelCase; ``to_json`` returns what `fastjson.encode` writes (keys sorted, None members
dropped) and ``from_json`` accepts either JSON dialect. Long-keyed maps use int keys so
the legacy form writes them bare.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from ledgermq.common.fastjson import long_keys

PERM_PRIORITY = 0x8
PERM_READ = 0x4
PERM_WRITE = 0x2
PERM_INHERIT = 0x1

# The broker id of a master in BrokerData.broker_addrs.
MASTER_ID = 0


def _int(value: Any, default: int = 0) -> int:
    if value is None or value == "":
        return default
    return int(value)


def _bool(value: Any, default: bool = False) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


# ---------------------------------------------------------------------------------
# Route data (JSON field names are RocketMQ's; `to_json` feeds fastjson.encode)


@dataclass(slots=True)
class DataVersion:
    state_version: int = 0
    timestamp: int = 0
    counter: int = 0

    def next_version(self, now_ms: int, state_version: int | None = None) -> None:
        self.timestamp = now_ms
        self.counter += 1
        if state_version is not None:
            self.state_version = state_version

    def to_json(self) -> dict[str, Any]:
        return {
            "counter": self.counter,
            "stateVersion": self.state_version,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> DataVersion:
        if not obj:
            return cls()
        return cls(
            state_version=_int(obj.get("stateVersion")),
            timestamp=_int(obj.get("timestamp")),
            counter=_int(obj.get("counter")),
        )


@dataclass(slots=True)
class TopicConfig:
    topic_name: str
    read_queue_nums: int = 16
    write_queue_nums: int = 16
    perm: int = PERM_READ | PERM_WRITE
    topic_filter_type: str = "SINGLE_TAG"
    topic_sys_flag: int = 0
    order: bool = False
    attributes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "attributes": dict(self.attributes),
            "order": self.order,
            "perm": self.perm,
            "readQueueNums": self.read_queue_nums,
            "topicFilterType": self.topic_filter_type,
            "topicName": self.topic_name,
            "topicSysFlag": self.topic_sys_flag,
            "writeQueueNums": self.write_queue_nums,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], name: str | None = None) -> TopicConfig:
        return cls(
            topic_name=str(obj.get("topicName") or name or ""),
            read_queue_nums=_int(obj.get("readQueueNums"), 16),
            write_queue_nums=_int(obj.get("writeQueueNums"), 16),
            perm=_int(obj.get("perm"), PERM_READ | PERM_WRITE),
            topic_filter_type=str(obj.get("topicFilterType") or "SINGLE_TAG"),
            topic_sys_flag=_int(obj.get("topicSysFlag")),
            order=_bool(obj.get("order")),
            attributes={str(k): str(v) for k, v in (obj.get("attributes") or {}).items()},
        )


@dataclass(slots=True)
class QueueData:
    broker_name: str
    read_queue_nums: int
    write_queue_nums: int
    perm: int
    topic_sys_flag: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "brokerName": self.broker_name,
            "perm": self.perm,
            "readQueueNums": self.read_queue_nums,
            "topicSysFlag": self.topic_sys_flag,
            "writeQueueNums": self.write_queue_nums,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> QueueData:
        return cls(
            broker_name=str(obj["brokerName"]),
            read_queue_nums=_int(obj.get("readQueueNums")),
            write_queue_nums=_int(obj.get("writeQueueNums")),
            perm=_int(obj.get("perm")),
            topic_sys_flag=_int(obj.get("topicSysFlag")),
        )

    def copy(self) -> QueueData:
        return QueueData(
            self.broker_name,
            self.read_queue_nums,
            self.write_queue_nums,
            self.perm,
            self.topic_sys_flag,
        )


@dataclass(slots=True)
class BrokerData:
    cluster: str
    broker_name: str
    # broker id -> "ip:port"; int keys so that fastjson writes them as Java Longs.
    broker_addrs: dict[int, str] = field(default_factory=dict)
    zone_name: str | None = None
    enable_acting_master: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "brokerAddrs": self.broker_addrs,
            "brokerName": self.broker_name,
            "cluster": self.cluster,
            "enableActingMaster": self.enable_acting_master,
            "zoneName": self.zone_name,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BrokerData:
        return cls(
            cluster=str(obj.get("cluster") or ""),
            broker_name=str(obj.get("brokerName") or ""),
            broker_addrs={k: str(v) for k, v in long_keys(obj.get("brokerAddrs")).items()},
            zone_name=obj.get("zoneName"),
            enable_acting_master=_bool(obj.get("enableActingMaster")),
        )

    def master_addr(self) -> str | None:
        return self.broker_addrs.get(MASTER_ID)

    def any_addr(self) -> str | None:
        """The master if there is one, else the lowest-id slave (read-only access)."""
        if MASTER_ID in self.broker_addrs:
            return self.broker_addrs[MASTER_ID]
        return self.broker_addrs[min(self.broker_addrs)] if self.broker_addrs else None

    def copy(self) -> BrokerData:
        return BrokerData(
            self.cluster,
            self.broker_name,
            dict(self.broker_addrs),
            self.zone_name,
            self.enable_acting_master,
        )


@dataclass(slots=True)
class TopicRouteData:
    queue_datas: list[QueueData]
    broker_datas: list[BrokerData]
    order_topic_conf: str | None = None
    filter_server_table: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        # topicQueueMappingByBroker is null (static topics are not supported), and
        # null members are omitted on the wire, as fastjson does.
        return {
            "brokerDatas": self.broker_datas,
            "filterServerTable": self.filter_server_table,
            "orderTopicConf": self.order_topic_conf,
            "queueDatas": self.queue_datas,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Self:
        return cls(
            queue_datas=[QueueData.from_json(q) for q in obj.get("queueDatas") or []],
            broker_datas=[BrokerData.from_json(b) for b in obj.get("brokerDatas") or []],
            order_topic_conf=obj.get("orderTopicConf"),
            filter_server_table={
                str(k): [str(a) for a in v or []]
                for k, v in (obj.get("filterServerTable") or {}).items()
            },
        )
