"""Restart time after kill -9 with a large commit log.

    .venv/bin/python bench/recovery.py [--gib 1.0] [--json]

1. start a broker (ASYNC_FLUSH, default 1 GiB commit log files) as its own process;
2. fill its commit log to --gib with `ledgermq bench produce --batch 32` (a separate
   process), and kill -9 the broker while that producer is still sending;
3. start it again and measure the time from process start until it answers
   GET_MAX_OFFSET for the filled topic, and check that the offsets it reports are those
   that were acknowledged before the kill, or more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.procs import ServerProcess, free_port, free_port_pair  # noqa: E402

from ledgermq.remoting.client import RemotingClient  # noqa: E402
from ledgermq.remoting.codec import RemotingCommand  # noqa: E402
from ledgermq.remoting.codes import RequestCode  # noqa: E402


async def _commitlog_max_offset(addr: str) -> int:
    """Bytes written to the commit log (files are preallocated: their size says nothing)."""
    client = RemotingClient()
    try:
        reply = await client.invoke(
            addr, RemotingCommand(code=RequestCode.GET_BROKER_RUNTIME_INFO), timeout=5
        )
        return int(json.loads(reply.body)["table"]["commitLogMaxOffset"])
    finally:
        await client.close()


def commitlog_bytes(addr: str) -> int:
    return asyncio.run(_commitlog_max_offset(addr))


async def max_offsets(addr: str, topic: str, queues: int, timeout: float) -> list[int]:
    client = RemotingClient(connect_timeout=0.2)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                result = []
                for qid in range(queues):
                    reply = await client.invoke(
                        addr,
                        RemotingCommand(
                            code=RequestCode.GET_MAX_OFFSET,
                            ext_fields={"topic": topic, "queueId": str(qid)},
                        ),
                        timeout=1,
                    )
                    result.append(int(reply.ext_fields["offset"]))
                return result
            except Exception:  # noqa: BLE001 - not serving yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.01)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    topic = "RecoveryBench"
    with tempfile.TemporaryDirectory(prefix="ledgermq-recovery-") as name:
        tmp = Path(name)
        ns_port, port = free_port(), free_port_pair()
        namesrv = ServerProcess(
            ["namesrv", "-p", str(ns_port)], ready_text="boot success", log_path=tmp / "namesrv.log"
        ).start()
        conf = tmp / "broker.conf"
        conf.write_text(
            f"brokerName=recovery\nlistenPort={port}\nbrokerIP1=127.0.0.1\n"
            f"namesrvAddr=127.0.0.1:{ns_port}\nstorePathRootDir={tmp / 'store'}\n"
            "defaultTopicQueueNums=4\n"
        )
        broker = ServerProcess(
            ["broker", "-c", str(conf)], ready_text="boot success", log_path=tmp / "broker.log"
        ).start()
        producer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ledgermq",
                "bench",
                "produce",
                "-n",
                f"127.0.0.1:{ns_port}",
                "-t",
                topic,
                "-s",
                "1024",
                "--inflight",
                "64",
                "--batch",
                "32",
                "--duration",
                "3600",
                "--json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        target = int(args.gib * (1 << 30))
        addr = f"127.0.0.1:{port}"
        while (filled := commitlog_bytes(addr)) < target:
            if not args.json:
                print(f"filled {filled / (1 << 20):.0f} MiB", file=sys.stderr, flush=True)
            time.sleep(2)
        broker.kill()
        producer.kill()
        size = filled
        started = time.monotonic()
        broker.start(timeout=120)
        offsets = asyncio.run(max_offsets(f"127.0.0.1:{port}", topic, 4, 120))
        serving_after = time.monotonic() - started
        broker.stop()
        namesrv.stop()
    result = {
        "commitlog_bytes": size,
        "serving_after_s": round(serving_after, 3),
        "messages": sum(offsets),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"commit log {size / (1 << 30):.2f} GiB, {sum(offsets)} messages: serving again "
            f"{serving_after:.2f} s after restart (kill -9 during sends)"
        )


if __name__ == "__main__":
    main()
