"""`ledgermq namesrv` / `ledgermq broker` startup errors, as real processes.

Bad values exit 2 naming the key, unknown keys are warned about by name, a port that is
taken exits 1 with one clear line, and `broker -p` checks what startup checks.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from tests.procs import ProcessGroup, free_port, free_port_block, run_ledgermq, wait_until

pytestmark = pytest.mark.timeout(120)


ledgermq = run_ledgermq


def write(path: Path, *lines: str) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def broker_lines(tmp_path: Path, port: int) -> list[str]:
    return [
        "brokerClusterName=CliCluster",
        "brokerName=cli-broker",
        "brokerId=0",
        f"listenPort={port}",
        "brokerIP1=127.0.0.1",
        f"storePathRootDir={tmp_path / 'store'}",
        "mappedFileSizeCommitLog=1048576",
    ]


def assert_one_clear_line(r: subprocess.CompletedProcess[str], rc: int, *fragments: str):
    assert r.returncode == rc, r
    assert "Traceback" not in r.stderr, r.stderr
    for fragment in fragments:
        assert fragment in r.stderr, (fragment, r.stderr)


# --- bad values ------------------------------------------------------------------------
def test_namesrv_bad_value_exits_2_naming_the_key(tmp_path):
    conf = write(
        tmp_path / "namesrv.properties",
        "listenPort=abc",
        f"kvConfigPath={tmp_path / 'kv.json'}",
    )
    r = ledgermq("namesrv", "-c", conf)
    assert_one_clear_line(r, 2, "ledgermq namesrv:", "listenPort", "abc")
    assert "boot success" not in r.stdout


def test_broker_print_config_validates_like_startup(tmp_path):
    conf = write(
        tmp_path / "broker.conf",
        *broker_lines(tmp_path, free_port()),
        "messageDelayLevel=1s 5x 10s",
    )
    r = ledgermq("broker", "-c", conf, "-p")
    assert_one_clear_line(r, 2, "ledgermq broker:", "messageDelayLevel", "5x")
    assert r.stdout == "", "a config the broker would refuse must not be printed"


def test_broker_print_config_prints_a_valid_config(tmp_path):
    # The other side of the check above: a good file still prints, with its values.
    port = free_port()
    conf = write(tmp_path / "broker.conf", *broker_lines(tmp_path, port))
    r = ledgermq("broker", "-c", conf, "-p")
    assert r.returncode == 0, r
    assert f"listenPort={port}" in r.stdout.splitlines()
    assert "brokerName=cli-broker" in r.stdout.splitlines()


# --- unknown keys ------------------------------------------------------------------------
def test_namesrv_warns_about_an_unknown_key_by_name_and_still_serves(
    tmp_path, processes: ProcessGroup
):
    port = free_port()
    conf = write(
        tmp_path / "namesrv.properties",
        f"listenPort={port}",
        "lisenPort=9999",
        f"kvConfigPath={tmp_path / 'kv.json'}",
    )
    ns = processes.create(["namesrv", "-c", conf], ready_text="boot success")
    ns.start()
    # ServerProcess collects stdout and stderr together; the warning goes to stderr.
    assert "unknown config key 'lisenPort'" in ns.output()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # it listens on the spelled-right key's port
    processes.kill_all()
    assert not processes.alive()


def test_unknown_keys_are_warned_on_stderr_for_namesrv_and_broker(tmp_path):
    ns_conf = write(
        tmp_path / "namesrv.properties",
        "lisenPort=9999",
        f"kvConfigPath={tmp_path / 'kv.json'}",
    )
    r = ledgermq("namesrv", "-c", ns_conf, "--print-config")
    assert r.returncode == 0, r
    assert "lisenPort" in r.stderr
    assert "lisenPort" not in r.stdout

    br_conf = write(
        tmp_path / "broker.conf", *broker_lines(tmp_path, free_port()), "lisenPort=9999"
    )
    r = ledgermq("broker", "-c", br_conf, "-p")
    assert r.returncode == 0, r
    assert "unknown config key 'lisenPort'" in r.stderr
    assert "lisenPort" not in r.stdout


# --- port in use -------------------------------------------------------------------------
@pytest.fixture
def taken_port():
    """A port some other socket is listening on (all interfaces, like the servers)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield s.getsockname()[1]


