"""`ledgermq produce|consume` and `ledgermq bench produce|consume --json` as real
subprocesses against an in-process NameServer + Broker.

The servers run on the test's event loop; each command is a separate process started
with asyncio, so the servers keep serving while it runs.
"""

from __future__ import annotations

import json

import pytest

from tests.cluster import CliResult, InProcessCluster, running

pytestmark = pytest.mark.timeout(180)

# Not the default (ASYNC_FLUSH), so the bench can only report it by asking the broker.
FLUSH = "SYNC_FLUSH"


class Servers(InProcessCluster):
    def __init__(self, tmp_path) -> None:
        super().__init__(tmp_path, broker_names=["broker-q"], flush_disk_type=FLUSH)

    async def run(self, *args: str, timeout: float = 90) -> CliResult:
        r = await self.run_cli(*args, timeout=timeout)
        assert "Traceback" not in r.err, r.err
        return r


@pytest.fixture
async def servers(tmp_path):
    async with running(Servers(tmp_path)) as s:
        yield s


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def test_produce_then_consume_from_the_command_line(servers):
    rc, out, err = await servers.run(
        "produce", "-n", servers.ns, "-t", "QuickT", "-m", "hello", "-c", "3", "--json"
    )
    assert rc == 0, err
    sent = json_lines(out)
    assert len(sent) == 3
    assert {s["status"] for s in sent} == {"SEND_OK"}
    assert len({s["msgId"] for s in sent}) == 3

    rc, out, err = await servers.run(
        "consume",
        "-n",
        servers.ns,
        "-t",
        "QuickT",
        "-g",
        "QuickG",
        "--from-first",
        "-c",
        "3",
        "--json",
        "--timeout",
        "30",
    )
    assert rc == 0, err
    got = json_lines(out)
    assert [g["body"] for g in got] == ["hello"] * 3
    assert {g["msgId"] for g in got} == {s["msgId"] for s in sent}
    assert {g["topic"] for g in got} == {"QuickT"}


async def test_bench_produce_then_consume_json(servers):
    rc, out, err = await servers.run(
        "bench",
        "produce",
        "-n",
        servers.ns,
        "-t",
        "BenchT",
        "--duration",
        "1",
        "--inflight",
        "8",
        "-s",
        "100",
        "--json",
    )
    assert rc == 0, err
    (produced,) = json_lines(out)  # exactly one JSON object
    assert produced["mode"] == "produce"
    for key in ("tps", "p50_ms", "p99_ms", "messages"):
        assert isinstance(produced[key], int | float), (key, produced)
    assert produced["tps"] > 0
    assert produced["messages"] > 0
    assert produced["errors"] == 0
    assert 0 < produced["p50_ms"] <= produced["p99_ms"] <= produced["max_ms"]
    assert produced["inflight"] == 8 and produced["size"] == 100
    assert produced["flush_disk_type"] == FLUSH

    stored = sum(servers.broker.store.max_offset("BenchT", q) for q in range(32))
    # The bench sends one untimed warm-up message before the measured window.
    assert stored == produced["messages"] + 1

    rc, out, err = await servers.run(
        "bench", "consume", "-n", servers.ns, "-t", "BenchT", "--duration", "3", "--json"
    )
    assert rc == 0, err
    (consumed,) = json_lines(out)
    assert consumed["mode"] == "consume"
    assert consumed["messages"] > 0
    assert consumed["messages"] <= stored
    assert consumed["flush_disk_type"] == FLUSH


async def test_bench_produce_auto_batch_counts_every_single_send(servers):
    rc, out, err = await servers.run(
        "bench", "produce", "-n", servers.ns, "-t", "BenchAB", "--count", "3000",
        "--duration", "30", "--inflight", "200", "-s", "100", "--auto-batch", "--json",
    )  # fmt: skip
    assert rc == 0, err
    (produced,) = json_lines(out)
    assert produced["auto_batch"] is True and produced["batch"] == 1
    assert produced["messages"] == 3000 and produced["errors"] == 0
    stored = sum(servers.broker.store.max_offset("BenchAB", q) for q in range(32))
    assert stored == 3000 + 1  # and the warm-up message

    rc, out, err = await servers.run(
        "bench", "produce", "-n", servers.ns, "--auto-batch", "--batch", "4", "--json"
    )
    assert rc == 2 and "--auto-batch" in err
