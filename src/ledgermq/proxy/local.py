"""Local mode: the gRPC proxy inside a broker process (`ledgermq broker --enable-proxy`).

Design: the same ProxyServer as cluster mode, started in the broker's event loop, with
a `LocalBackend` (proxy/local_backend.py): a send whose queue is on this broker goes
straight into the broker's put path, skipping the loopback remoting hop (encode,
two socket hops, decode) a cluster-mode proxy pays. Routes, topic attributes, sends
to other brokers of the cluster, transactions and consuming still go through the
NameServer route and remoting, exactly like a cluster-mode proxy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledgermq.proxy.config import load_proxy_config
from ledgermq.proxy.server import ProxyServer

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker


async def start_local_proxy(
    broker_config: Any, proxy_config_path: str | None, broker: Broker | None = None
) -> ProxyServer:
    """Starts the proxy for a broker; its namesrvAddr and cluster default to the broker's.

    Without `broker` (the running Broker) every send goes over loopback remoting."""
    overrides = {
        "proxyMode": "local",
        "namesrvAddr": broker_config.namesrv_addr or None,
        "rocketMQClusterName": broker_config.broker_cluster_name,
    }
    config = load_proxy_config(proxy_config_path, overrides)
    backend = None
    if broker is not None:
        from ledgermq.proxy.local_backend import LocalBackend

        backend = LocalBackend(config, broker)
    server = ProxyServer(config, backend)
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    return server
