"""`ledgermq bench produce` on a DLedger broker group against NATS JetStream R3, same run.

    .venv/bin/python bench/dledger_broker_compare.py [--duration 10] [--inflight 100,1000]
        [--batch 32] [--batch-inflight 100] [--json] [--skip-nats] [--skip-ledgermq] [--keep]

Runs, one after the other on this machine (every client is its own process):
1. NATS JetStream: three nats-server processes (Debian's nats-server) in one cluster, each
   with JetStream on and its own store directory; once a 3-replica stream can be created
   (bench/peers/nats_cluster.py), bench/peers/nats_jetstream.py publishes 1 KiB messages
   to a 3-replica file stream at each `--inflight`, every publish waiting for its ack.
2. ledgermq: a NameServer process and three `ledgermq broker` processes forming one
   DLedger group (enableDLegerCommitLog=true, durable: a message is acknowledged once a
   majority has it fsynced and it is applied on the master). Once the group has a master
   and the topic a route, `ledgermq bench produce` runs at each `--inflight` twice: one
   request per send, and with the producer's auto-batching (`--auto-batch`: single sends,
   each awaited and answered on its own, that meet in one event-loop iteration travel as
   one batch request, like the Java producer's autoBatch); and once with `--batch`
   messages per send at `--batch-inflight`.

The peer's client library (nats-py) lives in .venv-bench (bench/dledger_compare.py makes
it from bench/peers/requirements.txt), never in the project's venv. Prints a Markdown table
(for bench/RESULTS.md), the exact command lines and the issue's targets, or with `--json`
all rows as JSON. Progress (one line per run started) goes to stderr. Every process this
starts is stopped when it ends, also on Ctrl-C or an error, and its temporary directory
(stores, logs) removed, unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench" / "peers"))
from bench.dledger_compare import (  # noqa: E402
    ensure_peer_venv,
    print_report,
    run_json,
    shown,
)
from peer_util import die_with_parent  # noqa: E402
from tests.procs import ServerProcess, free_port, free_port_pair  # noqa: E402

PEERS_DIR = REPO / "bench/peers"
HOST = "127.0.0.1"
CLUSTER = "DefaultCluster"
GROUP = "RaftNode00"
IDS = ("n0", "n1", "n2")
TOPIC = "BenchDLedger"
# RocketMQ's published DLedger figure: about 3,000 msg/s with all peers on one host.
ROCKETMQ_DLEDGER_TPS = 3_000
TPS_TARGET = 10 * ROCKETMQ_DLEDGER_TPS


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Ports:
    """Distinct loopback ports; a broker's listenPort also keeps listenPort+1 free (HA)."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def take(self, pair: bool = False) -> int:
        for _ in range(100):
            port = free_port_pair() if pair else free_port()
            wanted = {port, port + 1} if pair else {port}
            if not wanted & self.taken:
                self.taken |= wanted
                return port
        raise RuntimeError("no distinct free port")


def ledgermq_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledgermq", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


# ---- NATS JetStream, 3 nodes ---------------------------------------------------------


