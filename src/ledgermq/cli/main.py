"""The `ledgermq` command: one entry point with RocketMQ's habits.

Each subcommand lives in its own module and is imported only when used, so that
`ledgermq admin ...` does not pay for the broker's imports and vice versa.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "namesrv": ("ledgermq.cli.servers", "run a NameServer (mqnamesrv)"),
    "broker": ("ledgermq.cli.servers", "run a Broker (mqbroker)"),
    "quickstart": ("ledgermq.cli.servers", "run a NameServer and a Broker in one process"),
    "proxy": ("ledgermq.cli.proxy", "run the gRPC proxy for v5 clients (mqproxy)"),
    "admin": ("ledgermq.cli.admin", "mqadmin commands"),
    "produce": ("ledgermq.cli.quick", "send messages from the command line"),
    "consume": ("ledgermq.cli.quick", "consume messages and print them"),
    "bench": ("ledgermq.cli.bench", "benchmarks: produce / consume"),
    "dledger": ("ledgermq.cli.dledger", "DLedger Raft log: server, append, get, bench ..."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ledgermq",
        description="RocketMQ 5 compatible message queue",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in SUBCOMMANDS:
        parser = build_parser()
        if args and args[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"ledgermq: unknown command {args[0]!r}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    command, rest = args[0], args[1:]
    module = importlib.import_module(SUBCOMMANDS[command][0])
    return int(module.run(command, rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
