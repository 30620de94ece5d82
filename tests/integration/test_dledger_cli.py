"""`ledgermq dledger server` as three real processes, driven by the `ledgermq dledger` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ledgermq.dledger.client import SyncDLedgerClient
from tests.procs import REPO, free_port, wait_until

pytestmark = pytest.mark.timeout(120)


def ledgermq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledgermq", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        timeout=timeout,
    )


def test_three_servers_append_get_metadata(tmp_path, processes):
    ids = ["n0", "n1", "n2"]
    peers = ";".join(f"{i}-127.0.0.1:{free_port()}" for i in ids)
    procs = []
    for i in ids:
        p = processes.create(
            [
                "dledger",
                "server",
                "--group",
                "cli",
                "--id",
                i,
                "--peers",
                peers,
                "--store",
                str(tmp_path / i),
                "--preferred-leader",
                "n1",
                "--state-machine",
                "kv",
            ],
            ready_text="DLedger server",
            log_name=f"dledger-{i}.log",
        )
        procs.append(p.start())
    common = ["--peers", peers, "--group", "cli"]

    def leader_is_n1():
        r = ledgermq("dledger", "metadata", *common)
        return r.returncode == 0 and json.loads(r.stdout).get("leaderId") == "n1"

    wait_until(leader_is_n1, 20, 0.2, "the preferred leader n1 to lead")
    r = ledgermq("dledger", "append", *common, "hello", "world")
    assert r.returncode == 0, r.stderr
    first, second = (int(x) for x in r.stdout.split())
    assert second == first + 1
    r = ledgermq("dledger", "get", *common, "--index", str(first), "--count", "2", "--json")
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in r.stdout.splitlines()]
    assert [g["body"] for g in got] == ["hello", "world"]
    assert [g["index"] for g in got] == [first, second]
    r = ledgermq("dledger", "metadata", *common)
    meta = json.loads(r.stdout)
    assert meta["group"] == "cli" and meta["leaderId"] == "n1" and meta["term"] >= 1
    assert set(meta["peers"]) == set(ids)
    r = ledgermq("dledger", "get", *common, "--index", "999")
    assert r.returncode == 1 and "INDEX_OUT_OF_RANGE" in r.stderr
    r = ledgermq("dledger", "metadata", "--peers", peers, "--group", "other")
    assert r.returncode == 1 and "UNKNOWN_GROUP" in r.stderr
    # the key-value example state machine, from the command line
    r = ledgermq("dledger", "kv", *common, "put", "color", "blue")
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stderr
    r = ledgermq("dledger", "kv", *common, "cas", "color", "blue", "green")
    assert r.returncode == 0 and r.stdout.strip() == "OK green", r.stderr
    r = ledgermq("dledger", "kv", *common, "get", "color")
    assert r.returncode == 0 and r.stdout.strip() == "green"
    # the blocking client for scripts
    with SyncDLedgerClient("cli", peers) as client:
        index = client.append(b"sync")
        assert client.get(index) == b"sync"
        assert client.kv_get(b"color") == b"green"
        assert client.metadata()["leaderId"] == "n1"
    r = ledgermq("dledger", "transfer", *common, "--to", "n2")
    assert r.returncode == 0, r.stderr
    r = ledgermq("dledger", "metadata", *common)
    assert json.loads(r.stdout)["leaderId"] in ("n2", "n1")  # n1 is preferred: it may take over
    # SIGTERM stops a server cleanly
    assert procs[0].stop() == 0
    assert "stopped" in procs[0].output()