class NatsCluster:
    """Three nats-server processes in one cluster, JetStream on, each with its own store."""

    def __init__(self, workdir: Path, ports: Ports) -> None:
        self.binary = shutil.which("nats-server") or "/usr/bin/nats-server"
        if not Path(self.binary).exists():
            raise SystemExit("nats-server not found: apt-get install -y nats-server")
        self.workdir = workdir
        self.client_ports = [ports.take() for _ in range(3)]
        self.cluster_ports = [ports.take() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def url(self, i: int = 0) -> str:
        return f"nats://{HOST}:{self.client_ports[i]}"

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        return out.stdout.strip().rsplit("v", 1)[-1] or "?"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            routes = ",".join(
                f"nats://{HOST}:{p}" for j, p in enumerate(self.cluster_ports) if j != i
            )
            cmd = [
                self.binary,
                "-a", HOST,
                "-p", str(self.client_ports[i]),
                "--server_name", f"s{i}",
                "--cluster_name", "bench",
                "--cluster", f"nats://{HOST}:{self.cluster_ports[i]}",
                "--routes", routes,
                "-js",
                "-sd", str(self.workdir / f"s{i}"),
                "-l", str(self.workdir / f"s{i}.log"),
            ]  # fmt: skip
            self.procs.append(
                subprocess.Popen(
                    cmd,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=die_with_parent,
                )
            )

    def wait_ready(self, python: Path, timeout: float) -> dict:
        """Until an R3 stream can be created (the JetStream meta group has a leader and
        knows every peer)."""
        cmd = [
            str(python), str(PEERS_DIR / "nats_cluster.py"),
            "--server", self.url(0),
            "--replicas", "3",
            "--timeout", str(timeout),
        ]  # fmt: skip
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout + 30)
        dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
        if proc.returncode != 0 or dead:
            tails = "\n".join(
                f"--- nats s{i} ---\n{log_tail(self.workdir / f's{i}.log', 15)}" for i in range(3)
            )
            raise RuntimeError(f"NATS cluster not ready (exited: {dead}):\n{tails}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def nats_runs(tmp: Path, ports: Ports, args: argparse.Namespace) -> list[dict]:
    python = ensure_peer_venv()
    cluster = NatsCluster(tmp / "nats", ports)
    rows = []
    try:
        progress(f"starting a 3-node NATS JetStream cluster ({cluster.binary})")
        cluster.start()
        ready = cluster.wait_ready(python, args.ready_timeout)
        progress(f"NATS cluster ready after {ready['ready_s']} s")
        version = cluster.version()
        for inflight in args.inflight:
            os.sync()
            cmd = [
                str(python), str(PEERS_DIR / "nats_jetstream.py"),
                "--server", cluster.url(0),
                "--replicas", "3",
                "--size", str(args.size),
                "--inflight", str(inflight),
                "--duration", str(args.duration),
            ]  # fmt: skip
            progress(f"run: NATS JetStream R3, {inflight} in flight")
            row = run_json(cmd, timeout=args.duration + 120)
            row.update(
                system=f"NATS JetStream {version} (nats-py)",
                kind="nats",
                batch=1,
                durability="3-node cluster, file stream R3, ack after quorum (no fsync per ack)",
                command=shown(cmd),
            )
            rows.append(row)
    finally:
        cluster.stop()
    return rows


# ---- ledgermq DLedger broker group -----------------------------------------------------


class BrokerGroup:
    """A NameServer process and three broker processes forming one DLedger group."""

    def __init__(self, workdir: Path, ports: Ports) -> None:
        self.workdir = workdir
        self.ns = f"{HOST}:{ports.take()}"
        self.listen = {i: ports.take(pair=True) for i in IDS}
        self.raft = {i: ports.take() for i in IDS}
        self.peers = ";".join(f"{i}-{HOST}:{self.raft[i]}" for i in IDS)
        self.namesrv: ServerProcess | None = None
        self.brokers: dict[str, ServerProcess] = {}

    def _write(self, name: str, lines: list[str]) -> str:
        path = self.workdir / name
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def log_path(self, member: str) -> Path:
        return self.workdir / f"broker-{member}.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self._write(
            "namesrv.properties",
            [f"listenPort={self.ns.rsplit(':', 1)[1]}", f"kvConfigPath={self.workdir / 'kv.json'}"],
        )
        self.namesrv = ServerProcess(
            ["namesrv", "-c", conf],
            ready_text="boot success",
            log_path=self.workdir / "namesrv.log",
        ).start()
        for i in IDS:
            conf = self._write(
                f"broker-{i}.properties",
                [
                    f"brokerClusterName={CLUSTER}",
                    f"brokerName={GROUP}",
                    f"listenPort={self.listen[i]}",
                    f"namesrvAddr={self.ns}",
                    f"brokerIP1={HOST}",
                    f"storePathRootDir={self.workdir / i}",
                    "enableDLegerCommitLog=true",
                    f"dLegerGroup={GROUP}",
                    f"dLegerPeers={self.peers}",
                    f"dLegerSelfId={i}",
                    "preferredLeaderId=n0",
                ],
            )
            self.brokers[i] = ServerProcess(
                ["broker", "-c", conf], ready_text="boot success", log_path=self.log_path(i)
            )
        # Together: a member may wait for the others before it reports boot success.
        with ThreadPoolExecutor(len(IDS)) as pool:
            for future in [pool.submit(b.start, 60.0) for b in self.brokers.values()]:
                future.result()

    def wait_master(self, timeout: float) -> dict:
        """dledgerStatus until the group has a leader and one member is brokerId 0.

        The first election may pick any member; the group then hands leadership over to
        preferredLeaderId (n0). Waiting for that keeps the handover out of the measured
        runs; if it has not happened within `timeout`, any master will do."""
        deadline = time.monotonic() + timeout
        last = ""
        anyone: dict | None = None
        while time.monotonic() < deadline:
            self.check_alive()
            proc = ledgermq_cli("admin", "dledgerStatus", "-n", self.ns, "--json")
            last = (proc.stdout + proc.stderr).strip()
            if proc.returncode == 0:
                try:
                    groups = json.loads(proc.stdout)
                except ValueError:
                    groups = []
                for g in groups:
                    masters = [m for m in g.get("members", []) if m.get("brokerId") == 0]
                    if g.get("group") == GROUP and g.get("leaderId") and len(masters) == 1:
                        anyone = g
                        if g["leaderId"] == IDS[0] and masters[0].get("selfId") == IDS[0]:
                            return g
            time.sleep(0.3)
        if anyone is not None:
            progress(f"warning: the preferred leader {IDS[0]} is not the master after {timeout}s")
            return anyone
        raise RuntimeError(f"no master in {GROUP} within {timeout}s; last dledgerStatus:\n{last}")

    def create_topic(self, addrs: list[str], timeout: float) -> None:
        for addr in addrs:
            proc = ledgermq_cli(
                "admin", "updateTopic", "-n", self.ns, "-b", addr, "-t", TOPIC, "-r", "8", "-w", "8"
            )  # fmt: skip
            if proc.returncode != 0:
                # A follower may refuse (or forward) it; the master's copy is what counts.
                progress(f"updateTopic on {addr} exited {proc.returncode}: {proc.stderr.strip()}")
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            proc = ledgermq_cli("admin", "topicRoute", "-n", self.ns, "-t", TOPIC, "--json")
            last = (proc.stdout + proc.stderr).strip()
            if proc.returncode == 0:
                try:
                    route = json.loads(proc.stdout)
                except ValueError:
                    route = {}
                brokers = route.get("brokerDatas") or []
                if any("0" in {str(k) for k in b.get("brokerAddrs", {})} for b in brokers):
                    return
            time.sleep(0.3)
        raise RuntimeError(f"no route with a master for {TOPIC} within {timeout}s:\n{last}")

    def check_alive(self) -> None:
        for i, b in self.brokers.items():
            if b.proc is not None and b.proc.poll() is not None:
                raise RuntimeError(
                    f"broker {i} exited with {b.proc.returncode}:\n{log_tail(self.log_path(i))}"
                )

    def stop(self) -> None:
        for b in self.brokers.values():
            if b.proc is not None and b.proc.poll() is None:
                b.proc.send_signal(signal.SIGTERM)  # all at once, then wait for each
        for b in [*self.brokers.values(), self.namesrv]:
            if b is not None:
                try:
                    b.stop()
                except Exception as exc:  # noqa: BLE001 - stop the others anyway
                    progress(f"could not stop {b.args[:1]}: {exc}")

    def log_problems(self, limit: int = 12) -> list[str]:
        """Warning/error lines (and tracebacks) from the brokers' and NameServer's logs."""
        out = []
        paths = [self.workdir / "namesrv.log", *(self.log_path(i) for i in IDS)]
        for path in paths:
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            bad = [
                line
                for line in lines
                if any(w in line for w in ("ERROR", "WARNING", "Traceback", "CRITICAL"))
            ]
            if bad:
                out.append(f"--- {path.name}: {len(bad)} warning/error lines, first {limit} ---")
                out += bad[:limit]
        return out


