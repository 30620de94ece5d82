"""BrokerConfig: the keys of RocketMQ's broker.conf (BrokerConfig + MessageStoreConfig).

Keys of features that are not built yet are accepted so existing broker.conf files load;
`unsupported_keys_set()` lets the broker warn about them by name.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ledgermq.common.config import ConfigError, apply_properties, load_file, setting
from ledgermq.store.message_store import delete_hours

log = logging.getLogger(__name__)

ROLES = ("ASYNC_MASTER", "SYNC_MASTER", "SLAVE")
FLUSH_TYPES = ("ASYNC_FLUSH", "SYNC_FLUSH")
DEFAULT_DELAY_LEVELS = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
# RocketMQ registers with the NameServers every
# max(10000, min(registerNameServerPeriod, 60000)) ms, whatever the file says.
REGISTER_PERIOD_MIN_MS = 10_000
REGISTER_PERIOD_MAX_MS = 60_000
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

# Accepted (so a real broker.conf loads) but without effect yet; warned about at startup.
NOT_SUPPORTED_YET = (
    "enableControllerMode",
    "controllerAddr",
    "haListenPort",
    "haMasterAddress",
    "aclEnable",
    "enablePropertyFilter",
    "timerWheelEnable",
)


@dataclass(slots=True)
class BrokerConfig:
    broker_cluster_name: str = "DefaultCluster"
    broker_name: str = setting(default_factory=lambda: socket.gethostname() or "broker-a")
    broker_id: int = setting(0, minimum=0)
    listen_port: int = setting(10911, minimum=0, maximum=65535)
    namesrv_addr: str = ""
    store_path_root_dir: str = setting(
        default_factory=lambda: str(Path.home() / "store"), key="storePathRootDir"
    )
    store_path_commit_log: str = setting("", key="storePathCommitLog")
    broker_role: str = setting("ASYNC_MASTER", choices=ROLES)
    flush_disk_type: str = setting("ASYNC_FLUSH", choices=FLUSH_TYPES)
    auto_create_topic_enable: bool = True
    auto_create_subscription_group: bool = True
    default_topic_queue_nums: int = setting(8, minimum=1, maximum=1024)
    broker_ip1: str = setting("", key="brokerIP1")
    broker_ip2: str = setting("", key="brokerIP2")
    mapped_file_size_commit_log: int = setting(1 << 30, minimum=4096)
    mapped_file_size_consume_queue: int = setting(300_000 * 20, minimum=20)
    max_message_size: int = setting(4 * 1024 * 1024, minimum=1)
    message_delay_level: str = DEFAULT_DELAY_LEVELS
    flush_interval_commit_log: int = setting(500, minimum=1)
    sync_flush_timeout: int = setting(5000, minimum=1)
    # Kept as configured; the broker clamps it at use (see `register_period_ms`), as
    # RocketMQ does, so any value a real broker.conf carries loads.
    register_name_server_period: int = setting(30_000)
    register_broker_timeout_mills: int = setting(24_000, minimum=1)
    broker_permission: int = setting(6, minimum=0, maximum=15)
    long_polling_enable: bool = True
    short_polling_time_mills: int = setting(1000, minimum=0)
    disk_max_used_space_ratio: int = setting(75, minimum=10, maximum=95)
    file_reserved_time: int = setting(72, minimum=0)
    delete_when: str = "04"
    slave_read_enable: bool = False
    # a consumer further behind than this share of memory is sent to a slave
    access_message_in_memory_max_ratio: int = setting(40, minimum=0, maximum=100)
    enable_d_leger_commit_log: bool = setting(False, key="enableDLegerCommitLog")
    d_leger_group: str = setting("", key="dLegerGroup")
    d_leger_peers: str = setting("", key="dLegerPeers")
    d_leger_self_id: str = setting("", key="dLegerSelfId")
    preferred_leader_id: str = setting("", key="preferredLeaderId")
    enable_controller_mode: bool = False
    controller_addr: str = ""
    ha_listen_port: int = setting(10912, minimum=0, maximum=65535)
    ha_master_address: str = ""
    acl_enable: bool = False
    transaction_time_out: int = setting(6000, minimum=0, key="transactionTimeOut")
    transaction_check_interval: int = setting(30_000, minimum=1)
    transaction_check_max: int = setting(15, minimum=0)
    reject_transaction_message: bool = False
    enable_property_filter: bool = False
    timer_wheel_enable: bool = True
    # Store tuning knobs the broker passes through.
    flush_commit_log_least_pages: int = setting(4, minimum=0)
    # Channels silent for this long are dropped (RocketMQ: 120 s).
    channel_expired_timeout: int = setting(120_000, minimum=1000)
    flush_consumer_offset_interval: int = setting(5000, minimum=10)
    # Upstream fixes 60 s; tests shorten it.
    rebalance_lock_max_live_time: int = setting(60_000, minimum=1)
    broker_topic_enable: bool = True
    cluster_topic_enable: bool = True
    trace_topic_enable: bool = False
    region_id: str = "DefaultRegion"
    trace_on: bool = True
    max_reconsume_times: int = setting(16, minimum=0)
    default_query_max_num: int = setting(32, minimum=1)

    # ------------------------------------------------------------------------------
    @classmethod
    def from_properties(
        cls, props: Mapping[str, str], *, base: BrokerConfig | None = None
    ) -> BrokerConfig:
        """Build from parsed properties; unknown keys are warned about by name."""
        config = base if base is not None else cls()
        unknown = apply_properties(config, props)
        if unknown:
            log.warning("broker config: unknown keys ignored: %s", ", ".join(sorted(unknown)))
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> BrokerConfig:
        return cls.from_properties(load_file(path))

    def validate(self) -> None:
        try:
            self.delay_levels_ms()
        except ValueError as exc:
            raise ConfigError("messageDelayLevel", str(exc)) from None
        try:
            delete_hours(self.delete_when)
        except ValueError as exc:
            raise ConfigError("deleteWhen", str(exc)) from None
        if not self.broker_name:
            raise ConfigError("brokerName", "must not be empty")
        if self.enable_d_leger_commit_log:
            self._validate_dledger()
            return  # brokerRole and brokerId follow the group's elections
        if self.broker_role == "SLAVE" and self.broker_id == 0:
            raise ConfigError("brokerId", "a SLAVE needs brokerId > 0")
        if self.broker_role != "SLAVE" and self.broker_id != 0:
            raise ConfigError("brokerRole", f"brokerId {self.broker_id} requires brokerRole=SLAVE")

    def _validate_dledger(self) -> None:
        from ledgermq.dledger.protocol import parse_peers

        if not self.d_leger_group:
            raise ConfigError("dLegerGroup", "enableDLegerCommitLog=true needs a group name")
        try:
            peers = parse_peers(self.d_leger_peers)
        except ValueError as exc:
            raise ConfigError("dLegerPeers", str(exc)) from None
        if not peers:
            raise ConfigError("dLegerPeers", 'expected "n0-host:port;n1-host:port;..."')
        if self.d_leger_self_id not in peers:
            raise ConfigError(
                "dLegerSelfId",
                f"{self.d_leger_self_id!r} is not one of dLegerPeers ({', '.join(peers)})",
            )
        if self.preferred_leader_id and self.preferred_leader_id not in peers:
            raise ConfigError(
                "preferredLeaderId", f"{self.preferred_leader_id!r} is not one of dLegerPeers"
            )

    def dledger_peers(self) -> dict[str, str]:
        from ledgermq.dledger.protocol import parse_peers

        return parse_peers(self.d_leger_peers)

    def dledger_slave_id(self) -> int:
        """The brokerId a follower registers with: dLegerSelfId's number + 1 (n0 -> 1)."""
        digits = ""
        for ch in reversed(self.d_leger_self_id):
            if not ch.isdigit():
                break
            digits = ch + digits
        return int(digits) + 1 if digits else 1

    def unsupported_keys_set(self) -> list[str]:
        """Keys of later features whose value differs from the default."""
        defaults = BrokerConfig(broker_name=self.broker_name)
        from ledgermq.common.config import config_keys

        fields = config_keys(BrokerConfig)
        return [
            key
            for key in NOT_SUPPORTED_YET
            if key in fields
            and getattr(self, fields[key].name) != getattr(defaults, fields[key].name)
        ]

    # --- derived values ----------------------------------------------------------
    def delay_levels_ms(self) -> list[int]:
        """messageDelayLevel as milliseconds; index 0 is level 1."""
        levels: list[int] = []
        for item in self.message_delay_level.split():
            unit = item[-1:].lower()
            if unit not in _UNIT_MS or not item[:-1].isdigit():
                raise ValueError(f"bad delay level {item!r} (expected e.g. 1s, 5m, 2h, 1d)")
            levels.append(int(item[:-1]) * _UNIT_MS[unit])
        if not levels:
            raise ValueError("no delay levels")
        return levels

    def register_period_ms(self, floor_ms: int = REGISTER_PERIOD_MIN_MS) -> int:
        """registerNameServerPeriod as used: clamped to [floor_ms, 60000] like RocketMQ.

        `floor_ms` is a code-level seam (tests lower it); the config file cannot.
        """
        return max(floor_ms, min(self.register_name_server_period, REGISTER_PERIOD_MAX_MS))

    def namesrv_addrs(self) -> list[str]:
        return [a.strip() for a in self.namesrv_addr.split(";") if a.strip()]

    def resolved_ip1(self) -> str:
        return self.broker_ip1 or detect_local_ip()

    @property
    def store_root(self) -> Path:
        return Path(os.path.expanduser(self.store_path_root_dir))

    @property
    def config_dir(self) -> Path:
        return self.store_root / "config"

    @property
    def is_slave(self) -> bool:
        """Configured as a slave (a DLedger member's role changes with elections: ask
        the Broker)."""
        return self.broker_role == "SLAVE" and not self.enable_d_leger_commit_log

    def copy(self) -> BrokerConfig:
        return dataclasses.replace(self)


def detect_local_ip() -> str:
    """The address other hosts reach us at: the source address of a route outwards.

    A UDP connect sends nothing; it only asks the kernel which interface it would use.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect(("10.255.255.255", 1))
        ip = sock.getsockname()[0]
    except OSError:
        ip = "127.0.0.1"
    finally:
        sock.close()
    return ip
