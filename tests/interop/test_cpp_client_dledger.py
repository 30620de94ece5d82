"""Apache's C++-core Python client against a DLedger broker group, through a failover.

Three real broker processes in one DLedger group and a NameServer process (the fault
tests' BrokerTrio). A push consumer runs across the whole test: it gets the messages
sent before the master is killed, follows the new master (the C++ core re-reads routes
every 30 s) and gets those sent after. Each producer run is its own process.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.test_dledger_broker_faults import BrokerTrio, Cluster
from tests.interop.test_cpp_client import VENV_PY, _driver, _result

pytestmark = [pytest.mark.interop, pytest.mark.timeout(150)]

TOPIC = "FaultTopic"


def _produce(ns: str, tmp, first: int, count: int, tag: str) -> dict:
    proc = _driver(
        "produce",
        "--namesrv", ns,
        "--topic", TOPIC,
        "--count", str(count),
        "--first-seq", str(first),
        "--tag", tag,
        "--timeout", "60",
        timeout=60,
        log_dir=tmp,
    )  # fmt: skip
    return _result(proc, 90)


async def test_cpp_client_produces_and_consumes_through_a_master_failover(processes, tmp_path):
    if not VENV_PY.exists():
        pytest.fail("interop venv missing: run `bash tests/interop/setup_venv.sh` (make test does)")
    trio = BrokerTrio(processes, tmp_path)
    await trio.start_all()
    cluster = Cluster(trio)
    await cluster.start()
    try:
        first = await cluster.master()
        await cluster.create_topic()
        ready = tmp_path / "consumer.ready"
        consumer = _driver(
            "consume",
            "--namesrv", trio.ns,
            "--topic", TOPIC,
            "--group", "interop-dledger",
            "--expect", "40",
            "--timeout", "100",
            "--ready-file", str(ready),
            timeout=100,
            log_dir=tmp_path,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert consumer.poll() is None, f"consumer exited early: {consumer.communicate()}"
            assert time.monotonic() < deadline, "consumer did not start within 30s"
            await asyncio.sleep(0.05)

        before = await asyncio.to_thread(_produce, trio.ns, tmp_path, 0, 20, "before")
        assert before["ok"], before["errors"][:3]
        trio.kill(first)
        second = await cluster.master(exclude=first)
        assert second != first
        # a new producer process reads the route afresh: the new master takes its sends
        after = await asyncio.to_thread(_produce, trio.ns, tmp_path, 20, 20, "after")
        assert after["ok"], after["errors"][:3]

        got = await asyncio.to_thread(_result, consumer, 120)
        assert got["ok"], got.get("errors")
        seqs = {r["seq"] for r in got["received"]}
        assert seqs == set(range(40)), f"missing {sorted(set(range(40)) - seqs)[:5]}"
        tags = {r["seq"]: r["tags"] for r in got["received"]}
        assert all(tags[s] == ("before" if s < 20 else "after") for s in seqs)
    finally:
        await cluster.close()
