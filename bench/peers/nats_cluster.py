"""Readiness probe for a NATS JetStream cluster: wait until a replicated stream can be made.

    .venv-bench/bin/python bench/peers/nats_cluster.py --server nats://127.0.0.1:4222 \
        --replicas 3 --timeout 30

A freshly started nats-server cluster answers clients before its JetStream meta group has
a leader and before every peer is known to it, and until then creating an R3 stream fails
("insufficient resources", "JetStream system temporarily unavailable", timeouts). This
tries to create (then deletes) a `--replicas` file stream until that works, and prints
one JSON object {ready_s, attempts, last_error}; it exits 1 if the cluster was not ready
within `--timeout` seconds. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import nats
from nats.js.api import StorageType, StreamConfig
from peer_util import log


async def probe(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    deadline = started + args.timeout
    attempts = 0
    last_error = ""
    while time.monotonic() < deadline:
        attempts += 1
        nc = None
        try:
            nc = await nats.connect(
                args.server, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False
            )
            js = nc.jetstream(timeout=5)
            await js.add_stream(
                StreamConfig(
                    name=args.stream,
                    subjects=[f"{args.stream.lower()}.probe"],
                    storage=StorageType.FILE,
                    num_replicas=args.replicas,
                )
            )
            await js.delete_stream(args.stream)
            return {
                "ready_s": round(time.monotonic() - started, 2),
                "attempts": attempts,
                "last_error": last_error,
            }
        except Exception as exc:  # noqa: BLE001 - not ready yet: try again
            text = f"{type(exc).__name__}: {exc}"
            if text != last_error:
                log(f"nats cluster not ready yet: {text}")
            last_error = text
        finally:
            if nc is not None:
                try:
                    await nc.close()
                except Exception:  # noqa: BLE001, S110 - closing a half-open connection
                    pass
        await asyncio.sleep(0.25)
    raise TimeoutError(
        f"no {args.replicas}-replica stream within {args.timeout}s "
        f"({attempts} attempts; last error: {last_error})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="READYPROBE")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=30)
    try:
        print(json.dumps(asyncio.run(probe(parser.parse_args()))))
    except TimeoutError as exc:
        log(str(exc))
        sys.exit(1)
