"""`ledgermq dledger server` as three real processes, driven by the `ledgermq dledger` CLI."""

from __future__ import annotations

import json

import pytest

from ledgermq.dledger.client import SyncDLedgerClient
from tests.procs import free_port, run_ledgermq, wait_until

pytestmark = pytest.mark.timeout(120)


ledgermq = run_ledgermq


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


def test_member_join_promote_remove_from_the_command_line(tmp_path, processes):
    ids = ["n0", "n1", "n2"]
    ports = {i: free_port() for i in [*ids, "n3"]}
    peers = ";".join(f"{i}-127.0.0.1:{ports[i]}" for i in ids)

    def server(i: str, peer_text: str, *extra: str):
        args = ["dledger", "server", "--group", "m", "--id", i, "--peers", peer_text]
        args += ["--store", str(tmp_path / i), "--state-machine", "kv", *extra]
        return processes.create(args, ready_text="DLedger server", log_name=f"m-{i}.log")

    for i in ids:
        server(i, peers).start()
    common = ["--peers", peers, "--group", "m"]
    wait_until(
        lambda: ledgermq("dledger", "kv", *common, "put", "a", "1").returncode == 0,
        20,
        0.2,
        "a leader",
    )
    n3_addr = f"127.0.0.1:{ports['n3']}"
    server("n3", f"{peers};n3-{n3_addr}", "--join", "--snapshot-threshold", "5").start()
    r = ledgermq("dledger", "member", "add-learner", *common, "--id", "n3", "--addr", n3_addr)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["learners"] == ["n3"]
    r = ledgermq("dledger", "member", "add-voter", *common, "--id", "n4")
    assert r.returncode == 2 and "--addr" in r.stderr
    all_peers = f"{peers};n3-{n3_addr}"

    def n3_caught_up():
        r = ledgermq("dledger", "metadata", "--peers", all_peers, "-g", "m", "--member", "n3")
        return r.returncode == 0 and json.loads(r.stdout)["appliedIndex"] >= 1

    wait_until(n3_caught_up, 20, 0.2, "n3 to catch up")
    r = ledgermq("dledger", "member", "promote", *common, "--id", "n3")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["voters"] == ["n0", "n1", "n2", "n3"]
    r = ledgermq("dledger", "member", "remove", "--peers", all_peers, "-g", "m", "--id", "n0")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["voters"] == ["n1", "n2", "n3"]
    r = ledgermq("dledger", "member", "remove", "--peers", all_peers, "-g", "m", "--id", "n0")
    assert r.returncode == 1 and "ILLEGAL_MEMBER_STATE" in r.stderr
    r = ledgermq("dledger", "kv", "--peers", all_peers, "-g", "m", "put", "b", "2")
    assert r.returncode == 0, r.stderr
    # ask a current voter: the removed n0 is no longer told about the group's changes
    r = ledgermq("dledger", "metadata", "--peers", all_peers, "-g", "m", "--member", "n1")
    meta = json.loads(r.stdout)
    assert meta["voters"] == ["n1", "n2", "n3"] and meta["learners"] == []
