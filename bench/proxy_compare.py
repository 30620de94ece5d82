"""SendMessage through the gRPC proxy against direct remoting sends, same broker, same run.

    .venv/bin/python bench/proxy_compare.py [--duration 10] [--inflight 100,1000]
        [--size 1024] [--modes cluster,local] [--channels 1] [--repeat 1] [--no-floor]
        [--json] [--keep]

Runs, one after the other on this machine (every process is its own `python -m ledgermq`):
1. A NameServer and one broker (ASYNC_FLUSH, otherwise the default config); the topic is
   created with 8 queues. `ledgermq bench produce` (remoting, our client library) runs at
   each `--inflight`: the baseline.
2. cluster: a `ledgermq proxy` process in front of that broker; `ledgermq bench
   proxy-produce` (grpc.aio, one message per SendMessage) at each `--inflight`.
3. local: the broker restarted on the same store with `--enable-proxy` (the proxy runs
   in the broker's process); `ledgermq bench proxy-produce` at each `--inflight`.
4. floor (unless --no-floor): the same proxy-produce against our MessagingService with a
   backend that stores nothing (this script with --noop-server): what grpc.aio alone
   costs per SendMessage on each side, the ceiling for any proxy built on it here.

Issue 5's target: proxy msg/s >= 70% of direct msg/s at the same size and in flight.
For every line the table shows the CPU each process spent per message (µs, from
/proc/PID/stat around the run; the client's own figure covers only its measured window),
so it is clear where the time goes, plus /proc/loadavg before the line and the cores
other processes used during it (this machine is shared). Prints a Markdown table, the
exact command lines and the target per mode, or with `--json` all rows. Progress goes to
stderr. Every process this starts is stopped at the end, also on Ctrl-C or an error, and
its temporary directory removed unless `--keep`.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.dledger_compare import OtherCpu, print_report, shown  # noqa: E402
from tests.procs import ServerProcess, free_port, free_port_pair  # noqa: E402

HOST = "127.0.0.1"
CLUSTER = "DefaultCluster"
BROKER = "broker-a"
TOPIC = "BenchProxy"
TARGET = 0.70
TICK = os.sysconf("SC_CLK_TCK")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cpu_ticks(pid: int) -> int:
    """utime + stime of a live process (clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def ledgermq_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledgermq", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


class Setup:
    """The NameServer, the broker (plain or with --enable-proxy) and the cluster proxy."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ns = f"{HOST}:{free_port()}"
        self.broker_port = free_port_pair()
        self.grpc_port = free_port()
        self.namesrv: ServerProcess | None = None
        self.broker: ServerProcess | None = None
        self.proxy: ServerProcess | None = None

    def _write(self, name: str, text: str) -> str:
        path = self.workdir / name
        path.write_text(text)
        return str(path)

    def start_namesrv(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self._write(
            "namesrv.properties",
            f"listenPort={self.ns.rsplit(':', 1)[1]}\nkvConfigPath={self.workdir / 'kv.json'}\n",
        )
        self.namesrv = ServerProcess(
            ["namesrv", "-c", conf], ready_text="boot success", log_path=self.workdir / "ns.log"
        ).start()

    def start_broker(self, local_proxy: bool) -> None:
        conf = self._write(
            "broker.conf",
            "\n".join(
                [
                    f"brokerClusterName={CLUSTER}",
                    f"brokerName={BROKER}",
                    "brokerId=0",
                    f"listenPort={self.broker_port}",
                    f"namesrvAddr={self.ns}",
                    f"brokerIP1={HOST}",
                    f"storePathRootDir={self.workdir / 'store'}",
                    "flushDiskType=ASYNC_FLUSH",
                ]
            )
            + "\n",
        )
        args = ["broker", "-c", conf]
        ready = "boot success"
        if local_proxy:
            args += ["--enable-proxy", "-pc", self._proxy_conf()]
            ready = "proxy boot success"
        log = self.workdir / ("broker-local.log" if local_proxy else "broker.log")
        self.broker = ServerProcess(args, ready_text=ready, log_path=log).start(60.0)

    def _proxy_conf(self) -> str:
        conf = {
            "rocketMQClusterName": CLUSTER,
            "namesrvAddr": self.ns,
            "grpcServerPort": self.grpc_port,
        }
        return self._write("rmq-proxy.json", json.dumps(conf))

    def start_cluster_proxy(self) -> None:
        self.proxy = ServerProcess(
            ["proxy", "-pc", self._proxy_conf()],
            ready_text="proxy boot success",
            log_path=self.workdir / "proxy.log",
        ).start()

    def create_topic(self, timeout: float = 30) -> None:
        """The topic on the broker, then until the NameServer routes it (the broker
        registers shortly after boot)."""
        addr = f"{HOST}:{self.broker_port}"
        deadline = time.monotonic() + timeout
        while True:
            proc = ledgermq_cli(
                "admin", "updateTopic", "-n", self.ns, "-b", addr, "-t", TOPIC, "-r", "8", "-w", "8"
            )  # fmt: skip
            route = ledgermq_cli("admin", "topicRoute", "-n", self.ns, "-t", TOPIC, "--json")
            if proc.returncode == 0 and route.returncode == 0 and BROKER in route.stdout:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"no route for {TOPIC}: {proc.stderr}{route.stderr}")
            time.sleep(0.3)

    def pids(self) -> dict[str, int]:
        out = {}
        for name, p in (("namesrv", self.namesrv), ("broker", self.broker), ("proxy", self.proxy)):
            if p is not None and p.proc is not None and p.proc.poll() is None:
                out[name] = p.proc.pid
        return out

    def stop_broker(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def stop_proxy(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None

    def stop(self) -> None:
        for p in (self.proxy, self.broker, self.namesrv):
            if p is not None:
                try:
                    p.stop()
                except Exception as exc:  # noqa: BLE001 - stop the others anyway
                    progress(f"could not stop {p.args[:1]}: {exc}")


def noop_server(port: int) -> None:
    """Our ProxyServer (servicer, options, uvloop) over a backend that answers every
    send at once without storing it: the gRPC floor."""
    from ledgermq.cli.runtime import run_async, wait_for_shutdown_signal
    from ledgermq.client.route import TopicRoute
    from ledgermq.common.message import MessageQueue
    from ledgermq.common.route_data import BrokerData, QueueData
    from ledgermq.proxy.backend import ClusterBackend, SendOutcome
    from ledgermq.proxy.config import ProxyConfig
    from ledgermq.proxy.server import ProxyServer
    from ledgermq.proxy.status import Code

    route = TopicRoute(
        queue_datas=[QueueData(BROKER, 8, 8, 6)],
        broker_datas=[BrokerData(CLUSTER, BROKER, {0: f"{HOST}:10911"})],
    )

    class NoopBackend(ClusterBackend):
        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

        async def route(self, topic: str) -> TopicRoute:
            return route

        async def topic_attributes(self, topic: str) -> dict[str, str]:
            return {}

        async def send(self, out, timeout=None) -> SendOutcome:  # type: ignore[no-untyped-def]
            return SendOutcome(Code.OK, MessageQueue(out.topic, BROKER, 0), 0, "")

    async def serve() -> None:
        config = ProxyConfig(grpc_server_host=HOST, grpc_server_port=port)
        server = ProxyServer(config, NoopBackend(config))
        await server.start()
        print("The gRPC proxy boot success (no-op backend)", flush=True)
        await wait_for_shutdown_signal()
        await server.stop()

    run_async(serve)


class NoopProxy(ServerProcess):
    """`python bench/proxy_compare.py --noop-server PORT` as a ServerProcess."""

    def start(self, timeout: float = 30.0) -> ServerProcess:
        import threading

        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--noop-server", self.args[0]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            cwd=REPO,
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError(f"no-op proxy did not start:\n{self.output()[-2000:]}")
        return self


def measured_run(cmd: list[str], setup: Setup, timeout: float) -> dict:
    """Runs one benchmark command; adds load and the CPU per message of every process."""
    progress("$ " + shown(cmd))
    load = loadavg()
    pids = setup.pids()
    before = {name: cpu_ticks(pid) for name, pid in pids.items()}
    with OtherCpu() as other:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout, cwd=REPO)
    after = {name: cpu_ticks(pid) for name, pid in pids.items()}
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:5])} exited with {proc.returncode}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    messages = max(1, row["messages"])
    cpu_us = {name: (after[name] - before[name]) / TICK / messages * 1e6 for name in pids}
    cpu_us["client"] = row.get("cpu_s", 0.0) / messages * 1e6
    row.update(
        loadavg=load,
        other_cpu_cores=round(other.cores, 2),
        cpu_us={k: round(v, 1) for k, v in cpu_us.items()},
        command=shown(cmd),
    )
    if other.cores > 0.5:
        progress(f"warning: other processes used {other.cores:.2f} cores during this run")
    return row


def bench_cmd(args: argparse.Namespace, setup: Setup, kind: str, inflight: int) -> list[str]:
    common = [
        "-t", TOPIC,
        "-s", str(args.size),
        "--inflight", str(inflight),
        "--duration", str(args.duration),
        "--json",
    ]  # fmt: skip
    if kind == "direct":
        return [sys.executable, "-m", "ledgermq", "bench", "produce", "-n", setup.ns, *common]
    return [
        sys.executable, "-m", "ledgermq", "bench", "proxy-produce",
        "--endpoint", f"{HOST}:{setup.grpc_port}",
        "-n", setup.ns,
        "--channels", str(args.channels),
        *common,
    ]  # fmt: skip


def runs(args: argparse.Namespace, setup: Setup) -> list[dict]:
    rows: list[dict] = []

    def line(kind: str, mode: str, inflight: int) -> None:
        os.sync()  # the previous line's dirty pages are not this line's work
        progress(f"run: {mode}, {inflight} in flight (load {loadavg()})")
        row = measured_run(bench_cmd(args, setup, kind, inflight), setup, args.duration + 90)
        row.update(mode=mode, path=kind)
        rows.append(row)

    progress(f"starting a NameServer and broker {BROKER} (ASYNC_FLUSH) in {setup.workdir}")
    setup.start_namesrv()
    setup.start_broker(local_proxy=False)
    setup.create_topic()
    for _ in range(args.repeat):
        for inflight in args.inflight:
            line("direct", "direct (remoting)", inflight)
    if "cluster" in args.modes:
        progress("starting a cluster-mode proxy process")
        setup.start_cluster_proxy()
        for _ in range(args.repeat):
            for inflight in args.inflight:
                line("proxy", "proxy, cluster mode", inflight)
        setup.stop_proxy()
    if "local" in args.modes:
        progress("restarting the broker with --enable-proxy (local mode)")
        setup.stop_broker()
        setup.start_broker(local_proxy=True)
        for _ in range(args.repeat):
            for inflight in args.inflight:
                line("proxy", "proxy, local mode", inflight)
        setup.stop_broker()
    if args.floor:
        progress("starting our gRPC server with a no-op backend (the gRPC floor)")
        setup.proxy = NoopProxy(
            [str(setup.grpc_port)], ready_text="boot success", log_path=setup.workdir / "noop.log"
        ).start()
        for inflight in args.inflight:
            line("proxy", "floor: no-op backend (nothing stored)", inflight)
        setup.stop_proxy()
    return rows


def _direct_tps(rows: list[dict]) -> dict[int, float]:
    """Mean direct msg/s per in-flight value."""
    by: dict[int, list[float]] = {}
    for r in rows:
        if r["path"] == "direct":
            by.setdefault(r["inflight"], []).append(r["tps"])
    return {n: sum(v) / len(v) for n, v in by.items()}


def table(rows: list[dict]) -> list[str]:
    direct = _direct_tps(rows)
    lines = [
        "| path | size | in flight | msg/s | vs direct | p50 ms | p99 ms | errors "
        "| CPU µs/msg: client | broker | proxy | load avg | other load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = direct.get(r["inflight"])
        ratio = f"{r['tps'] / base:.0%}" if base else ""
        cpu = r["cpu_us"]
        proxy = cpu.get("proxy", "in broker" if r["mode"].endswith("local mode") else "")
        broker = cpu.get("broker", "")
        lines.append(
            f"| {r['mode']} | {r['size']} | {r['inflight']} | {r['tps']:,.0f} | {ratio} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {cpu['client']} | "
            f"{broker} | {proxy} | {r['loadavg']} | {r['other_cpu_cores']} |"
        )
    return lines


def targets(rows: list[dict]) -> list[str]:
    direct = _direct_tps(rows)
    out = ["| target | result |", "|---|---|"]
    seen: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        if r["path"] == "proxy":
            seen.setdefault((r["mode"], r["inflight"]), []).append(r["tps"])
    for (mode, n), tps in seen.items():
        base = direct.get(n)
        if not base or mode.startswith("floor"):
            continue
        mean = sum(tps) / len(tps)
        ratio = mean / base
        verdict = "met" if ratio >= TARGET else "**not met**"
        out.append(
            f"| {mode}, {n} in flight ≥ {TARGET:.0%} of direct | {verdict}: {mean:,.0f} vs "
            f"{base:,.0f} msg/s ({ratio:.0%}) |"
        )
    return out


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per line (10)")
    parser.add_argument("--size", type=int, default=1024, help="message body bytes (1024)")
    parser.add_argument("--inflight", type=ints, default=[100, 1000], help="(100,1000)")
    parser.add_argument("--channels", type=int, default=1, help="gRPC channels of the client")
    parser.add_argument(
        "--modes", type=lambda s: set(s.split(",")), default={"cluster", "local"},
        help="proxy modes to run (cluster,local)",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs per line (1)")
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false",
        help="skip the no-op backend lines (the gRPC floor)",
    )  # fmt: skip
    parser.add_argument("--noop-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (stores, logs)")
    parser.add_argument("--json", action="store_true", help="all rows as JSON")
    args = parser.parse_args()
    if args.noop_server is not None:
        noop_server(args.noop_server)
        return

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    tmp = Path(tempfile.mkdtemp(prefix="ledgermq-proxy-bench-"))
    setup = Setup(tmp)
    try:
        rows = runs(args, setup)
    finally:
        setup.stop()
        if args.keep:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    print_report(
        table(rows),
        "(durability: one broker, ASYNC_FLUSH. vs direct: against the mean direct msg/s at "
        "the same in flight.\nCPU µs/msg: each process's CPU time over the line / messages "
        "sent. load avg: /proc/loadavg\nbefore the line; other load: cores used by processes "
        "outside this benchmark during it.)",
        [r["command"] for r in rows],
        targets(rows),
    )


if __name__ == "__main__":
    main()