def test_broker_port_in_use_exits_1_with_one_clear_line(tmp_path, taken_port):
    conf = write(tmp_path / "broker.conf", *broker_lines(tmp_path, taken_port))
    r = ledgermq("broker", "-c", conf)
    assert_one_clear_line(
        r,
        1,
        f"ledgermq broker: cannot listen on 0.0.0.0:{taken_port}: address already in use",
    )
    assert "boot success" not in r.stdout


def test_namesrv_port_in_use_exits_1_with_one_clear_line(tmp_path, taken_port):
    conf = write(
        tmp_path / "namesrv.properties",
        f"listenPort={taken_port}",
        f"kvConfigPath={tmp_path / 'kv.json'}",
    )
    r = ledgermq("namesrv", "-c", conf)
    assert_one_clear_line(
        r,
        1,
        f"ledgermq namesrv: cannot listen on 0.0.0.0:{taken_port}: address already in use",
    )


def test_quickstart_port_in_use_exits_1_with_one_clear_line(tmp_path, taken_port):
    r = ledgermq("quickstart", "--data", str(tmp_path / "data"), "--namesrv-port", str(taken_port))
    assert_one_clear_line(
        r,
        1,
        f"ledgermq quickstart: cannot listen on 0.0.0.0:{taken_port}: address already in use",
    )


def test_quickstart_dledger_runs_a_group_that_elects_a_master_and_takes_sends(processes):
    # `make run`: a NameServer and a three-member DLedger broker group in one process
    # member k listens on broker + 10k (and + 1 next to it) and dledger + k
    ns = free_port()
    broker = free_port_block((0, 1, 10, 11, 20, 21))
    dledger = free_port_block((0, 1, 2))
    processes.create(
        [
            "quickstart",
            "--data", str(processes.log_dir / "data"),
            "--dledger", "3",
            "--namesrv-port", str(ns),
            "--broker-port", str(broker),
            "--dledger-port", str(dledger),
        ],
        ready_text="Try:",
    ).start()  # fmt: skip
    addr = f"127.0.0.1:{ns}"
    sent = run_ledgermq("produce", "-n", addr, "-t", "QuickTopic", "-m", "hi", "--json")
    assert sent.returncode == 0, sent
    assert json.loads(sent.stdout)["status"] == "SEND_OK", sent.stdout

    # (if n1 or n2 won the first election, leadership moves to the preferred n0 soon
    # after, and for a moment no member serves as master: wait that out)
    def group_with_one_master() -> dict | None:
        status = run_ledgermq("admin", "dledgerStatus", "-n", addr, "--json")
        assert status.returncode == 0, status
        (group,) = json.loads(status.stdout)
        return group if [m["brokerId"] for m in group["members"]].count(0) == 1 else None

    group = wait_until(group_with_one_master, 15, 0.2, "one member serving as master")
    assert group["group"] == "RaftNode00" and group["leaderId"] in {"n0", "n1", "n2"}
    ids = sorted(m["brokerId"] for m in group["members"])
    assert ids.count(0) == 1 and len(ids) == 3, group
    # the benchmark says what an acknowledgement means there
    bench = run_ledgermq(
        "bench", "produce", "-n", addr, "-t", "QuickTopic", "--duration", "1",
        "--inflight", "4", "--json",
    )  # fmt: skip
    assert bench.returncode == 0, bench
    result = json.loads(bench.stdout)
    assert result["flush_disk_type"] == "DLEDGER_QUORUM" and result["messages"] > 0, result
