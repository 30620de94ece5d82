"""The official v5 Python client through our proxy while a DLedger broker group fails over.

Three real broker processes in one DLedger group (the fault tests' BrokerTrio), a
NameServer and a `ledgermq proxy` process. The client sends and consumes with a
SimpleConsumer (receive + ack) before the master is killed with kill -9, then after a
new master is elected: every send the client saw acknowledged is consumed afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.integration.test_dledger_broker_faults import TOPIC, BrokerTrio, Cluster
from tests.interop.test_py5_proxy import VENV_PY, _drive
from tests.procs import free_port

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]
GROUP = "PyFailoverGroup"


async def _send(cluster: dict, count: int, deadline_s: float = 60) -> set[str]:
    """Sends until `count` messages were acknowledged (a send refused during the
    election is simply not counted); returns the acknowledged ids."""
    acked: set[str] = set()
    deadline = time.monotonic() + deadline_s
    while len(acked) < count:
        assert time.monotonic() < deadline, f"only {len(acked)} of {count} sends acknowledged"
        result = await asyncio.to_thread(
            _drive, cluster, "produce", "--endpoint", cluster["endpoint"], "--topic", TOPIC,
            "--count", str(count - len(acked)),
        )  # fmt: skip
        acked |= {s["message_id"] for s in result.get("sent", [])}
    return acked


async def _consume(cluster: dict, expect: set[str], *extra: str, timeout: float = 90) -> dict:
    return await asyncio.to_thread(
        _drive, cluster, "simple", "--endpoint", cluster["endpoint"], "--topic", TOPIC,
        "--group", GROUP, "--count", str(len(expect)), "--await-seconds", "2",
        "--invisible", "10", "--timeout", str(timeout), "--expect", *sorted(expect), *extra,
        timeout=timeout + 30,
    )  # fmt: skip


async def test_send_receive_ack_through_a_master_failover(processes, tmp_path):
    if not VENV_PY.exists():
        pytest.fail("py5 interop venv missing: run `bash tests/interop/setup_venv_py5.sh`")
    trio = BrokerTrio(processes, tmp_path)
    await trio.start_all()
    admin = Cluster(trio)
    await admin.start()
    try:
        old_master = await admin.master()
        await admin.create_topic()
        grpc_port = free_port()
        conf = tmp_path / "rmq-proxy.json"
        conf.write_text(
            json.dumps(
                {
                    "rocketMQClusterName": "FaultCluster",
                    "namesrvAddr": trio.ns,
                    "grpcServerPort": grpc_port,
                    "routeCacheSeconds": 0,
                    "grpcClientConsumerMinLongPollingTimeoutMillis": 1000,
                }
            )
        )
        proxy = processes.create(["proxy", "-pc", str(conf)], ready_text="proxy boot success")
        await asyncio.to_thread(proxy.start)
        cluster = {"endpoint": f"127.0.0.1:{grpc_port}", "tmp": tmp_path}

        before = await _send(cluster, 6)
        first = await _consume(cluster, before)
        assert before <= set(first["acked"]), first
        # received but not acked when the master dies: must come back from the new one
        pending = await _send(cluster, 4)
        held = await _consume(cluster, pending, "--no-ack")
        assert pending <= {d["message_id"] for d in held["deliveries"]}, held

        trio.kill(old_master)  # kill -9
        new_master = await admin.master(timeout=30, exclude=old_master)
        assert new_master != old_master

        after = await _send(cluster, 6)
        second = await _consume(cluster, after | pending)
        assert after | pending <= set(second["acked"]), second
        # what was acked before the failover stays acked (at most a duplicate, never lost)
        redelivered = before & {d["message_id"] for d in second["deliveries"]}
        assert len(redelivered) <= len(before)
    finally:
        await admin.close()
