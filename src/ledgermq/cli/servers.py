"""`ledgermq namesrv`, `ledgermq broker` and `ledgermq quickstart`."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

from ledgermq.cli.runtime import run_async, setup_logging, wait_for_shutdown_signal
from ledgermq.common.config import ConfigError, apply_properties, load_file, to_properties

log = logging.getLogger("ledgermq")


def _load(config: object, path: str | None, overrides: dict[str, str]) -> object:
    props: dict[str, str] = load_file(path) if path else {}
    props.update({k: v for k, v in overrides.items() if v is not None})
    unknown = apply_properties(config, props)
    for key in unknown:
        log.warning("ignoring unknown config key '%s'%s", key, f" in {path}" if path else "")
    # The same checks as startup, so `-p` never prints a config the server would refuse.
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


class StartupError(Exception):
    """A server could not start for a reason the operator can fix; one line explains it."""


_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


async def _start_listening(server: object, host: str, port: int) -> None:
    """`await server.start()`, turning a failed bind into a StartupError."""
    try:
        await server.start()  # type: ignore[attr-defined]
    except OSError as exc:
        # A failed bind carries no file name; a store or config file error does.
        if exc.errno in _BIND_ERRNOS and exc.filename is None:
            reason = os.strerror(exc.errno).lower()
            raise StartupError(f"cannot listen on {host}:{port}: {reason}") from exc
        raise StartupError(f"cannot start: {_os_error_text(exc)}") from exc


def _os_error_text(exc: OSError) -> str:
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


def _namesrv_config(args: argparse.Namespace) -> object:
    from ledgermq.namesrv.config import NamesrvConfig

    overrides = {"listenPort": str(args.port) if args.port else None}
    return _load(NamesrvConfig(), args.config, overrides)


def _broker_config(args: argparse.Namespace) -> object:
    from ledgermq.broker.config import BrokerConfig

    overrides = {"namesrvAddr": args.namesrv}
    return _load(BrokerConfig(), args.config, overrides)


def _print_config(config: object) -> None:
    for key, value in sorted(to_properties(config).items()):
        print(f"{key}={value}")


def run(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"ledgermq {command}")
    parser.add_argument("-v", "--verbose", action="store_true")
    if command == "namesrv":
        parser.add_argument("-c", "--config", help="namesrv.properties file")
        parser.add_argument("-p", "--port", type=int, help="listen port (default 9876)")
        parser.add_argument("--print-config", action="store_true")
    elif command == "broker":
        parser.add_argument("-c", "--config", help="broker.conf file")
        parser.add_argument("-n", "--namesrv", help="NameServer address list, ip:port;ip:port")
        parser.add_argument("-p", "--print-config", action="store_true")
    else:
        parser.add_argument("--data", default="./data", help="data directory (default ./data)")
        parser.add_argument("--namesrv-port", type=int, default=9876)
        parser.add_argument("--broker-port", type=int, default=10911)
        parser.add_argument("--host", default="127.0.0.1", help="address to advertise")
        parser.add_argument(
            "--flush-disk-type", default="ASYNC_FLUSH", choices=("ASYNC_FLUSH", "SYNC_FLUSH")
        )
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        if command == "namesrv":
            config = _namesrv_config(args)
            if args.print_config:
                _print_config(config)
                return 0
            return run_async(lambda: _serve_namesrv(config))
        if command == "broker":
            config = _broker_config(args)
            if args.print_config:
                _print_config(config)
                return 0
            return run_async(lambda: _serve_broker(config))
        return run_async(lambda: _quickstart(args))
    except ConfigError as exc:
        print(f"ledgermq {command}: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        if args.verbose:
            log.debug("startup failed", exc_info=exc.__cause__ or exc)
        print(f"ledgermq {command}: {exc}", file=sys.stderr)
        return 1


async def _serve_namesrv(config: object) -> int:
    from ledgermq.namesrv.server import NameServer

    server = NameServer(config)
    await _start_listening(server, server.host, config.listen_port)
    print(f"The Name Server boot success. serializeType=JSON, address {server.address}", flush=True)
    await wait_for_shutdown_signal()
    await server.stop()
    return 0


async def _serve_broker(config: object) -> int:
    from ledgermq.broker.broker import Broker

    broker = Broker(config)
    await _start_listening(broker, broker.server.host, config.listen_port)
    print(
        f"The broker[{broker.config.broker_name}, {broker.address}] boot success. "
        f"serializeType=JSON and name server is {broker.config.namesrv_addr}",
        flush=True,
    )
    await wait_for_shutdown_signal()
    await broker.stop()
    return 0


async def _quickstart(args: argparse.Namespace) -> int:
    from ledgermq.broker.broker import Broker
    from ledgermq.broker.config import BrokerConfig
    from ledgermq.namesrv.config import NamesrvConfig
    from ledgermq.namesrv.server import NameServer

    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    ns_config = NamesrvConfig()
    apply_properties(
        ns_config,
        {
            "listenPort": str(args.namesrv_port),
            "kvConfigPath": str(data / "namesrv" / "kvConfig.json"),
        },
    )
    namesrv = NameServer(ns_config)
    await _start_listening(namesrv, namesrv.host, args.namesrv_port)
    namesrv_addr = f"{args.host}:{namesrv.port}"
    broker_config = BrokerConfig()
    apply_properties(
        broker_config,
        {
            "brokerClusterName": "DefaultCluster",
            "brokerName": "broker-a",
            "brokerId": "0",
            "listenPort": str(args.broker_port),
            "namesrvAddr": namesrv_addr,
            "brokerIP1": args.host,
            "storePathRootDir": str(data / "broker-a"),
            "flushDiskType": args.flush_disk_type,
        },
    )
    broker = Broker(broker_config)
    try:
        await _start_listening(broker, broker.server.host, args.broker_port)
    except StartupError:
        await namesrv.stop()
        raise
    print(f"NameServer  {namesrv_addr}", flush=True)
    print(f"Broker      broker-a (DefaultCluster, master) at {broker.address}", flush=True)
    print(f"Data        {data}  (pid {os.getpid()}; Ctrl-C stops)", flush=True)
    print(f"Try:  ledgermq produce -n {namesrv_addr} -t TestTopic -m hello", flush=True)
    await wait_for_shutdown_signal()
    await broker.stop()
    await namesrv.stop()
    return 0