def ledgermq_runs(tmp: Path, ports: Ports, args: argparse.Namespace) -> tuple[list[dict], list]:
    group = BrokerGroup(tmp / "ledgermq", ports)
    rows = []
    try:
        progress(f"starting a NameServer and a 3-member DLedger broker group ({group.peers})")
        group.start()
        status = group.wait_master(args.ready_timeout)
        addrs = [m["addr"] for m in status["members"]]
        progress(f"DLedger group has a master: leader {status['leaderId']}, members {addrs}")
        group.create_topic(addrs, args.ready_timeout)
        plan = [(n, 1, False) for n in args.inflight]
        plan += [(n, 1, True) for n in args.inflight]
        plan += [(n, args.batch, False) for n in args.batch_inflight]
        for inflight, batch, auto in plan:
            os.sync()
            group.check_alive()
            cmd = [
                sys.executable, "-m", "ledgermq", "bench", "produce",
                "-n", group.ns,
                "-t", TOPIC,
                "-s", str(args.size),
                "--inflight", str(inflight),
                "--duration", str(args.duration),
                "--json",
            ]  # fmt: skip
            if batch > 1:
                cmd[-1:-1] = ["--batch", str(batch)]
            if auto:
                cmd[-1:-1] = ["--auto-batch"]
            progress(
                f"run: ledgermq DLedger group, {inflight} in flight, batch {batch}"
                + (", auto-batch" if auto else "")
            )
            try:
                row = run_json(cmd, timeout=args.duration + 120)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                progress(f"run failed: {exc}")
                for i in IDS:
                    progress(f"--- broker {i} (last lines) ---\n{log_tail(group.log_path(i), 15)}")
                row = {"failed": str(exc), "tps": 0.0, "p50_ms": "", "p99_ms": "", "errors": ""}
                row.update(size=args.size, inflight=inflight)
            row.update(
                system="ledgermq",
                kind="ledgermq",
                batch=batch,
                auto_batch=auto,
                durability="3-member DLedger group, durable (quorum fsync before ack)",
                command=shown(cmd),
            )
            rows.append(row)
    finally:
        group.stop()
    return rows, group.log_problems()


