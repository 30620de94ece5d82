"""`ledgermq dledger ...`: run a DLedger member, talk to a group, benchmark it.

    ledgermq dledger server --group G --id n0 --peers "n0-127.0.0.1:40911;n1-...;n2-..."
                            --store DIR [--preferred-leader n0] [--flush-mode durable|interval]
    ledgermq dledger append|get|metadata|transfer|kv|bench --peers ... --group G ...
    ledgermq dledger member add-learner|add-voter --id n3 --addr host:port --peers ... -g G
    ledgermq dledger member promote|remove --id n3 --peers ... -g G

Adding a member to a running group: start its server with ``--join`` and ``--peers``
listing the current members plus itself (its own entry gives its port), then
``member add-learner`` it, wait until it caught up (``metadata --member n3``), and
``member promote`` it. A member added this way keeps ``--join`` on restarts: its
membership comes from its log or snapshot, not from ``--peers``.

Indexes are DLedger's (0-based) everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from ledgermq.cli.bench import Progress, percentile
from ledgermq.cli.runtime import run_async, setup_logging, wait_for_shutdown_signal


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peers", required=True, help='"n0-host:port;n1-host:port;..."')
    p.add_argument("--group", "-g", required=True, help="DLedger group name")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per call (5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledgermq dledger")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="action", required=True)

    s = sub.add_parser("server", help="run one member of one or more groups")
    s.add_argument("--group", "-g", required=True, help="group name (comma-separate several)")
    s.add_argument("--id", required=True, help="this member's id, e.g. n0")
    s.add_argument("--peers", required=True, help='"n0-host:port;n1-host:port;..."')
    s.add_argument("--store", required=True, help="store directory")
    s.add_argument("--preferred-leader", help="member that should lead when it can")
    s.add_argument("--flush-mode", choices=("durable", "interval"), default="durable")
    s.add_argument("--flush-interval-ms", type=int, default=10)
    s.add_argument("--listen", default="0.0.0.0", help="listen host (port from --peers)")
    s.add_argument(
        "--state-machine", choices=("log", "kv"), default="log", help="kv: key-value example"
    )
    s.add_argument(
        "--join",
        action="store_true",
        help="join a running group as a new member (added with 'member add-learner'); "
        "--peers: the current members and this one",
    )
    s.add_argument(
        "--snapshot-threshold",
        type=int,
        help="snapshot every N applied entries, 0 = never (default: 1000 with "
        "--state-machine kv, never for the log-only one)",
    )

    a = sub.add_parser("append", help="append entries, print their indexes")
    _client_args(a)
    a.add_argument("bodies", nargs="+", help="entry bodies (text)")

    g = sub.add_parser("get", help="print the entry at an index")
    _client_args(g)
    g.add_argument("--index", "-i", type=int, required=True)
    g.add_argument("--count", type=int, default=1)
    g.add_argument("--member", help="read from this member instead of the leader")
    g.add_argument("--json", action="store_true")

    m = sub.add_parser("metadata", help="print the group's metadata as JSON")
    _client_args(m)
    m.add_argument("--member", help="ask this member")

    t = sub.add_parser("transfer", help="hand leadership to a member")
    _client_args(t)
    t.add_argument("--to", required=True, help="transferee id")

    mb = sub.add_parser("member", help="change the group's membership (one member at a time)")
    mb.add_argument("change", choices=("add-learner", "add-voter", "promote", "remove"))
    _client_args(mb)
    mb.add_argument("--id", required=True, help="the member to add, promote or remove")
    mb.add_argument("--addr", help="host:port of a member being added")

    k = sub.add_parser("kv", help="key-value example: put/get/cas/delete")
    _client_args(k)
    k.add_argument("op", choices=("put", "get", "cas", "delete"))
    k.add_argument("key")
    k.add_argument("values", nargs="*", help="put: VALUE; cas: EXPECTED NEW (--absent: NEW)")
    k.add_argument("--absent", action="store_true", help="cas: expect the key to be absent")

    b = sub.add_parser("bench", help="closed-loop append benchmark")
    _client_args(b)
    b.add_argument("--size", "-s", type=int, default=1024, help="body bytes (1024)")
    b.add_argument("--inflight", type=int, default=64, help="appends in flight (64)")
    b.add_argument("--batch", type=int, default=1, help="entries per append request (1)")
    b.add_argument(
        "--no-coalesce",
        action="store_true",
        help="one request per append (by default appends made in the same event-loop "
        "iteration share one request)",
    )
    b.add_argument("--duration", type=float, default=10.0, help="seconds (10)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return parser


def run(command: str, argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.action == "server":
        return _run_server(args, parser)
    if args.action == "member" and args.change.startswith("add") and not args.addr:
        parser.error(f"member {args.change} needs --addr host:port")
    if args.action == "bench" and (args.size < 0 or args.inflight < 1 or args.batch < 1):
        parser.error("--inflight and --batch must be at least 1, --size at least 0")
    from ledgermq.dledger.client import DLedgerError

    try:
        return run_async(lambda: _client_action(args))
    except DLedgerError as exc:
        print(f"ledgermq dledger {args.action}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"ledgermq dledger {args.action}: {exc}", file=sys.stderr)
        return 2


# ---- server ------------------------------------------------------------------------------


def _run_server(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ledgermq.dledger.member import MemberConfig
    from ledgermq.dledger.protocol import parse_peers

    try:
        peers = parse_peers(args.peers)
    except ValueError as exc:
        parser.error(str(exc))
    if args.id not in peers:
        parser.error(f"--id {args.id} is not among --peers {sorted(peers)}")
    if args.preferred_leader and args.preferred_leader not in peers:
        parser.error(f"--preferred-leader {args.preferred_leader} is not among --peers")
    groups = [g.strip() for g in args.group.split(",") if g.strip()]
    if args.snapshot_threshold is not None and args.snapshot_threshold < 0:
        parser.error("--snapshot-threshold must be at least 0")
    config = MemberConfig(
        flush_mode=args.flush_mode,
        flush_interval_ms=args.flush_interval_ms,
        preferred_leader=args.preferred_leader,
        snapshot_threshold=args.snapshot_threshold,
    )
    port = int(peers[args.id].rsplit(":", 1)[1])
    return run_async(lambda: _serve(args, groups, peers, port, config))


async def _serve(args: argparse.Namespace, groups: list[str], peers, port: int, config) -> int:
    from ledgermq.cli.servers import StartupError, _start_listening
    from ledgermq.dledger.kv import KVStateMachine
    from ledgermq.dledger.server import DLedgerServer

    server = DLedgerServer(args.store, host=args.listen, port=port, config=config)
    try:
        await _start_listening(server, args.listen, port)
    except StartupError as exc:
        print(f"ledgermq dledger server: {exc}", file=sys.stderr)
        return 1
    try:
        for group in groups:
            sm = KVStateMachine() if args.state_machine == "kv" else None
            await server.add_group(group, args.id, peers, state_machine=sm, join=args.join)
    except Exception as exc:
        print(f"ledgermq dledger server: cannot open the store: {exc}", file=sys.stderr)
        await server.stop()
        return 1
    print(
        f"DLedger server {args.id} of {','.join(groups)} listening on {peers[args.id]} "
        f"(flush {config.flush_mode}, store {args.store}{', joining' if args.join else ''})",
        flush=True,
    )
    await wait_for_shutdown_signal()
    await server.stop()
    print(f"DLedger server {args.id} stopped", flush=True)
    return 0


# ---- client actions ----------------------------------------------------------------------


async def _client_action(args: argparse.Namespace) -> int:
    from ledgermq.dledger.client import DLedgerClient

    coalesce = not getattr(args, "no_coalesce", False)
    async with DLedgerClient(
        args.group, args.peers, timeout=args.timeout, coalesce=coalesce
    ) as client:
        if args.action == "append":
            bodies = [b.encode() for b in args.bodies]
            for index in await client.append_batch(bodies):
                print(index)
        elif args.action == "get":
            entries = await client.get_entries(args.index, args.count, member=args.member)
            for e in entries:
                if args.json:
                    text = e.data.decode(errors="replace")
                    print(
                        json.dumps(
                            {"index": e.index, "term": e.term, "noop": e.is_noop, "body": text}
                        )
                    )
                else:
                    print(e.data.decode(errors="replace"))
        elif args.action == "metadata":
            print(json.dumps(await client.metadata(member=args.member), indent=2, sort_keys=True))
        elif args.action == "transfer":
            await client.transfer_leadership(args.to)
            print(f"{args.to} leads {args.group}")
        elif args.action == "member":
            result = await _member_change(client, args)
            print(json.dumps(result, indent=2, sort_keys=True))
        elif args.action == "kv":
            return await _kv(client, args)
        else:
            result = await _bench(client, args)
            if args.json:
                print(json.dumps(result))
            else:
                print(
                    f"dledger append: {result['count']} entries in {result['seconds']}s = "
                    f"{result['tps']} entries/s, latency p50 {result['p50_ms']} ms, p99 "
                    f"{result['p99_ms']} ms, max {result['max_ms']} ms, errors "
                    f"{result['errors']}; size {result['size']} B, inflight "
                    f"{result['inflight']}, batch {result['batch']}, flush {result['flush_mode']}"
                )
            return 0 if result["count"] > 0 else 1
    return 0


async def _member_change(client: Any, args: argparse.Namespace) -> dict:
    if args.change == "add-learner":
        return await client.add_learner(args.id, args.addr)
    if args.change == "add-voter":
        return await client.add_voter(args.id, args.addr)
    if args.change == "promote":
        return await client.promote(args.id)
    return await client.remove_member(args.id)


async def _kv(client: Any, args: argparse.Namespace) -> int:
    key = args.key.encode()
    vals = [v.encode() for v in args.values]
    if args.op == "get":
        value = await client.kv_get(key)
        if value is None:
            print("(absent)")
            return 1
        print(value.decode(errors="replace"))
        return 0
    if args.op == "put":
        if len(vals) != 1:
            raise ValueError("kv put takes KEY VALUE")
        await client.put(key, vals[0])
        print("OK")
        return 0
    if args.op == "delete":
        r = await client.delete(key)
        print("OK" if r.found else "(absent)")
        return 0
    want = 1 if args.absent else 2
    if len(vals) != want:
        raise ValueError("kv cas takes KEY EXPECTED NEW (or KEY NEW with --absent)")
    r = await client.cas(key, None if args.absent else vals[0], vals[-1])
    now = "(absent)" if r.value is None else r.value.decode(errors="replace")
    print(f"{'OK' if r.ok else 'FAILED'} {now}")
    return 0 if r.ok else 1


async def _bench(client: Any, args: argparse.Namespace) -> dict:
    from ledgermq.dledger.client import DLedgerError

    meta = await client.metadata()
    body = (b"0123456789abcdef" * (args.size // 16 + 1))[: args.size]
    batch = [body] * args.batch
    progress = Progress(enabled=not args.no_progress)
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + args.duration

    async def worker() -> None:
        while loop.time() < end:
            t0 = time.perf_counter()
            try:
                if args.batch == 1:
                    await client.append(body)
                else:
                    await client.append_batch(batch)
            except DLedgerError:
                progress.errors += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            progress.count += args.batch

    started = time.perf_counter()
    progress.start()
    try:
        await asyncio.gather(*(worker() for _ in range(args.inflight)))
    finally:
        progress.stop()
    elapsed = time.perf_counter() - started
    latencies.sort()
    count = progress.count
    return {
        "mode": "dledger-append",
        "count": count,
        "errors": progress.errors,
        "seconds": round(elapsed, 3),
        "tps": round(count / elapsed, 1) if elapsed else 0.0,
        "mb_per_s": round(count * args.size / elapsed / 1e6, 2) if elapsed else 0.0,
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3) if latencies else 0.0,
        "size": args.size,
        "inflight": args.inflight,
        "batch": args.batch,
        "flush_mode": meta.get("flushMode", "unknown"),
        "coalesce": client.coalesce,
        "group": args.group,
    }
