"""`ledgermq bench produce|consume|proxy-produce`: throughput and latency from a client
process (proxy-produce, SendMessage through the gRPC proxy, is in cli/bench_proxy.py).

The benchmark always runs as its own process (this command), never inside the broker,
and states what it measured under: message size, requests in flight, batch size and the
broker's flush mode (asked from the broker itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass

from ledgermq.cli.runtime import run_async
from ledgermq.client.accumulator import DEFAULT_BATCH_MAX_BYTES


@dataclass(slots=True)
class BenchResult:
    mode: str
    messages: int
    errors: int
    seconds: float
    tps: float
    mb_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    size: int
    inflight: int
    batch: int
    flush_disk_type: str
    # CPU seconds this client process spent in the measured window (not startup), so
    # a comparison can tell client cost from server cost.
    cpu_s: float = 0.0
    # The producer's auto-batching (--auto-batch): single sends, each awaited on its
    # own, that met in one event-loop iteration travelled as one batch request.
    auto_batch: bool = False


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


class Progress:
    """One line a second on stderr, so a long run is visibly alive."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.count = 0
        self.errors = 0
        self._last = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._report())

    async def _report(self) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            done = self.count
            print(
                f"[{time.monotonic() - started:5.1f}s] {done - self._last:>8} msg/s  "
                f"total {done}  errors {self.errors}",
                file=sys.stderr,
                flush=True,
            )
            self._last = done

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def _flush_mode(namesrv: str, topic: str) -> str:
    """flushDiskType of the masters serving `topic` ("A/B" if they differ), or
    DLEDGER_QUORUM for a DLedger group's master."""
    from ledgermq.client.admin import AdminClient

    admin = AdminClient(namesrv)
    await admin.start()
    try:
        route = await admin.topic_route(topic)
        modes = set()
        for broker in route.broker_datas:
            addr = broker.master_addr()
            if addr:
                cfg = await admin.broker_config(addr)
                if cfg.get("enableDLegerCommitLog", "false").lower() == "true":
                    # acknowledged once a majority of the group holds it (fsynced there)
                    modes.add("DLEDGER_QUORUM")
                else:
                    modes.add(cfg.get("flushDiskType") or "unknown")
        return "/".join(sorted(modes)) or "unknown"
    except Exception as exc:  # noqa: BLE001 - say why instead of guessing
        return f"unknown ({exc})"
    finally:
        await admin.shutdown()


async def bench_produce(args: argparse.Namespace) -> BenchResult:
    from ledgermq.client.message import Message
    from ledgermq.client.producer import Producer

    producer = Producer(
        args.group,
        args.namesrv,
        send_timeout=args.timeout,
        auto_batch=args.auto_batch,
        batch_max_bytes=args.batch_max_bytes,
        batch_max_delay_ms=args.batch_max_delay_ms,
    )
    await producer.start()
    body = b"x" * args.size
    latencies: list[float] = []
    progress = Progress(not args.json or args.progress)
    # Route lookup and topic auto-creation happen once, outside the measured window.
    await producer.send(Message(args.topic, body))
    stop_at = time.monotonic() + args.duration
    remaining = args.count if args.count else None
    errors = 0

    async def worker() -> None:
        nonlocal remaining, errors
        while time.monotonic() < stop_at:
            if remaining is not None:
                if remaining <= 0:
                    return
                remaining -= args.batch  # reserved now so workers don't overshoot
            started = time.perf_counter()
            try:
                if args.batch > 1:
                    await producer.send_batch([Message(args.topic, body)] * args.batch)
                else:
                    await producer.send(Message(args.topic, body))
            except Exception:  # noqa: BLE001 - counted, the run goes on
                errors += 1
                progress.errors += 1
                if remaining is not None:
                    remaining += args.batch  # a failed send does not count towards --count
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            progress.count += args.batch

    progress.start()
    started = time.monotonic()
    cpu_started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(args.inflight)))
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_started
    progress.stop()
    await producer.shutdown()
    return produce_result(
        "produce", latencies, args.batch, errors, elapsed, cpu, args,
        await _flush_mode(args.namesrv, args.topic),
    )  # fmt: skip


def produce_result(
    mode: str,
    latencies: list[float],
    batch: int,
    errors: int,
    elapsed: float,
    cpu: float,
    args: argparse.Namespace,
    flush_disk_type: str,
) -> BenchResult:
    """A produce run's result: `latencies` (ms, one per request of `batch` messages)."""
    latencies.sort()
    messages = len(latencies) * batch
    return BenchResult(
        mode=mode,
        messages=messages,
        errors=errors,
        seconds=round(elapsed, 3),
        tps=round(messages / elapsed, 1),
        mb_per_s=round(messages * args.size / elapsed / 1e6, 2),
        p50_ms=round(percentile(latencies, 0.50), 3),
        p99_ms=round(percentile(latencies, 0.99), 3),
        max_ms=round(latencies[-1], 3) if latencies else 0.0,
        size=args.size,
        inflight=args.inflight,
        batch=batch,
        flush_disk_type=flush_disk_type,
        cpu_s=round(cpu, 3),
        auto_batch=bool(getattr(args, "auto_batch", False)),
    )


