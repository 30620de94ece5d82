"""`ledgermq namesrv`, `ledgermq broker` and `ledgermq quickstart`."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import sys
from pathlib import Path
from typing import Any

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
        parser.add_argument("--enable-proxy", action="store_true", help="also run the gRPC proxy")
        parser.add_argument("-pc", "--proxy-config", help="rmq-proxy.json for --enable-proxy")
    else:
        parser.add_argument("--data", default="./data", help="data directory (default ./data)")
        parser.add_argument("--namesrv-port", type=int, default=9876)
        parser.add_argument("--broker-port", type=int, default=10911)
        parser.add_argument("--host", default="127.0.0.1", help="address to advertise")
        parser.add_argument(
            "--flush-disk-type", default="ASYNC_FLUSH", choices=("ASYNC_FLUSH", "SYNC_FLUSH")
        )
        parser.add_argument(
            "--dledger",
            type=int,
            default=0,
            metavar="N",
            help="run a DLedger broker group of N members instead of one broker "
            "(broker ports --broker-port, +10, +20...; DLedger ports --dledger-port, +1, ...)",
        )
        parser.add_argument("--dledger-port", type=int, default=40911)
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
            # uvloop also with --enable-proxy: grpc.aio runs on it (see cli/proxy.py).
            return run_async(lambda: _serve_broker(config, args.enable_proxy, args.proxy_config))
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


async def _serve_broker(
    config: object, enable_proxy: bool = False, proxy_config: str | None = None
) -> int:
    from ledgermq.broker.broker import Broker

    broker = Broker(config)
    await _start_listening(broker, broker.server.host, config.listen_port)
    print(
        f"The broker[{broker.config.broker_name}, {broker.address}] boot success. "
        f"serializeType=JSON and name server is {broker.config.namesrv_addr}",
        flush=True,
    )
    proxy = None
    if enable_proxy:  # local mode, see ledgermq.proxy.local
        from ledgermq.proxy.local import start_local_proxy

        try:
            proxy = await start_local_proxy(config, proxy_config, broker)
        except OSError as exc:
            await broker.stop()
            raise StartupError(f"cannot start the gRPC proxy: {exc.strerror or exc}") from exc
        print(f"The gRPC proxy boot success. listening on {proxy.address}", flush=True)
    await wait_for_shutdown_signal()
    if proxy is not None:
        await proxy.stop()
    await broker.stop()
    return 0


async def _quickstart(args: argparse.Namespace) -> int:
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
    print(f"NameServer  {namesrv_addr}", flush=True)
    if args.dledger:
        brokers = await _quickstart_group(args, data, namesrv_addr, namesrv)
    else:
        brokers = [await _quickstart_broker(args, data, namesrv_addr, namesrv)]
    print(f"Data        {data}  (pid {os.getpid()}; Ctrl-C stops)", flush=True)
    print(f"Try:  ledgermq produce -n {namesrv_addr} -t TestTopic -m hello", flush=True)
    if args.dledger:
        print(f"      ledgermq admin dledgerStatus -n {namesrv_addr}", flush=True)
    await wait_for_shutdown_signal()
    for broker in brokers:
        await broker.stop()  # type: ignore[attr-defined]
    await namesrv.stop()
    return 0


async def _quickstart_broker(
    args: argparse.Namespace, data: Path, namesrv_addr: str, namesrv: Any
) -> Any:
    from ledgermq.broker.broker import Broker
    from ledgermq.broker.config import BrokerConfig

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
    print(f"Broker      broker-a (DefaultCluster, master) at {broker.address}", flush=True)
    return broker


async def _quickstart_group(
    args: argparse.Namespace, data: Path, namesrv_addr: str, namesrv: Any
) -> list[Any]:
    """A DLedger broker group of `args.dledger` members in this process: they elect the
    master among themselves. (One process: killing it stops them all; to try failovers
    run each member as its own `ledgermq broker -c` process, see the README.)"""
    from ledgermq.broker.broker import Broker
    from ledgermq.broker.config import BrokerConfig

    group = "RaftNode00"
    ids = [f"n{i}" for i in range(args.dledger)]
    peers = ";".join(f"{i}-{args.host}:{args.dledger_port + k}" for k, i in enumerate(ids))
    brokers: list[Broker] = []
    try:
        for k, self_id in enumerate(ids):
            config = BrokerConfig()
            apply_properties(
                config,
                {
                    "brokerClusterName": "DefaultCluster",
                    "brokerName": group,
                    "listenPort": str(args.broker_port + 10 * k),
                    "namesrvAddr": namesrv_addr,
                    "brokerIP1": args.host,
                    "storePathRootDir": str(data / group / self_id),
                    "enableDLegerCommitLog": "true",
                    "dLegerGroup": group,
                    "dLegerPeers": peers,
                    "dLegerSelfId": self_id,
                    "preferredLeaderId": ids[0],
                },
            )
            broker = Broker(config)
            await _start_listening(broker, broker.server.host, config.listen_port)
            brokers.append(broker)
            print(
                f"Broker      {group} member {self_id} (DefaultCluster) at {broker.address}, "
                f"DLedger {args.host}:{args.dledger_port + k}",
                flush=True,
            )
    except BaseException:
        for broker in brokers:
            await broker.stop()
        await namesrv.stop()
        raise
    # print the "Try:" line once a master is elected and the NameServer routes to it
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not any(b.broker_id == 0 and not b.is_slave for b in brokers):
        if loop.time() > deadline:
            print("(no master elected yet: check the DLedger ports)", flush=True)
            return brokers
        await asyncio.sleep(0.05)
    master = next(b for b in brokers if b.broker_id == 0)
    await master.register_now()
    print(f"Master      {master.config.d_leger_self_id} at {master.address}", flush=True)
    return brokers
