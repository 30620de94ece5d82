"""Run ledgermq's produce benchmarks and a NATS JetStream peer in the same run.

    .venv/bin/python bench/compare.py [--duration 10] [--json]

Needs Debian's nats-server on PATH and makes .venv-bench with nats-py for the peer.
Every server gets fresh data in a temporary directory; the client is always a separate
process from the server. Prints a Markdown table (for bench/RESULTS.md) or JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.procs import ServerProcess, free_port, free_port_pair  # noqa: E402

BENCH_VENV = REPO / ".venv-bench"


def ensure_peer_venv() -> Path:
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "nats-py"], check=True)
    return python


def run_json(cmd: list[str]) -> dict:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def nats_peer(tmp: Path, duration: float, inflight: int, size: int) -> dict:
    if shutil.which("nats-server") is None:
        raise SystemExit("nats-server not found: apt-get install nats-server")
    port = free_port()
    server = subprocess.Popen(
        ["nats-server", "-js", "-sd", str(tmp / f"nats-{inflight}"), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # nats-server has no readiness line on stdout; give it a second
        return run_json(
            [
                str(ensure_peer_venv()),
                str(REPO / "bench/peers/nats_jetstream.py"),
                "--server",
                f"nats://127.0.0.1:{port}",
                "--duration",
                str(duration),
                "--inflight",
                str(inflight),
                "--size",
                str(size),
            ]
        )
    finally:
        server.terminate()
        server.wait(10)


def ledgermq_runs(tmp: Path, flush: str, runs: list[dict], duration: float) -> list[dict]:
    ns_port, broker_port = free_port(), free_port_pair()
    server = ServerProcess(
        [
            "quickstart",
            "--data",
            str(tmp / flush),
            "--namesrv-port",
            str(ns_port),
            "--broker-port",
            str(broker_port),
            "--flush-disk-type",
            flush,
        ],
        ready_text="Broker ",
        log_path=tmp / f"quickstart-{flush}.log",
    ).start()
    results = []
    try:
        for i, run in enumerate(runs):
            cmd = [
                sys.executable,
                "-m",
                "ledgermq",
                "bench",
                "produce",
                "-n",
                f"127.0.0.1:{ns_port}",
                "-t",
                f"Bench{flush.split('_')[0]}{i}",
                "-s",
                str(run["size"]),
                "--inflight",
                str(run["inflight"]),
                "--batch",
                str(run.get("batch", 1)),
                "--duration",
                str(duration),
                "--json",
            ]
            result = run_json(cmd)
            result["command"] = "ledgermq bench produce " + " ".join(cmd[5:])
            results.append(result)
    finally:
        server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ledgermq-bench-") as name:
        tmp = Path(name)
        peer = nats_peer(tmp, args.duration, 1000, 1024)
        peer1 = nats_peer(tmp, args.duration, 1, 1024)
        rows += ledgermq_runs(
            tmp,
            "ASYNC_FLUSH",
            [
                {"size": 1024, "inflight": 1000},
                {"size": 1024, "inflight": 100, "batch": 32},
                {"size": 1024, "inflight": 1000, "batch": 32},
                {"size": 1024, "inflight": 1},
            ],
            args.duration,
        )
        rows += ledgermq_runs(tmp, "SYNC_FLUSH", [{"size": 1024, "inflight": 1000}], args.duration)
    if args.json:
        print(json.dumps({"nats": [peer, peer1], "ledgermq": rows}))
        return
    print("| system | durability | size | in flight | batch | msg/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for p in (peer, peer1):
        print(
            f"| NATS JetStream 2.9 (nats-py) | file, R1, no fsync per ack | {p['size']} | "
            f"{p['inflight']} | 1 | {p['tps']:,.0f} | {p['p50_ms']} | {p['p99_ms']} |"
        )
    for r in rows:
        print(
            f"| ledgermq | {r['flush_disk_type']} | {r['size']} | {r['inflight']} | "
            f"{r['batch']} | {r['tps']:,.0f} | {r['p50_ms']} | {r['p99_ms']} |"
        )
    print()
    for r in rows:
        print(f"    {r['command']}")


if __name__ == "__main__":
    main()