async def bench_consume(args: argparse.Namespace) -> BenchResult:
    from ledgermq.client.message import ConsumeResult
    from ledgermq.client.push_consumer import PushConsumer

    progress = Progress(not args.json or args.progress)
    latencies: list[float] = []
    done = asyncio.Event()
    target = args.count or None

    # Latency here is store-to-delivery time: end to end while a producer runs
    # alongside, but the messages' age when draining a backlog.
    def listener(msgs: list) -> ConsumeResult:
        now_ms = time.time() * 1000
        for msg in msgs:
            latencies.append(max(0.0, now_ms - msg.store_timestamp))
        progress.count += len(msgs)
        if target is not None and progress.count >= target:
            done.set()
        return ConsumeResult.SUCCESS

    consumer = PushConsumer(
        args.group,
        args.namesrv,
        consume_from_where="CONSUME_FROM_FIRST_OFFSET",
        consume_batch_size=32,
    )
    consumer.subscribe(args.topic, "*")
    consumer.register_listener(listener)
    await consumer.start()
    progress.start()
    started = time.monotonic()
    try:
        await asyncio.wait_for(done.wait(), args.duration)
    except TimeoutError:
        pass
    elapsed = time.monotonic() - started
    progress.stop()
    await consumer.shutdown()
    latencies.sort()
    messages = progress.count
    return BenchResult(
        mode="consume",
        messages=messages,
        errors=0,
        seconds=round(elapsed, 3),
        tps=round(messages / elapsed, 1) if elapsed else 0.0,
        mb_per_s=0.0,
        p50_ms=round(percentile(latencies, 0.50), 3),
        p99_ms=round(percentile(latencies, 0.99), 3),
        max_ms=round(latencies[-1], 3) if latencies else 0.0,
        size=0,
        inflight=0,
        batch=0,
        flush_disk_type=await _flush_mode(args.namesrv, args.topic),
    )


def run(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ledgermq bench")
    sub = parser.add_subparsers(dest="mode", required=True)
    from ledgermq.cli import bench_proxy

    bench_proxy.add_arguments(sub.add_parser("proxy-produce"))
    for mode in ("produce", "consume"):
        p = sub.add_parser(mode)
        p.add_argument("-n", "--namesrv", required=True, help="NameServer address list")
        p.add_argument("-t", "--topic", default="BenchTopic")
        p.add_argument("-g", "--group", default=f"bench_{mode}_group")
        p.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
        p.add_argument("--count", type=int, default=0, help="stop after this many messages")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--progress", action="store_true", help="progress even with --json")
        if mode == "produce":
            p.add_argument("-s", "--size", type=int, default=1024, help="body bytes (1024)")
            p.add_argument("--inflight", type=int, default=64, help="requests in flight (64)")
            p.add_argument("--batch", type=int, default=1, help="messages per batch send")
            p.add_argument("--timeout", type=float, default=10.0, help="send timeout, s")
            p.add_argument(
                "--auto-batch",
                action="store_true",
                help="the producer's autoBatch: single sends meeting in one loop iteration "
                "travel as one batch request, each still awaited and answered on its own",
            )
            p.add_argument(
                "--batch-max-bytes",
                type=int,
                default=DEFAULT_BATCH_MAX_BYTES,
                help="auto-batch size cap",
            )
            p.add_argument(
                "--batch-max-delay-ms",
                type=float,
                default=0.0,
                help="auto-batch hold time (0: no added wait)",
            )
    args = parser.parse_args(argv)
    if args.mode == "produce" and (args.inflight < 1 or args.batch < 1 or args.size < 1):
        parser.error("--inflight, --batch and --size must be at least 1")
    if args.mode == "produce" and args.auto_batch and args.batch > 1:
        parser.error("--auto-batch batches single sends; it does not go with --batch")
    if args.mode == "proxy-produce" and (args.inflight < 1 or args.channels < 1 or args.size < 1):
        parser.error("--inflight, --channels and --size must be at least 1")
    modes = {
        "produce": bench_produce,
        "consume": bench_consume,
        "proxy-produce": bench_proxy.bench_proxy_produce,
    }
    result = run_async(lambda: modes[args.mode](args))
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(
            f"{result.mode}: {result.messages} messages in {result.seconds}s = {result.tps} msg/s "
            f"({result.mb_per_s} MB/s), latency p50 {result.p50_ms} ms, p99 {result.p99_ms} ms, "
            f"max {result.max_ms} ms, errors {result.errors}; size {result.size} B, "
            f"inflight {result.inflight}, batch {result.batch}, broker {result.flush_disk_type}"
            + (", auto-batch" if result.auto_batch else "")
        )
    return 0 if result.messages > 0 else 1
