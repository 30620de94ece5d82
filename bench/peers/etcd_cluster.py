"""Peer benchmark: put throughput and latency of a 3-member etcd 3.4 cluster on loopback.

    .venv-bench/bin/python bench/peers/etcd_cluster.py --inflight 100 --size 1024 --duration 10

Starts `--members` etcd processes (Debian's etcd-server 3.4: `apt-get install -y
etcd-server`) with data directories in a fresh temporary directory, waits until every
member is healthy and a leader is elected, then runs the load from this process (a
separate process from every etcd member) and prints one JSON object:
{tps, p50_ms, p99_ms, max_ms, count, errors, ...}. Progress goes to stderr once a second.

etcd runs with its defaults, so every acknowledged put is in the WAL and fsynced on a
quorum (the same promise as ledgermq's durable mode).

The client. `--client grpc` (the default) is aetcd, a maintained asyncio client for the
etcd v3 gRPC API (grpcio's asyncio stack); all puts share one HTTP/2 channel to the
leader, as etcd's own Go client does. `--client http` instead posts to etcd's v3 JSON
gateway (`/v3/kv/put`) with aiohttp over keep-alive HTTP/1.1 connections, one connection
per request in flight. Both are real Python clients; we measured both on this machine
and default to the faster one so that etcd gets a fair, high number (the issue asks for
"a Python client"): at 100 in flight gRPC did 5.5-8.8k puts/s, the JSON gateway 2.5k; at
one in flight both were about 1 ms. (uvloop, `--uvloop`, made no difference for gRPC; a
threaded grpcio client with `.future()` calls measured the same as aetcd.)
The client talks to the leader, so no put pays a forwarding hop. Keys cycle over
`--keys` distinct names, so the store does not grow one key per put.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import suppress
from pathlib import Path

from peer_util import die_with_parent, free_ports, log, percentile


class EtcdCluster:
    """`members` etcd processes on loopback, each with its own data directory."""

    def __init__(self, binary: str, workdir: Path, members: int, log_level: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.members = members
        self.log_level = log_level
        ports = free_ports(2 * members)
        self.client_ports = ports[:members]
        self.peer_ports = ports[members:]
        self.names = [f"m{i}" for i in range(members)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def client_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.client_ports[i]}"

    def start(self, timeout: float = 30.0) -> None:
        initial = ",".join(
            f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer_ports, strict=True)
        )
        for i, name in enumerate(self.names):
            peer = f"http://127.0.0.1:{self.peer_ports[i]}"
            cmd = [
                self.binary,
                "--name", name,
                "--data-dir", str(self.workdir / name),
                "--listen-client-urls", self.client_url(i),
                "--advertise-client-urls", self.client_url(i),
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", "ledgermq-bench",
                "--logger", "zap",
                "--log-level", self.log_level,
            ]  # fmt: skip
            logfile = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - child owns it
            self.procs.append(
                subprocess.Popen(
                    cmd,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    preexec_fn=die_with_parent,
                )
            )
            logfile.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"etcd exited with {p.returncode}; see {self.workdir}")
            if all(self._healthy(i) for i in range(self.members)) and self.leader() is not None:
                return
            time.sleep(0.1)
        raise RuntimeError(f"etcd cluster not healthy within {timeout}s; see {self.workdir}")

    def _post(self, i: int, path: str, body: dict) -> dict:
        req = urllib.request.Request(
            self.client_url(i) + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=2) as resp:
            return json.loads(resp.read())

    def _healthy(self, i: int) -> bool:
        try:
            with urllib.request.urlopen(self.client_url(i) + "/health", timeout=1) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except OSError:
            return False

    def leader(self) -> int | None:
        """Index of the member that is leader, if one answers as such."""
        for i in range(self.members):
            try:
                status = self._post(i, "/v3/maintenance/status", {})
            except OSError:
                continue
            if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                return i
        return None

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


class GrpcPutter:
    """Puts through aetcd (gRPC, one HTTP/2 channel)."""

    def __init__(self, url: str) -> None:
        import aetcd

        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.client = aetcd.Client(host=host, port=int(port))

    async def open(self) -> None:
        await self.client.connect()

    async def put(self, key: bytes, value: bytes) -> None:
        await self.client.put(key, value)

    async def close(self) -> None:
        await self.client.close()


class HttpPutter:
    """Puts through etcd's v3 JSON gateway with aiohttp, keep-alive connections."""

    def __init__(self, url: str, inflight: int) -> None:
        self.url = url + "/v3/kv/put"
        self.inflight = inflight
        self.session = None

    async def open(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.inflight, force_close=False),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def put(self, key: bytes, value: bytes) -> None:
        # Encoding the value per put is part of this client's cost, as it is for any client.
        body = '{"key":"%s","value":"%s"}' % (  # noqa: UP031 - fastest way to build it
            base64.b64encode(key).decode(),
            base64.b64encode(value).decode(),
        )
        async with self.session.post(
            self.url, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {payload[:200]!r}")

    async def close(self) -> None:
        await self.session.close()


async def load(args: argparse.Namespace, url: str) -> dict:
    putter = GrpcPutter(url) if args.client == "grpc" else HttpPutter(url, args.inflight)
    await putter.open()
    value = os.urandom(args.size // 2 + 1).hex()[: args.size].encode()
    keys = [f"bench/{i:08d}".encode() for i in range(args.keys)]
    # Warm-up: connections open, leader's first entries written.
    for i in range(min(args.inflight, 50)):
        await putter.put(keys[i % len(keys)], value)
    latencies: list[float] = []
    errors = 0
    counter = 0
    started = time.monotonic()
    stop_at = started + args.duration

    async def worker() -> None:
        nonlocal errors, counter
        while time.monotonic() < stop_at:
            key = keys[counter % len(keys)]
            counter += 1
            t0 = time.perf_counter()
            try:
                await putter.put(key, value)
            except Exception as exc:  # noqa: BLE001 - counted and shown
                errors += 1
                if errors <= 3:
                    log(f"put failed: {exc!r}")
                continue
            latencies.append((time.perf_counter() - t0) * 1000)

    async def progress() -> None:
        last = 0
        while True:
            await asyncio.sleep(1.0)
            done = len(latencies)
            elapsed = time.monotonic() - started
            log(f"etcd: {elapsed:5.1f}s {done - last:8d} puts/s, {errors} errors")
            last = done

    reporter = asyncio.create_task(progress())
    await asyncio.gather(*(worker() for _ in range(args.inflight)))
    elapsed = time.monotonic() - started
    reporter.cancel()
    with suppress(asyncio.CancelledError):
        await reporter
    await putter.close()
    latencies.sort()
    return {
        "peer": f"etcd 3.4 cluster, {args.members} members, defaults (WAL fsync before ack)",
        "client": "aetcd (gRPC)" if args.client == "grpc" else "aiohttp -> /v3/kv/put (JSON)",
        "count": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "tps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3) if latencies else 0.0,
        "size": args.size,
        "inflight": args.inflight,
    }


def etcd_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("-s", "--size", type=int, default=1024)
    parser.add_argument("--inflight", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--keys", type=int, default=1000, help="distinct keys cycled over")
    parser.add_argument("--client", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    parser.add_argument("--log-level", default="warn", help="etcd's --log-level")
    parser.add_argument("--workdir", help="keep data and logs here (default: a temp dir)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on terminate too
    if not Path(args.etcd).exists():
        raise SystemExit("etcd not found: apt-get install -y etcd-server")
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="etcd-bench-")
        workdir = Path(tmp.name)
    cluster = EtcdCluster(args.etcd, workdir, args.members, args.log_level)
    try:
        cluster.start()
        leader = cluster.leader()
        assert leader is not None
        log(f"etcd {etcd_version(args.etcd)}: {args.members} members healthy, leader m{leader}")
        if args.uvloop:
            import uvloop

            result = uvloop.run(load(args, cluster.client_url(leader)))
        else:
            result = asyncio.run(load(args, cluster.client_url(leader)))
        result["etcd_version"] = etcd_version(args.etcd)
    finally:
        cluster.stop()
        if tmp is not None:
            tmp.cleanup()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
