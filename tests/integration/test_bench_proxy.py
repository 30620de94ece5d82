"""`ledgermq bench proxy-produce` against a real broker with --enable-proxy (local mode).

A short smoke run (real processes): the command prints one JSON line with the
`bench produce` fields and the messages it counted are stored on the broker.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from ledgermq.client.admin import AdminClient
from tests.procs import free_port, free_port_pair, run_ledgermq

TOPIC = "BenchProxySmoke"


async def _create_topic(namesrv: str) -> None:
    admin = AdminClient(namesrv)
    await admin.start()
    try:
        deadline = time.monotonic() + 20
        while True:  # the broker registers with the NameServer shortly after boot
            try:
                await admin.create_topic(TOPIC, cluster="DefaultCluster")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.shutdown()


async def _stored(namesrv: str) -> int:
    admin = AdminClient(namesrv)
    await admin.start()
    try:
        stats = await admin.topic_stats(TOPIC)
        return sum(o.max_offset - o.min_offset for o in stats.values())
    finally:
        await admin.shutdown()


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_proxy_produce_reports_json_and_the_messages_arrive(tmp_path, processes):
    ns_port, broker_port, grpc_port = free_port(), free_port_pair(), free_port()
    namesrv = f"127.0.0.1:{ns_port}"
    ns_conf = _write(tmp_path / "namesrv.properties", f"kvConfigPath={tmp_path / 'kv.json'}\n")
    broker_conf = _write(
        tmp_path / "broker.conf",
        f"brokerName=bench-broker\nlistenPort={broker_port}\nbrokerIP1=127.0.0.1\n"
        f"namesrvAddr={namesrv}\nstorePathRootDir={tmp_path / 'store'}\n"
        "mappedFileSizeCommitLog=16777216\n",
    )
    proxy_conf = _write(tmp_path / "rmq-proxy.json", json.dumps({"grpcServerPort": grpc_port}))
    processes.create(
        ["namesrv", "-c", ns_conf, "-p", str(ns_port)], ready_text="boot success"
    ).start()
    processes.create(
        ["broker", "-c", broker_conf, "--enable-proxy", "-pc", proxy_conf],
        ready_text="proxy boot success",
    ).start()
    asyncio.run(_create_topic(namesrv))

    proc = run_ledgermq(
        "bench", "proxy-produce", "--endpoint", f"127.0.0.1:{grpc_port}", "-n", namesrv,
        "-t", TOPIC, "-s", "256", "--inflight", "8", "--duration", "1", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["mode"] == "proxy-produce" and result["errors"] == 0
    assert result["tps"] > 0 and result["messages"] > 0
    assert result["size"] == 256 and result["inflight"] == 8 and result["batch"] == 1
    assert result["p50_ms"] > 0 and result["p99_ms"] >= result["p50_ms"]
    assert result["flush_disk_type"] == "ASYNC_FLUSH"
    assert result["cpu_s"] > 0
    # every counted send was stored, plus the one warm-up send before the window
    assert asyncio.run(_stored(namesrv)) == result["messages"] + 1
