"""Local mode: the gRPC proxy inside a broker process (`ledgermq broker --enable-proxy`).

Design: the same ProxyServer as cluster mode, started in the broker's event loop.
It reaches this broker (and any other of the cluster) through the NameServer route
and loopback remoting, exactly like a cluster-mode proxy. That costs one loopback hop
per request but keeps a single code path; an in-process backend can replace
`ClusterBackend` later behind the same interface.
"""

from __future__ import annotations

from typing import Any

from ledgermq.proxy.config import load_proxy_config
from ledgermq.proxy.server import ProxyServer


async def start_local_proxy(broker_config: Any, proxy_config_path: str | None) -> ProxyServer:
    """Starts the proxy for a broker; its namesrvAddr and cluster default to the broker's."""
    overrides = {
        "proxyMode": "local",
        "namesrvAddr": broker_config.namesrv_addr or None,
        "rocketMQClusterName": broker_config.broker_cluster_name,
    }
    config = load_proxy_config(proxy_config_path, overrides)
    server = ProxyServer(config)
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    return server
