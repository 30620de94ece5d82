"""`ledgermq proxy -pc rmq-proxy.json`: the gRPC proxy for the v5 clients (cluster mode)."""

from __future__ import annotations

import argparse
import logging
import sys

from ledgermq.cli.runtime import setup_logging, wait_for_shutdown_signal
from ledgermq.common.config import ConfigError, load_file, to_properties

log = logging.getLogger("ledgermq")


def run(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ledgermq proxy")
    parser.add_argument("-pc", "--proxy-config", help="rmq-proxy.json file")
    parser.add_argument("-n", "--namesrv", help="NameServer address list (overrides namesrvAddr)")
    parser.add_argument("-p", "--port", type=int, help="gRPC port (overrides grpcServerPort)")
    parser.add_argument("--print-config", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    from ledgermq.proxy.config import ignored_keys_in, load_proxy_config

    try:
        overrides = {
            "namesrvAddr": args.namesrv,
            "grpcServerPort": str(args.port) if args.port is not None else None,
        }
        config = load_proxy_config(args.proxy_config, overrides)
        if args.proxy_config:
            for key in ignored_keys_in(load_file(args.proxy_config)):
                log.warning("rmq-proxy.json key '%s' has no effect in ledgermq yet", key)
        if config.proxy_mode == "local":
            raise ConfigError(
                "proxyMode",
                "local mode runs inside a broker: use `ledgermq broker -c broker.conf "
                "--enable-proxy`",
            )
    except ConfigError as exc:
        print(f"ledgermq proxy: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        for key, value in sorted(to_properties(config).items()):
            print(f"{key}={value}")
        return 0
    from ledgermq.cli.runtime import run_async

    # grpc.aio's default "poller" engine runs on any asyncio loop, uvloop included
    # (grpc/grpc#22311); uvloop cuts the proxy's per-RPC cost (bench/RESULTS.md).
    return run_async(lambda: _serve(config))


async def _serve(config: object) -> int:
    from ledgermq.proxy.server import ProxyServer

    server = ProxyServer(config)  # type: ignore[arg-type]
    try:
        await server.start()
    except OSError as exc:
        print(f"ledgermq proxy: cannot start: {exc.strerror or exc}", file=sys.stderr)
        await server.stop()
        return 1
    print(
        f"The gRPC proxy boot success. listening on {server.address}, "
        f"cluster {config.rocketmq_cluster_name}, name server {config.namesrv_addr}",  # type: ignore[attr-defined]
        flush=True,
    )
    await wait_for_shutdown_signal()
    await server.stop()
    return 0
