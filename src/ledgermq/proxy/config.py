"""ProxyConfig: the keys of RocketMQ's rmq-proxy.json.

A key we do not know is an error naming it (a typo must not silently fall back to a
default); keys of Java proxy features we do not build are accepted and listed as
ignored so that an existing rmq-proxy.json still loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ledgermq.common.config import ConfigError, apply_properties, load_file, setting

PROXY_MODES = ("cluster", "local")
DEFAULT_DELAY_LEVELS = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_MIB = 1024 * 1024

# Java ProxyConfig keys that load but change nothing here (yet).
IGNORED_KEYS = frozenset(
    {
        "remotingListenPort",
        "enableRemotingLocalProxyGrpc",
        "tlsTestModeEnable",
        "enableGrpcEpoll",
        "grpcBossLoopNum",
        "grpcWorkerLoopNum",
        "grpcThreadPoolNums",
        "grpcThreadPoolQueueCapacity",
        "enableACL",
        "enableAclRpcHookForClusterMode",
        "namesrvDomain",
        "namesrvDomainSubgroup",
        "useEndpointPortFromRequest",
        "enableTopicMessageTypeCheck",
        "traceOn",
        "enablePrintJstack",
        "metricsExporterType",
        "heartbeatSyncerTopicName",
        "localServeAddr",
        "systemTopicClusterName",
    }
)


@dataclass(slots=True)
class ProxyConfig:
    rocketmq_cluster_name: str = setting("DefaultCluster", key="rocketMQClusterName")
    proxy_cluster_name: str = "DefaultCluster"
    proxy_name: str = "DEFAULT_PROXY"
    namesrv_addr: str = "127.0.0.1:9876"
    proxy_mode: str = setting("cluster", choices=PROXY_MODES)
    # The address clients are told to use; empty = the address the client reached us on.
    grpc_server_host: str = setting("0.0.0.0", key="grpcServerHost")
    advertised_host: str = setting("", key="advertisedHost")
    grpc_server_port: int = setting(8081, minimum=0, maximum=65535)
    grpc_max_inbound_message_size: int = setting(130 * _MIB, minimum=1)
    max_message_size: int = setting(4 * _MIB, minimum=1)
    max_user_property_size: int = setting(16 * 1024, minimum=1)
    user_property_max_num: int = setting(128, minimum=1)
    max_message_group_size: int = setting(64, minimum=1)
    max_delay_time_mills: int = setting(24 * 3_600_000, minimum=0)
    default_invisible_time_mills: int = setting(60_000, minimum=10_000, maximum=43_200_000)
    grpc_client_consumer_min_long_polling_timeout_millis: int = setting(5_000, minimum=0)
    grpc_client_consumer_max_long_polling_timeout_millis: int = setting(20_000, minimum=0)
    # receive/change invisible time limits (ILLEGAL_INVISIBLE_TIME outside them)
    min_invisible_time_mills_for_recv: int = setting(10_000, minimum=0)
    max_invisible_time_mills: int = setting(43_200_000, minimum=1)
    # Push consumers (auto_renew) get defaultInvisibleTimeMills and the proxy keeps
    # renewing each unacked message: `renewAheadTimeMillis` before it would expire,
    # checked every `renewSchedulePeriodMillis`, for at most `renewMaxTimeMillis`.
    enable_proxy_auto_renew: bool = True
    renew_ahead_time_millis: int = setting(10_000, minimum=0)
    renew_schedule_period_millis: int = setting(5_000, minimum=50)
    renew_max_time_millis: int = setting(3 * 3_600_000, minimum=1)
    # A client with no Telemetry stream and no call for this long is gone: the proxy
    # stops renewing its messages (they become visible again) and forgets it.
    channel_expired_in_seconds: int = setting(120, minimum=1)
    grpc_client_producer_max_attempts: int = setting(3, minimum=1)
    grpc_client_producer_backoff_initial_millis: int = setting(10, minimum=0)
    grpc_client_producer_backoff_max_millis: int = setting(1_000, minimum=0)
    grpc_client_producer_backoff_multiplier: int = setting(2, minimum=1)
    grpc_client_consumer_receive_batch_size: int = setting(32, minimum=1)
    # Our brokers deliver delayed messages by level (no timer wheel yet), so a
    # delivery timestamp is rounded up to the next level.
    use_delay_level: bool = True
    message_delay_level: str = DEFAULT_DELAY_LEVELS
    # How long QueryRoute may serve a topic's route / attributes from the cache.
    route_cache_seconds: float = setting(5.0, minimum=0.0)
    request_timeout_millis: int = setting(3_000, minimum=1)
    # TLS on grpcServerPort when both are set (PEM files); plaintext h2c otherwise, which
    # both official clients use by default. (The Java proxy can serve both on one port;
    # grpcio cannot, so it is one or the other.)
    tls_key_path: str = setting("", key="tlsKeyPath")
    tls_cert_path: str = setting("", key="tlsCertPath")

    def delay_levels_ms(self) -> list[int]:
        """`messageDelayLevel` as milliseconds per level (level n at index n-1)."""
        levels: list[int] = []
        for item in self.message_delay_level.split():
            unit = item[-1:]
            if unit not in _UNIT_MS or not item[:-1].isdigit():
                raise ConfigError("messageDelayLevel", f"bad level {item!r} (use e.g. 5s 1m 2h)")
            levels.append(int(item[:-1]) * _UNIT_MS[unit])
        if not levels:
            raise ConfigError("messageDelayLevel", "no delay levels")
        return levels

    def validate(self) -> None:
        self.delay_levels_ms()
        if bool(self.tls_key_path) != bool(self.tls_cert_path):
            key = "tlsCertPath" if self.tls_key_path else "tlsKeyPath"
            raise ConfigError(key, "TLS needs both tlsKeyPath and tlsCertPath")
        for key, path in (("tlsKeyPath", self.tls_key_path), ("tlsCertPath", self.tls_cert_path)):
            if path and not Path(path).is_file():
                raise ConfigError(key, f"no such file: {path}")
        if not self.namesrv_addr.strip():
            raise ConfigError("namesrvAddr", "the proxy needs a NameServer address")
        lo = self.grpc_client_consumer_min_long_polling_timeout_millis
        hi = self.grpc_client_consumer_max_long_polling_timeout_millis
        if lo > hi:
            raise ConfigError(
                "grpcClientConsumerMinLongPollingTimeoutMillis",
                f"{lo} is above grpcClientConsumerMaxLongPollingTimeoutMillis {hi}",
            )

    def copy(self) -> ProxyConfig:
        return dataclasses.replace(self)


def proxy_config_from(props: dict[str, str], *, source: str | None = None) -> ProxyConfig:
    """A validated ProxyConfig; ConfigError names the first bad or unknown key."""
    config = ProxyConfig()
    unknown = apply_properties(config, props)
    for key in unknown:
        if key not in IGNORED_KEYS:
            where = f" in {source}" if source else ""
            raise ConfigError(key, f"unknown rmq-proxy.json key{where}")
    config.validate()
    return config


def load_proxy_config(
    path: str | Path | None, overrides: dict[str, str] | None = None
) -> ProxyConfig:
    props = load_file(path) if path else {}
    props.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return proxy_config_from(props, source=str(path) if path else None)


def ignored_keys_in(props: dict[str, str]) -> list[str]:
    return sorted(k for k in props if k in IGNORED_KEYS)
