"""Apache's rocketmq-client-python 0.5.0rc2 (C++ core) against our NameServer and Broker.

The client runs in its own virtualenv (.venv-interop-cpp, made by setup_venv.sh), in a
separate process driven through tests/interop/cpp_client_driver.py; our servers run as a
real `ledgermq quickstart` process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.procs import REPO, ServerProcess, free_port, free_port_pair

pytestmark = pytest.mark.interop

VENV_PY = REPO / ".venv-interop-cpp" / "bin" / "python"
DRIVER = REPO / "tests" / "interop" / "cpp_client_driver.py"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not VENV_PY.exists():
        pytest.fail("interop venv missing: run `bash tests/interop/setup_venv.sh` (make test does)")
    tmp = tmp_path_factory.mktemp("interop")
    ns_port, broker_port = free_port(), free_port_pair()
    server = ServerProcess(
        [
            "quickstart",
            "--data",
            str(tmp / "data"),
            "--namesrv-port",
            str(ns_port),
            "--broker-port",
            str(broker_port),
        ],
        ready_text="Broker ",
        log_path=tmp / "quickstart.log",
    )
    server.start()
    try:
        namesrv = f"127.0.0.1:{ns_port}"
        asyncio.run(_create_topics(namesrv))
        yield {"namesrv": namesrv, "tmp": tmp}
    except BaseException:
        server.kill()
        raise
    assert server.stop() == 0, server.output()[-3000:]


TOPICS = ["InteropTopic", "InteropTags", "InteropRetry", "InteropOrder"]


async def _create_topics(namesrv: str) -> None:
    # As an operator would with `mqadmin updateTopic`: the C++ consumer only re-reads
    # routes every 30 s, so a topic created later by the first send is seen late.
    from ledgermq.client.admin import AdminClient

    admin = AdminClient(namesrv)
    await admin.start()
    try:
        for topic in TOPICS:
            assert await admin.create_topic(
                topic, cluster="DefaultCluster", read_queue_nums=4, write_queue_nums=4
            )
    finally:
        await admin.shutdown()


def _driver(*args: str, timeout: float, log_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(VENV_PY), str(DRIVER), *args, "--log-dir", str(log_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str], timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"driver printed no result (rc={proc.returncode}): {err[-2000:]}"
    return json.loads(lines[-1])


def _start_consumer(cluster, topic, group, expect, timeout=60, extra=()):
    ready = cluster["tmp"] / f"{group}.ready"
    proc = _driver(
        "consume",
        "--namesrv",
        cluster["namesrv"],
        "--topic",
        topic,
        "--group",
        group,
        "--expect",
        str(expect),
        "--timeout",
        str(timeout),
        "--ready-file",
        str(ready),
        *extra,
        timeout=timeout,
        log_dir=cluster["tmp"],
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, f"consumer exited early: {proc.communicate()}"
        assert time.monotonic() < deadline, "consumer did not start within 30s"
        time.sleep(0.05)
    return proc


def _produce(cluster, topic, count, *extra):
    proc = _driver(
        "produce",
        "--namesrv",
        cluster["namesrv"],
        "--topic",
        topic,
        "--count",
        str(count),
        "--timeout",
        "60",
        *extra,
        timeout=60,
        log_dir=cluster["tmp"],
    )
    result = _result(proc, 90)
    assert result["ok"], result["errors"][:3]
    return result


def test_produce_and_push_consume_every_message(cluster):
    consumer = _start_consumer(cluster, "InteropTopic", "interop-group", expect=50)
    sent = _produce(cluster, "InteropTopic", 50, "--tag", "TagA", "--keys", "k1")
    assert len({s["msg_id"] for s in sent["sent"]}) == 50
    got = _result(consumer, 90)
    assert got["ok"], got.get("errors")
    assert {r["seq"] for r in got["received"]} == set(range(50))
    assert all(r["tags"] == "TagA" for r in got["received"])


def test_tag_filter_delivers_only_matching_tags(cluster):
    consumer = _start_consumer(
        cluster,
        "InteropTags",
        "interop-tags",
        expect=10,
        timeout=30,
        extra=("--tag-expr", "TagB", "--linger", "2"),
    )
    _produce(cluster, "InteropTags", 10, "--tag", "TagA")
    _produce(cluster, "InteropTags", 10, "--tag", "TagB")
    got = _result(consumer, 60)
    assert got["unique_seqs"] == 10
    assert all(r["tags"] == "TagB" for r in got["received"])


def test_failed_consumption_is_redelivered_through_retry(cluster):
    consumer = _start_consumer(
        cluster, "InteropRetry", "interop-retry", expect=5, timeout=60, extra=("--fail-first", "1")
    )
    _produce(cluster, "InteropRetry", 5)
    got = _result(consumer, 90)
    assert got["ok"], got.get("errors")
    retried = [r for r in got["received"] if r["reconsume_times"] >= 1]
    assert {r["seq"] for r in retried} >= set(range(5)), "every message must come back once"


def test_orderly_send_keeps_sharding_key_order(cluster):
    consumer = _start_consumer(cluster, "InteropOrder", "interop-order", expect=30)
    _produce(cluster, "InteropOrder", 30, "--orderly", "--sharding-key-mod", "3")
    got = _result(consumer, 90)
    assert got["ok"]
    by_queue: dict[int, list[int]] = {}
    for r in got["received"]:
        by_queue.setdefault(r["queue_id"], []).append(r["queue_offset"])
    for offsets in by_queue.values():
        assert offsets == sorted(offsets)
