"""Apache's official v5 Python client (rocketmq-python-client 5.1.2) through our proxy.

A real NameServer, broker and `ledgermq proxy` run as processes; the client runs in
its own virtualenv (.venv-interop-py5, made by setup_venv_py5.sh) through
tests/interop/py5_client_driver.py. What it stored is read back with our own
remoting admin client, so the properties and queues are checked on the broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.procs import REPO, ServerProcess, free_port, free_port_pair

pytestmark = pytest.mark.interop

VENV_PY = REPO / ".venv-interop-py5" / "bin" / "python"
DRIVER = REPO / "tests" / "interop" / "py5_client_driver.py"
MAX_BODY = 64 * 1024

TOPICS = {
    "PyNormal": {},
    "PyFifo": {"message.type": "FIFO"},
    "PyDelay": {"message.type": "DELAY"},
    "PyMixed": {},
    "PyTx": {"message.type": "TRANSACTION"},
    "PySimple": {},
    "PyChange": {},
    "PyPushRetry": {},
    "PyPushFifo": {"message.type": "FIFO"},
    "PyDelayConsume": {"message.type": "DELAY"},
    "PyGone": {},
    "PyRenew": {},
}
ORDERLY_GROUP = "PyFifoGroup"
# The proxy's renewal and client-expiry clocks, shortened so the tests finish quickly.
PROXY_TUNING = {
    "defaultInvisibleTimeMills": 10_000,
    "renewAheadTimeMillis": 5_000,
    "renewSchedulePeriodMillis": 500,
    "channelExpiredInSeconds": 4,
    "grpcClientConsumerMinLongPollingTimeoutMillis": 1_000,
    "grpcClientConsumerMaxLongPollingTimeoutMillis": 5_000,
}


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not VENV_PY.exists():
        pytest.fail("py5 interop venv missing: run `bash tests/interop/setup_venv_py5.sh`")
    tmp = tmp_path_factory.mktemp("py5")
    ns_port, broker_port, grpc_port = free_port(), free_port_pair(), free_port()
    namesrv_addr = f"127.0.0.1:{ns_port}"
    ns_conf = _write(tmp / "namesrv.properties", f"kvConfigPath={tmp / 'kv.json'}\n")
    broker_conf = _write(
        tmp / "broker.conf",
        "\n".join(
            [
                "brokerClusterName=DefaultCluster",
                "brokerName=py5-broker",
                "brokerId=0",
                f"listenPort={broker_port}",
                "brokerIP1=127.0.0.1",
                f"namesrvAddr={namesrv_addr}",
                f"storePathRootDir={tmp / 'store'}",
                "mappedFileSizeCommitLog=4194304",
                # transaction checks soon after a half message is left open
                "transactionTimeOut=1000",
                "transactionCheckInterval=1000",
            ]
        )
        + "\n",
    )
    proxy_conf = _write(
        tmp / "rmq-proxy.json",
        json.dumps(
            {
                "rocketMQClusterName": "DefaultCluster",
                "namesrvAddr": namesrv_addr,
                "grpcServerPort": grpc_port,
                "maxMessageSize": MAX_BODY,
                "routeCacheSeconds": 0,
                **PROXY_TUNING,
            }
        ),
    )
    procs = [
        ServerProcess(["namesrv", "-c", ns_conf, "-p", str(ns_port)], ready_text="boot success",
                      log_path=tmp / "namesrv.log"),
        ServerProcess(["broker", "-c", broker_conf], ready_text="boot success",
                      log_path=tmp / "broker.log"),
        ServerProcess(["proxy", "-pc", proxy_conf], ready_text="proxy boot success",
                      log_path=tmp / "proxy.log"),
    ]  # fmt: skip
    try:
        for proc in procs:
            proc.start()
        asyncio.run(_create_topics(namesrv_addr))
        asyncio.run(_create_orderly_group(namesrv_addr, f"127.0.0.1:{broker_port}"))
        yield {"namesrv": namesrv_addr, "endpoint": f"127.0.0.1:{grpc_port}", "tmp": tmp}
    finally:
        for proc in reversed(procs):
            proc.kill()


async def _create_topics(namesrv: str) -> None:
    from ledgermq.client.admin import AdminClient

    admin = AdminClient(namesrv)
    await admin.start()
    try:
        deadline = time.monotonic() + 20
        while True:  # the broker registers with the NameServer shortly after boot
            try:
                for topic, attributes in TOPICS.items():
                    await admin.create_topic(
                        topic,
                        cluster="DefaultCluster",
                        read_queue_nums=4,
                        write_queue_nums=4,
                        attributes=attributes or None,
                    )
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.shutdown()


async def _create_orderly_group(namesrv: str, broker_addr: str) -> None:
    from ledgermq.client.admin import AdminClient

    admin = AdminClient(namesrv)
    await admin.start()
    try:
        await admin.update_subscription_group(
            broker_addr, {"groupName": ORDERLY_GROUP, "consumeMessageOrderly": True}
        )
    finally:
        await admin.shutdown()


def _drive(cluster, *args: str, timeout: float = 60) -> dict:
    env = dict(os.environ, HOME=str(cluster["tmp"]))
    proc = subprocess.run(
        [str(VENV_PY), str(DRIVER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"driver printed no result (rc={proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(lines[-1])


def _messages(namesrv: str, topic: str) -> list:
    """Every message stored in `topic`, read back over remoting."""

    async def read() -> list:
        from ledgermq.client.admin import AdminClient

        admin = AdminClient(namesrv)
        await admin.start()
        try:
            out = []
            for mq, offsets in (await admin.topic_stats(topic)).items():
                for offset in range(offsets.min_offset, offsets.max_offset):
                    out.append(await admin.query_message_by_queue_offset(mq, offset))
            return out
        finally:
            await admin.shutdown()

    return asyncio.run(read())


def _type_name(field) -> str:
    kind = field.message_type or field.enum_type
    return kind.full_name if kind else ""


def test_wire_contract_matches_the_official_client():
    """Our .proto files and the client's generated stubs agree on every name, number
    and type the client knows (compared from both sides' descriptors)."""
    theirs = _drive({"tmp": Path("/tmp")}, "descriptors")
    from ledgermq.proxy.protocol import definition_pb2, service_pb2

    ours: dict = {}
    for mod in (definition_pb2, service_pb2):
        fd = mod.DESCRIPTOR
        for e in fd.enum_types_by_name.values():
            ours["enum " + e.full_name] = sorted([v.name, v.number] for v in e.values)
        pending = list(fd.message_types_by_name.values())
        while pending:
            m = pending.pop()
            pending.extend(m.nested_types)
            for e in m.enum_types:
                ours["enum " + e.full_name] = sorted([v.name, v.number] for v in e.values)
            if m.GetOptions().map_entry:
                continue
            ours["message " + m.full_name] = sorted(
                [f.name, f.number, f.type, bool(f.is_repeated), _type_name(f)] for f in m.fields
            )
        for s in fd.services_by_name.values():
            for meth in s.methods:
                ours[f"rpc {s.full_name}.{meth.name}"] = [
                    meth.input_type.full_name,
                    meth.output_type.full_name,
                    bool(meth.client_streaming),
                    bool(meth.server_streaming),
                ]
    missing = sorted(set(theirs) - set(ours))
    assert not missing, f"the client knows definitions we lack: {missing}"
    different = {k: (theirs[k], ours[k]) for k in theirs if theirs[k] != ours[k]}
    assert not different


def test_route_and_settings_as_the_client_needs_them(cluster):
    route = _drive(cluster, "raw-route", "--endpoint", cluster["endpoint"], "--topic", "PyFifo")
    assert route["code"] == 20000
    assert [q["id"] for q in route["queues"]] == [0, 1, 2, 3]
    assert {q["permission"] for q in route["queues"]} == {"READ_WRITE"}
    assert {tuple(q["endpoints"]) for q in route["queues"]} == {(cluster["endpoint"],)}
    assert all(q["accept"] == ["FIFO"] and q["broker_id"] == 0 for q in route["queues"])
    normal = _drive(cluster, "raw-route", "--endpoint", cluster["endpoint"], "--topic", "PyNormal")
    assert normal["queues"][0]["accept"] == ["NORMAL", "FIFO", "DELAY", "TRANSACTION"]

    settings = _drive(
        cluster, "telemetry", "--endpoint", cluster["endpoint"], "--topic", "PyNormal"
    )
    assert settings["code"] == 20000 and settings["has_settings"]
    assert settings["max_body_size"] == MAX_BODY and settings["validate_message_type"]
    assert settings["backoff_strategy"] == "exponential_backoff"
    assert settings["backoff_max_attempts"] == 3 and settings["metric_on"] is False


def test_producer_sends_normal_messages(cluster):
    result = _drive(
        cluster, "produce", "--endpoint", cluster["endpoint"], "--topic", "PyNormal",
        "--count", "6", "--tag", "TagA", "--keys", "key-1", "--property", "color=red",
    )  # fmt: skip
    assert result["errors"] == [] and len(result["sent"]) == 6
    sent_ids = {s["message_id"] for s in result["sent"]}
    stored = _messages(cluster["namesrv"], "PyNormal")
    assert {m.properties["UNIQ_KEY"] for m in stored} == sent_ids
    assert len({m.queue_id for m in stored}) > 1, "normal sends rotate over the queues"
    for m in stored:
        assert m.body.startswith(b"body-")
        assert m.properties["TAGS"] == "TagA" and m.properties["KEYS"] == "key-1"
        assert m.properties["color"] == "red"
        assert m.properties.get("TRAN_MSG") is None and m.sys_flag & 0x4 == 0


def test_producer_sends_fifo_messages_to_one_queue_in_order(cluster):
    result = _drive(
        cluster, "produce", "--endpoint", cluster["endpoint"], "--topic", "PyFifo",
        "--count", "5", "--message-group", "order-42",
    )  # fmt: skip
    assert result["errors"] == [] and len(result["sent"]) == 5
    assert [s["offset"] for s in result["sent"]] == [0, 1, 2, 3, 4]
    stored = sorted(_messages(cluster["namesrv"], "PyFifo"), key=lambda m: m.queue_offset)
    assert len({m.queue_id for m in stored}) == 1
    assert [m.properties["UNIQ_KEY"] for m in stored] == [s["message_id"] for s in result["sent"]]
    assert all(m.properties["__SHARDINGKEY"] == "order-42" for m in stored)


def test_producer_sends_delay_messages(cluster):
    result = _drive(
        cluster, "produce", "--endpoint", cluster["endpoint"], "--topic", "PyDelay",
        "--count", "1", "--delay-seconds", "2",
    )  # fmt: skip
    assert result["errors"] == [] and len(result["sent"]) == 1
    message_id = result["sent"][0]["message_id"]
    # 2 s rounds up to delay level 2 (5 s): held in the schedule topic, then delivered.
    deadline = time.monotonic() + 30
    while True:
        stored = _messages(cluster["namesrv"], "PyDelay")
        if stored:
            break
        assert time.monotonic() < deadline, "the delayed message was never delivered"
        time.sleep(0.5)
    (m,) = stored
    assert m.properties["UNIQ_KEY"] == message_id
    assert m.properties.get("REAL_TOPIC") == "PyDelay"
    assert m.store_timestamp - m.born_timestamp >= 1000


def test_server_side_errors_come_back_as_v2_statuses(cluster):
    endpoint = cluster["endpoint"]
    too_big = _drive(cluster, "raw-send", "--endpoint", endpoint, "--topic", "PyNormal",
                     "--body-size", str(MAX_BODY + 1))  # fmt: skip
    assert too_big["code"] == 41301 and len(too_big["entries"]) == 1
    assert "exceeds" in too_big["entries"][0]["message"]

    bad_topic = _drive(cluster, "raw-send", "--endpoint", endpoint, "--topic", "bad topic!",
                       "--body-size", "10")  # fmt: skip
    assert bad_topic["code"] == 40002 and "illegal characters" in bad_topic["message"] + str(
        bad_topic["entries"]
    )
    wrong_type = _drive(cluster, "raw-send", "--endpoint", endpoint, "--topic", "PyFifo",
                        "--body-size", "10", "--message-type", "NORMAL")  # fmt: skip
    assert wrong_type["code"] == 40014
    missing = _drive(cluster, "raw-route", "--endpoint", endpoint, "--topic", "NoSuchTopic")
    assert missing["code"] == 40402

    # Through the client's own API: its route fetch fails and the send reports it.
    result = _drive(cluster, "produce", "--endpoint", endpoint, "--topic", "NoSuchTopic")
    assert result["sent"] == [] and result["errors"]


def test_local_mode_proxy_inside_the_broker(tmp_path, processes):
    """`ledgermq broker --enable-proxy`: the same service, in the broker's process."""
    ns_port, broker_port, grpc_port = free_port(), free_port_pair(), free_port()
    namesrv_addr = f"127.0.0.1:{ns_port}"
    ns_conf = _write(tmp_path / "namesrv.properties", f"kvConfigPath={tmp_path / 'kv.json'}\n")
    broker_conf = _write(
        tmp_path / "broker.conf",
        f"brokerName=local-broker\nlistenPort={broker_port}\nbrokerIP1=127.0.0.1\n"
        f"namesrvAddr={namesrv_addr}\nstorePathRootDir={tmp_path / 'store'}\n"
        "mappedFileSizeCommitLog=4194304\n",
    )
    proxy_conf = _write(tmp_path / "rmq-proxy.json", json.dumps({"grpcServerPort": grpc_port}))
    processes.create(
        ["namesrv", "-c", ns_conf, "-p", str(ns_port)], ready_text="boot success"
    ).start()
    broker = processes.create(
        ["broker", "-c", broker_conf, "--enable-proxy", "-pc", proxy_conf],
        ready_text="proxy boot success",
    ).start()
    asyncio.run(_create_topics(namesrv_addr))
    cluster = {"namesrv": namesrv_addr, "endpoint": f"127.0.0.1:{grpc_port}", "tmp": tmp_path}
    result = _drive(cluster, "produce", "--endpoint", cluster["endpoint"], "--topic", "PyMixed",
                    "--count", "3")  # fmt: skip
    assert result["errors"] == [] and len(result["sent"]) == 3
    stored = _messages(namesrv_addr, "PyMixed")
    assert sorted(m.properties["UNIQ_KEY"] for m in stored) == sorted(
        s["message_id"] for s in result["sent"]
    )
    assert broker.stop() == 0, broker.output()[-2000:]


# --- consumption and transactions through the proxy ------------------------------------
def _produce(cluster, topic: str, count: int, *extra: str) -> list[dict]:
    result = _drive(cluster, "produce", "--endpoint", cluster["endpoint"], "--topic", topic,
                    "--count", str(count), *extra)  # fmt: skip
    assert result["errors"] == [] and len(result["sent"]) == count, result
    return result["sent"]


def _consume(cluster, kind: str, topic: str, group: str, count: int, *extra: str,
             timeout: float = 60) -> dict:  # fmt: skip
    return _drive(cluster, kind, "--endpoint", cluster["endpoint"], "--topic", topic,
                  "--group", group, "--count", str(count), "--timeout", str(timeout),
                  *extra, timeout=timeout + 30)  # fmt: skip


def _simple_drain(cluster, topic: str, group: str, expect: set[str], timeout: float = 40) -> dict:
    """SimpleConsumer receives + acks until every id in `expect` was acked."""
    out = _consume(cluster, "simple", topic, group, len(expect), "--await-seconds", "2",
                   "--expect", *sorted(expect), timeout=timeout)  # fmt: skip
    assert expect <= set(out["acked"]), out
    return out


def test_simple_consumer_receives_and_acks(cluster):
    sent = _produce(cluster, "PySimple", 5, "--tag", "TagS")
    ids = {s["message_id"] for s in sent}
    out = _simple_drain(cluster, "PySimple", "PySimpleGroup", ids)
    first = [d for d in out["deliveries"] if d["message_id"] in ids]
    assert all(d["attempt"] == 1 and d["tag"] == "TagS" for d in first)
    assert sorted(d["body"] for d in first) == [f"body-{i}" for i in range(5)]
    # acked: a second consumer of the group finds nothing more, even after the first
    # drain's invisible time (10 s) would have brought back anything not acked
    again = _consume(cluster, "simple", "PySimple", "PySimpleGroup", 1, "--await-seconds", "1",
                     timeout=13)  # fmt: skip
    assert again["deliveries"] == [], again
    assert again["errors"] == [], again


def test_unacked_messages_come_back_after_the_invisible_time(cluster):
    """A consumer that received and vanished loses nothing for its group."""
    (sent,) = _produce(cluster, "PyGone", 1)
    gone = _consume(cluster, "simple", "PyGone", "PyGoneGroup", 1, "--no-ack",
                    "--invisible", "10", "--await-seconds", "2")  # fmt: skip
    assert [d["message_id"] for d in gone["deliveries"]] == [sent["message_id"]]
    out = _simple_drain(cluster, "PyGone", "PyGoneGroup", {sent["message_id"]})
    (back,) = out["deliveries"]
    assert back["attempt"] == 2


def test_change_invisible_duration_delays_redelivery(cluster):
    (sent,) = _produce(cluster, "PyChange", 1)
    out = _consume(cluster, "simple", "PyChange", "PyChangeGroup", 1, "--invisible", "10",
                   "--change-to", "14", "--await-seconds", "2", timeout=60)  # fmt: skip
    deliveries = [d for d in out["deliveries"] if d["message_id"] == sent["message_id"]]
    assert len(deliveries) == 2 and deliveries[0].get("changed"), out
    back = deliveries[1]
    # not before the new duration (the old 10 s would have brought it back earlier) ...
    assert back["since_change"] >= 13.5, back
    # ... and not much after it
    assert back["since_change"] < 14 + 10, back
    assert back["attempt"] == 2 and set(out["acked"]) == {sent["message_id"]}


def test_push_consumer_retries_a_failed_message(cluster):
    sent = _produce(cluster, "PyPushRetry", 3)
    ids = {s["message_id"] for s in sent}
    out = _consume(cluster, "push", "PyPushRetry", "PyPushRetryGroup", 3, "--fail-once",
                   timeout=60)  # fmt: skip
    assert set(out["succeeded"]) == ids, out
    for message_id in ids:
        mine = [d for d in out["deliveries"] if d["message_id"] == message_id]
        assert [d["result"] for d in mine] == ["FAILURE", "SUCCESS"], mine
        assert [d["attempt"] for d in mine] == [1, 2], mine
        # nacked with the group's first backoff (10 s), not redelivered at once
        assert mine[1]["at"] - mine[0]["at"] >= 9, mine


def test_push_consumer_messages_are_renewed_while_in_work(cluster):
    """The listener works 14 s, longer than defaultInvisibleTimeMills (10 s): the
    proxy's renewal keeps the message invisible, so it is delivered exactly once."""
    (sent,) = _produce(cluster, "PyRenew", 1)
    out = _consume(cluster, "push", "PyRenew", "PyRenewGroup", 1, "--work-ms", "14000",
                   timeout=60)  # fmt: skip
    assert set(out["succeeded"]) == {sent["message_id"]}, out
    assert [d["attempt"] for d in out["deliveries"]] == [1], out


def test_push_consumer_keeps_fifo_order_per_message_group(cluster):
    groups = ("g-a", "g-b")
    sent: dict[str, list[str]] = {}
    for g in groups:
        sent[g] = [s["message_id"] for s in _produce(cluster, "PyPushFifo", 4,
                                                      "--message-group", g)]  # fmt: skip
    out = _consume(cluster, "push", "PyPushFifo", ORDERLY_GROUP, 8, "--fail-once", timeout=90)
    assert out["fifo"] is True, "the proxy's Settings must tell the client the group is FIFO"
    assert set(out["succeeded"]) == {i for ids in sent.values() for i in ids}, out
    for g in groups:
        seen = [d for d in out["deliveries"] if d["group"] == g]
        # each message is retried in place before the next one of its group is seen
        order = [d["message_id"] for d in seen if d["result"] == "SUCCESS"]
        assert order == sent[g], (g, seen)
        firsts = [d["message_id"] for d in seen if d["result"] == "FAILURE"]
        assert firsts == sent[g]


def test_delay_messages_are_consumed_after_their_time(cluster):
    (sent,) = _produce(cluster, "PyDelayConsume", 1, "--delay-seconds", "3")
    out = _simple_drain(cluster, "PyDelayConsume", "PyDelayGroup", {sent["message_id"]})
    assert out["deliveries"][0]["at"] >= 1.0  # held back (level 2: 5 s after sending)


def test_transaction_commit_and_rollback(cluster):
    commit = _drive(cluster, "transaction", "--endpoint", cluster["endpoint"], "--topic", "PyTx",
                    "--resolution", "commit")  # fmt: skip
    assert commit["errors"] == [] and commit["sent"][0]["transaction_id"], commit
    rollback = _drive(cluster, "transaction", "--endpoint", cluster["endpoint"],
                      "--topic", "PyTx", "--resolution", "rollback")  # fmt: skip
    assert rollback["errors"] == [], rollback
    committed = commit["sent"][0]["message_id"]
    out = _simple_drain(cluster, "PyTx", "PyTxGroup", {committed})
    assert rollback["sent"][0]["message_id"] not in {d["message_id"] for d in out["deliveries"]}
    assert commit["checked"] == [] and rollback["checked"] == []


def test_transaction_left_unknown_is_checked_and_committed(cluster):
    """No commit or rollback: the broker's check reaches the producer through the
    proxy (Telemetry recover_orphaned_transaction_command), the checker commits."""
    result = _drive(cluster, "transaction", "--endpoint", cluster["endpoint"], "--topic",
                    "PyTx", "--resolution", "unknown", "--check-result", "commit",
                    "--timeout", "40", timeout=90)  # fmt: skip
    assert result["errors"] == [], result
    (sent,) = result["sent"]
    assert result["checked"] and result["checked"][0]["message_id"] == sent["message_id"]
    assert result["checked"][0]["body"] == sent["body"]
    _simple_drain(cluster, "PyTx", "PyTxCheckGroup", {sent["message_id"]})
