"""NameServer configuration with RocketMQ's key names (``namesrv.conf``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ledgermq.common.config import ConfigError, apply_properties, load_file, setting

# Keys that UPDATE_NAMESRV_CONFIG may never change at runtime (RocketMQ's default
# ``configBlackList``): redirecting where state is written from the network is unsafe.
DEFAULT_CONFIG_BLACK_LIST = "configBlackList;configStorePath;kvConfigPath"


@dataclass(slots=True)
class NamesrvConfig:
    listen_port: int = setting(9876, minimum=0, maximum=65535)
    bind_address: str = setting("0.0.0.0")
    # Java's ``user.home``: the root under which the default kvConfigPath lives.
    # Empty = the user's home directory. Tests and multi-instance setups point it at a
    # scratch directory instead of overriding every path.
    user_home: str = setting("", key="userHome")
    rocketmq_home: str = setting("")
    kv_config_path: str = setting("")
    config_store_path: str = setting("")
    product_env_name: str = setting("center")
    cluster_test: bool = setting(False)
    order_message_enable: bool = setting(False)
    return_order_topic_config_to_broker: bool = setting(True)
    scan_not_active_broker_interval: int = setting(5000, minimum=1)
    # Fallback liveness timeout for brokers that do not send heartbeatTimeoutMillis.
    broker_channel_expired_time: int = setting(120_000, minimum=1)
    unregister_broker_queue_capacity: int = setting(
        3000, key="unRegisterBrokerQueueCapacity", minimum=1
    )
    support_acting_master: bool = setting(False)
    enable_all_topic_list: bool = setting(True)
    enable_topic_list: bool = setting(True)
    notify_min_broker_id_changed: bool = setting(False)
    enable_controller_in_namesrv: bool = setting(False)
    need_wait_for_service: bool = setting(False)
    wait_seconds_for_service: int = setting(45, minimum=0)
    delete_topic_with_broker_registration: bool = setting(False)
    config_black_list: str = setting(DEFAULT_CONFIG_BLACK_LIST)
    # Java thread-pool sizing; accepted so existing namesrv.conf files load, unused
    # (one event loop serves every request).
    server_worker_threads: int = setting(8)
    client_request_thread_pool_nums: int = setting(8)
    default_thread_pool_nums: int = setting(16)
    client_request_thread_pool_queue_capacity: int = setting(50000)
    default_thread_pool_queue_capacity: int = setting(10000)
    max_frame_size: int = setting(16 * 1024 * 1024, minimum=1024)

    def home(self) -> Path:
        return Path(self.user_home).expanduser() if self.user_home else Path.home()

    def resolved_kv_config_path(self) -> Path:
        if self.kv_config_path:
            return Path(self.kv_config_path).expanduser()
        return self.home() / "namesrv" / "kvConfig.json"

    def black_listed_keys(self) -> set[str]:
        return {k.strip() for k in self.config_black_list.split(";") if k.strip()}

    def updated(self, props: dict[str, str]) -> NamesrvConfig:
        """A copy with `props` applied; raises ConfigError on unknown or bad keys so a
        runtime update is all-or-nothing."""
        copy = dataclasses.replace(self)
        unknown = apply_properties(copy, props)
        if unknown:
            raise ConfigError(", ".join(sorted(unknown)), "unknown NameServer config key")
        return copy

    @classmethod
    def from_file(cls, path: str | Path) -> tuple[NamesrvConfig, list[str]]:
        """Load ``namesrv.conf``; returns the config and the unknown keys (to warn)."""
        config = cls()
        unknown = apply_properties(config, load_file(path))
        return config, unknown
