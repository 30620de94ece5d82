"""Peer benchmark: publish to a NATS JetStream file stream with a window of acks in flight.

Run with a virtualenv that has nats-py (bench/compare.sh makes one). Same measure as
`ledgermq bench produce`: every publish waits for the stream's ack; latency per publish.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import nats
from nats.js.api import StorageType, StreamConfig
from peer_util import percentile


async def main(args: argparse.Namespace) -> dict:
    nc = await nats.connect(args.server, pending_size=64 * 1024 * 1024)
    js = nc.jetstream(timeout=10)
    try:
        await js.delete_stream(args.stream)
    except Exception:  # noqa: BLE001 - a fresh server has no stream yet
        pass
    await js.add_stream(
        StreamConfig(
            name=args.stream,
            subjects=[args.subject],
            storage=StorageType.FILE,
            num_replicas=args.replicas,
        )
    )
    body = b"x" * args.size
    await js.publish(args.subject, body)
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + args.duration

    async def worker() -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                await js.publish(args.subject, body)
            except Exception:  # noqa: BLE001 - counted
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.inflight)))
    elapsed = time.monotonic() - started
    await nc.close()
    latencies.sort()
    return {
        "peer": f"nats-server JetStream file storage, replicas={args.replicas}",
        "messages": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "tps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "size": args.size,
        "inflight": args.inflight,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="BENCH")
    parser.add_argument("--subject", default="bench.msgs")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("-s", "--size", type=int, default=1024)
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