# ---- report ----------------------------------------------------------------------------


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| system | durability | size | in flight | batch | msg/s | p50 ms | p99 ms | errors "
        "| other load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tps = "failed" if r.get("failed") else f"{r['tps']:,.0f}"
        batch = f"{r['batch']} (auto-batch)" if r.get("auto_batch") else str(r["batch"])
        lines.append(
            f"| {r['system']} | {r['durability']} | {r['size']} | {r['inflight']} | "
            f"{batch} | {tps} | {r['p50_ms']} | {r['p99_ms']} | {r.get('errors', '')} | "
            f"{r.get('other_cpu_cores', '')} |"
        )
    return lines


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets for single sends, auto-batched (the headline) and one request
    per send (shown beside it, so nobody has to guess which one met what)."""
    nats = {r["inflight"]: r for r in rows if r["kind"] == "nats"}
    out = ["| target | result |", "|---|---|"]
    for auto, label in ((True, "single sends, auto-batch"), (False, "one request per send")):
        mine = {
            r["inflight"]: r
            for r in rows
            if r["kind"] == "ledgermq" and r["batch"] == 1 and bool(r.get("auto_batch")) == auto
        }
        for n, peer in sorted(nats.items()):
            m = mine.get(n)
            if m is None:
                continue
            ratio = m["tps"] / peer["tps"] if peer["tps"] else float("inf")
            verdict = "met" if m["tps"] >= peer["tps"] else "**not met**"
            out.append(
                f"| ledgermq ({label}), {n} in flight ≥ NATS JetStream R3 | {verdict}: "
                f"{m['tps']:,.0f} vs {peer['tps']:,.0f} msg/s ({ratio:.2f}x) |"
            )
        for n, m in sorted(mine.items()):
            verdict = "met" if m["tps"] >= TPS_TARGET else "**not met**"
            out.append(
                f"| ledgermq ({label}), {n} in flight ≥ {TPS_TARGET:,} msg/s (10x RocketMQ's "
                f"~{ROCKETMQ_DLEDGER_TPS:,}/s DLedger figure) | {verdict}: {m['tps']:,.0f} msg/s |"
            )
    for r in rows:
        if r["kind"] == "ledgermq" and r["batch"] > 1:
            out.append(
                f"| (for reference) ledgermq, batch {r['batch']}, {r['inflight']} in flight | "
                f"{r['tps']:,.0f} msg/s |"
            )
    return out


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per line (10)")
    parser.add_argument("--size", type=int, default=1024, help="message body bytes (1024)")
    parser.add_argument(
        "--inflight", type=ints, default=[100, 1000],
        help="in flight for NATS and ledgermq, one message per send (default 100,1000)",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=32, help="messages per batch send (32)")
    parser.add_argument(
        "--batch-inflight", type=ints, default=[100],
        help="in flight for ledgermq's batch lines (default 100; empty: none)",
    )  # fmt: skip
    parser.add_argument(
        "--ready-timeout", type=float, default=30,
        help="seconds to wait for a NATS R3 stream / a DLedger master and route (30)",
    )  # fmt: skip
    parser.add_argument("--skip-nats", action="store_true")
    parser.add_argument("--skip-ledgermq", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (stores, logs)")
    parser.add_argument("--json", action="store_true", help="all rows as JSON")
    args = parser.parse_args()

    # SIGTERM / SIGHUP unwind like Ctrl-C, so every `finally` stops its processes.
    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    rows: list[dict] = []
    problems: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="ledgermq-dledger-broker-bench-"))
    ports = Ports()
    try:
        if not args.skip_nats:
            rows += nats_runs(tmp, ports, args)
        if not args.skip_ledgermq:
            mine, problems = ledgermq_runs(tmp, ports, args)
            rows += mine
    finally:
        if args.keep:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if problems:
        progress("ledgermq server logs had warnings/errors:")
        progress("\n".join(problems))
    if args.json:
        print(json.dumps({"rows": rows, "log_problems": problems}))
        return
    print_report(
        table(rows),
        "(other load: cores used by processes outside this benchmark during the line; a\n"
        "line is only comparable with another if both had about 0.)",
        [r["command"] for r in rows],
        targets(rows),
    )


if __name__ == "__main__":
    main()
