"""Run ledgermq's produce benchmarks and a NATS JetStream peer in the same run.

    .venv/bin/python bench/compare.py [--duration 10] [--json]

Needs Debian's nats-server on PATH; the peer's client (nats-py) goes into .venv-bench from
bench/peers/requirements.txt.
Every server gets fresh data in a temporary directory; the client is always a separate
process from the server. Prints a Markdown table (for bench/RESULTS.md) or JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.dledger_compare import ensure_peer_venv  # noqa: E402
from tests.procs import ServerProcess, free_port, free_port_pair  # noqa: E402


def run_json(cmd: list[str]) -> dict:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def nats_peer(tmp: Path, duration: float, inflight: int, size: int) -> dict:
    if shutil.which("nats-server") is None:
        raise SystemExit("nats-server not found: apt-get install nats-server")
    port = free_port()
    store = tempfile.mkdtemp(dir=tmp, prefix=f"nats-{inflight}-")  # empty for every run
    server = subprocess.Popen(
        ["nats-server", "-js", "-sd", store, "-p", str(port)],
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
        shutil.rmtree(store, ignore_errors=True)


def ledgermq_run(tmp: Path, flush: str, run: dict, duration: float, tag: str) -> dict:
    """One line on its own fresh broker and empty data directory, so no line pays for
    the page-cache writeback of the one before it (a 1 GB line leaves ~1 GB dirty)."""
    os.sync()
    ns_port, broker_port = free_port(), free_port_pair()
    data = tmp / f"data-{tag}"
    server = ServerProcess(
        [
            "quickstart",
            "--data",
            str(data),
            "--namesrv-port",
            str(ns_port),
            "--broker-port",
            str(broker_port),
            "--flush-disk-type",
            flush,
        ],
        ready_text="Broker ",
        log_path=tmp / f"quickstart-{tag}.log",
    ).start()
    try:
        cmd = [
            sys.executable,
            "-m",
            "ledgermq",
            "bench",
            "produce",
            "-n",
            f"127.0.0.1:{ns_port}",
            "-t",
            f"Bench{tag}",
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
        return result
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def median_of(results: list[dict]) -> dict:
    """The run with the median msg/s, carrying every run's msg/s for the record."""
    ordered = sorted(results, key=lambda r: r["tps"])
    mid = dict(ordered[len(ordered) // 2])
    mid["all_tps"] = [round(r["tps"]) for r in results]
    return mid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="head-to-head line (1000 in flight): alternate NATS and ledgermq this many "
        "times and report each one's median (both vary run to run on a shared VM)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ledgermq-bench-") as name:
        tmp = Path(name)
        head = {"size": 1024, "inflight": 1000}
        nats_runs, ours = [], []
        for k in range(args.repeat):
            os.sync()
            nats_runs.append(nats_peer(tmp, args.duration, 1000, 1024))
            ours.append(ledgermq_run(tmp, "ASYNC_FLUSH", head, args.duration, f"head{k}"))
        peer = median_of(nats_runs)
        os.sync()
        peer1 = nats_peer(tmp, args.duration, 1, 1024)
        rows.append(median_of(ours))
        for i, run in enumerate(
            [
                {"size": 1024, "inflight": 100, "batch": 32},
                {"size": 1024, "inflight": 1000, "batch": 32},
                {"size": 1024, "inflight": 1},
            ]
        ):
            rows.append(ledgermq_run(tmp, "ASYNC_FLUSH", run, args.duration, f"ASYNC{i}"))
        rows.append(ledgermq_run(tmp, "SYNC_FLUSH", head, args.duration, "SYNC0"))
    if args.json:
        print(json.dumps({"nats": [peer, peer1], "ledgermq": rows}))
        return
    print("| system | durability | size | in flight | batch | msg/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")

    def runs(r: dict) -> str:
        return f" (median of {r['all_tps']})" if "all_tps" in r else ""

    for p in (peer, peer1):
        print(
            f"| NATS JetStream 2.9 (nats-py) | file, R1, no fsync per ack | {p['size']} | "
            f"{p['inflight']} | 1 | {p['tps']:,.0f}{runs(p)} | {p['p50_ms']} | {p['p99_ms']} |"
        )
    for r in rows:
        print(
            f"| ledgermq | {r['flush_disk_type']} | {r['size']} | {r['inflight']} | "
            f"{r['batch']} | {r['tps']:,.0f}{runs(r)} | {r['p50_ms']} | {r['p99_ms']} |"
        )
    print()
    for r in rows:
        print(f"    {r['command']}")


if __name__ == "__main__":
    main()
