"""`ledgermq admin ...` (mqadmin) as real subprocesses against in-process servers.

The NameServer and the Broker run on the test's event loop; each CLI call is a separate
`python -m ledgermq admin` process started with asyncio, so the servers keep serving.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import pytest

try:
    from tests.cluster import REPO, CliResult, InProcessCluster, running
except ImportError as exc:  # pragma: no cover - servers are written concurrently
    pytest.skip(f"in-process servers not available: {exc}", allow_module_level=True)

pytestmark = pytest.mark.timeout(180)

CLUSTER = "DefaultCluster"
BROKER = "broker-a"


class Cluster(InProcessCluster):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__(
            tmp_path,
            cluster_name=CLUSTER,
            broker_names=[BROKER],
            mapped_file_size_commit_log=4 * 1024 * 1024,
        )

    async def admin(self, *args: str, ns: str | None = None, env: dict | None = None) -> CliResult:
        argv = ["admin", *args]
        if ns is not False and "-n" not in args:
            argv += ["-n", ns or self.ns]
        return await self.run_cli(*argv, timeout=60, env=env)

    async def ok(self, *args: str) -> CliResult:
        r = await self.admin(*args)
        assert r.rc == 0, r
        assert "Traceback" not in r.err, r
        return r


@pytest.fixture
async def cluster(tmp_path):
    async with running(Cluster(tmp_path)) as c:
        yield c


def assert_clean_failure(r: CliResult, *fragments: str) -> None:
    assert r.rc == 1, r
    assert "Traceback" not in r.err, r
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1, r
    for f in fragments:
        assert f in lines[0], r


async def test_topic_lifecycle(cluster: Cluster) -> None:
    r = await cluster.ok("updateTopic", "-t", "CliTopic", "-c", CLUSTER, "-r", "4", "-w", "4")
    assert f"create topic to {cluster.addr} success." in r.out
    assert "TopicConfig [topicName=CliTopic, readQueueNums=4, writeQueueNums=4, perm=RW-" in r.out

    topics = (await cluster.ok("topicList", "--json")).json()["topicList"]
    assert "CliTopic" in topics
    assert "CliTopic" in (await cluster.ok("topicList")).out.split()

    rows = (await cluster.ok("topicList", "-c", "--json")).json()
    assert {"clusterName": CLUSTER, "topic": "CliTopic", "consumerGroup": ""} in rows
    text = (await cluster.ok("topicList", "-c")).out
    assert text.splitlines()[0].split() == ["#Cluster", "Name", "#Topic", "#Consumer", "Group"]

    route = (await cluster.ok("topicRoute", "-t", "CliTopic")).json()
    assert route["queueDatas"][0]["brokerName"] == BROKER
    assert route["queueDatas"][0]["writeQueueNums"] == 4
    assert route["brokerDatas"][0]["brokerAddrs"] == {"0": cluster.addr}

    status = await cluster.ok("topicStatus", "-t", "CliTopic")
    lines = status.out.splitlines()
    assert lines[0].startswith("#Broker Name")
    assert "#Min Offset" in lines[0] and "#Last Updated" in lines[0]
    assert len(lines) == 5
    assert lines[1].split()[:4] == [BROKER, "0", "0", "0"]
    js = (await cluster.ok("topicStatus", "-t", "CliTopic", "--json")).json()
    assert [q["queueId"] for q in js["offsetTable"]] == [0, 1, 2, 3]

    # update in place: more queues, read-only
    await cluster.ok(
        "updateTopic", "-t", "CliTopic", "-b", cluster.addr, "-w", "6", "-r", "6", "-p", "4"
    )
    await cluster.broker.register_now()
    route = (await cluster.ok("topicRoute", "-t", "CliTopic")).json()
    assert route["queueDatas"][0]["writeQueueNums"] == 6
    assert route["queueDatas"][0]["perm"] == 4

    r = await cluster.ok("deleteTopic", "-t", "CliTopic", "-c", CLUSTER)
    assert "delete topic [CliTopic] from NameServer success." in r.out
    assert "CliTopic" not in (await cluster.ok("topicList", "--json")).json()["topicList"]
    assert_clean_failure(
        await cluster.admin("topicRoute", "-t", "CliTopic"), "topic CliTopic does not exist"
    )


async def test_order_topic_sets_order_conf(cluster: Cluster) -> None:
    r = await cluster.ok("updateTopic", "-t", "OrderT", "-c", CLUSTER, "-o", "true", "--json")
    assert r.json()["orderConf"] == f"{BROKER}:8"
    kv = (await cluster.ok("getKvConfig", "-s", "ORDER_TOPIC_CONFIG", "-k", "OrderT")).out
    assert kv.strip() == f"{BROKER}:8"


async def test_cluster_and_broker_commands(cluster: Cluster) -> None:
    text = (await cluster.ok("clusterList")).out
    header, *rows = text.splitlines()
    assert header.split()[:6] == ["#Cluster", "Name", "#Broker", "Name", "#BID", "#Addr"]
    assert "#InTPS(LOAD)" in header and "#OutTPS(LOAD)" in header
    assert len(rows) == 1
    assert rows[0].split()[:4] == [CLUSTER, BROKER, "0", cluster.addr]

    js = (await cluster.ok("clusterList", "--json")).json()
    assert js[0]["clusterName"] == CLUSTER and js[0]["addr"] == cluster.addr
    assert js[0]["runtime"]["brokerVersionDesc"]

    more = (await cluster.ok("clusterList", "-m")).out.splitlines()
    assert "#InTotalToday" in more[0] and more[1].split()[:2] == [CLUSTER, BROKER]

    # -i repeats until interrupted; with --json one line per round
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ledgermq",
        "admin",
        "clusterList",
        "-n",
        cluster.ns,
        "-i",
        "1",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(REPO),
    )
    try:
        for _ in range(2):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert json.loads(line)[0]["brokerName"] == BROKER
    finally:
        proc.kill()
        await proc.wait()

    status = (await cluster.ok("brokerStatus", "-b", cluster.addr)).out
    assert any(line.startswith("msgPutTotalTodayNow") for line in status.splitlines())
    assert (
        "commitLogMaxOffset"
        in (await cluster.ok("brokerStatus", "-b", cluster.addr, "--json")).json()
    )

    cfg = (await cluster.ok("getBrokerConfig", "-b", cluster.addr)).out
    assert f"============{cluster.addr}============" in cfg
    assert any(
        line.split("=")[0].strip() == "flushDiskType" and "ASYNC_FLUSH" in line
        for line in cfg.splitlines()
    )
    cfg_js = (await cluster.ok("getBrokerConfig", "-c", CLUSTER, "--json")).json()
    assert cfg_js[cluster.addr]["brokerName"] == BROKER

    await cluster.ok("updateBrokerConfig", "-b", cluster.addr, "-k", "maxReconsumeTimes", "-v", "7")
    assert cluster.broker.config.max_reconsume_times == 7
    cfg_js = (await cluster.ok("getBrokerConfig", "-b", cluster.addr, "--json")).json()
    assert cfg_js["maxReconsumeTimes"] == "7"
    # a key the broker refuses: clean one-line failure
    assert_clean_failure(
        await cluster.admin("updateBrokerConfig", "-c", CLUSTER, "-k", "brokerName", "-v", "x"),
        "brokerName",
    )
    assert_clean_failure(
        await cluster.admin("brokerStatus", "-c", "NoSuchCluster"),
        "cluster NoSuchCluster does not exist",
    )


async def test_send_and_query_messages(cluster: Cluster) -> None:
    await cluster.ok("updateTopic", "-t", "MsgT", "-b", cluster.addr, "-r", "2", "-w", "2")
    sent = (
        await cluster.ok(
            "sendMessage",
            "-t",
            "MsgT",
            "-p",
            "hello admin",
            "-k",
            "order-42",
            "-c",
            "TagA",
            "-b",
            BROKER,
            "-i",
            "1",
            "--json",
        )
    ).json()
    assert sent["sendStatus"] == "SEND_OK"
    assert sent["brokerName"] == BROKER and sent["queueId"] == 1
    text = (await cluster.ok("sendMessage", "-t", "MsgT", "-p", "second")).out
    assert text.splitlines()[0].split()[:5] == ["#Broker", "Name", "#QID", "#Send", "Result"]
    assert "SEND_OK" in text.splitlines()[1]

    r = await cluster.ok("queryMsgById", "-i", sent["offsetMsgId"])
    fields = {}
    for line in r.out.splitlines():
        label, _, value = line.partition(":")
        fields[label.strip()] = value.strip()
    assert fields["Topic"] == "MsgT"
    assert fields["Tags"] == "[TagA]"
    assert fields["Keys"] == "[order-42]"
    assert fields["Queue ID"] == "1"
    assert fields["Queue Offset"] == str(sent["queueOffset"])
    assert fields["Message Body"] == "hello admin"
    assert fields["Store Host"] == cluster.addr
    assert "UNIQ_KEY=" + sent["msgId"] in fields["Properties"]
    for label in (
        "CommitLog Offset",
        "Reconsume Times",
        "Born Timestamp",
        "Store Timestamp",
        "Born Host",
        "System Flag",
    ):
        assert label in fields

    js = (await cluster.ok("queryMsgById", "-i", sent["offsetMsgId"], "--json")).json()
    assert js["body"] == "hello admin" and js["msgId"] == sent["msgId"]

    by_key = await cluster.ok("queryMsgByKey", "-t", "MsgT", "-k", "order-42")
    lines = by_key.out.splitlines()
    assert lines[0].split() == ["#Message", "ID", "#QID", "#Offset"]
    assert lines[1].split() == [sent["msgId"], "1", str(sent["queueOffset"])]

    uniq = (
        await cluster.ok("queryMsgByUniqueKey", "-i", sent["msgId"], "-t", "MsgT", "--json")
    ).json()
    assert uniq["offsetMsgId"] == sent["offsetMsgId"]

    by_off = (
        await cluster.ok(
            "queryMsgByOffset",
            "-t",
            "MsgT",
            "-b",
            BROKER,
            "-i",
            "1",
            "-o",
            str(sent["queueOffset"]),
            "--json",
        )
    ).json()
    assert by_off["body"] == "hello admin" and by_off["keys"] == "order-42"

    # a body that starts with '-' is a value, as with commons-cli
    dash = (
        await cluster.ok(
            "sendMessage",
            "-t",
            "MsgT",
            "-p",
            "-starts-with-dash",
            "-b",
            BROKER,
            "-i",
            "0",
            "--json",
        )
    ).json()
    js = (await cluster.ok("queryMsgById", "-i", dash["offsetMsgId"], "--json")).json()
    assert js["body"] == "-starts-with-dash"
    assert (
        "MIN_OFFSET"
        not in (
            await cluster.ok("queryMsgByOffset", "-t", "MsgT", "-b", BROKER, "-i", "0", "-o", "0")
        ).out
    )

    # not found / malformed paths
    assert_clean_failure(await cluster.admin("queryMsgById", "-i", "nothex"), "nothex")
    r = await cluster.admin("queryMsgByOffset", "-t", "MsgT", "-b", BROKER, "-i", "1", "-o", "999")
    assert_clean_failure(r)
    assert_clean_failure(
        await cluster.admin("queryMsgByUniqueKey", "-i", "ABCDEF", "-t", "MsgT"), "not found"
    )


async def test_consumer_progress_and_groups(cluster: Cluster) -> None:
    from ledgermq.client import broker_api
    from ledgermq.client.instance import ClientInstance
    from ledgermq.client.message import MessageQueue

    await cluster.ok("updateTopic", "-t", "ProgT", "-c", CLUSTER, "-r", "2", "-w", "2")
    for i in range(3):
        await cluster.ok("sendMessage", "-t", "ProgT", "-p", f"m{i}", "-b", BROKER, "-i", "0")
    inst = ClientInstance(cluster.ns)
    await inst.start()
    try:
        await broker_api.update_consumer_offset(
            inst, cluster.addr, "CliGroup", MessageQueue("ProgT", BROKER, 0), 1
        )
    finally:
        await inst.shutdown()

    js = (await cluster.ok("consumerProgress", "-g", "CliGroup", "--json")).json()
    q0 = next(r for r in js["offsetTable"] if r["queueId"] == 0)
    assert (q0["brokerOffset"], q0["consumerOffset"], q0["diff"]) == (3, 1, 2)
    assert q0["clientIP"] == "NA"
    assert js["diffTotal"] == 2

    text = (await cluster.ok("consumerProgress", "-g", "CliGroup")).out
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["#Topic", "#Broker", "Name"]
    assert "#Consumer Offset" in lines[0] and "#Diff" in lines[0]
    assert lines[1].split()[:6] == ["ProgT", BROKER, "0", "3", "1", "NA"]
    assert "Diff Total: 2" in text and "Consume TPS:" in text

    groups = (await cluster.ok("consumerProgress", "--json")).json()
    assert {g["group"] for g in groups} >= {"CliGroup"}
    mine = next(g for g in groups if g["group"] == "CliGroup")
    assert mine["count"] == 0 and mine["version"] == "OFFLINE" and mine["diffTotal"] == 2
    assert "CliGroup" in (await cluster.ok("consumerProgress")).out

    rows = (await cluster.ok("topicList", "-c", "--json")).json()
    assert {"clusterName": CLUSTER, "topic": "ProgT", "consumerGroup": "CliGroup"} in rows

    # reset to the earliest message (time 0) and back to the end ("now" is past every store)
    r = await cluster.ok("resetOffsetByTime", "-g", "CliGroup", "-t", "ProgT", "-s", "0")
    assert "rollback consumer offset by specified group[CliGroup], topic[ProgT]" in r.out
    js = (await cluster.ok("consumerProgress", "-g", "CliGroup", "--json")).json()
    assert next(r for r in js["offsetTable"] if r["queueId"] == 0)["consumerOffset"] == 0
    js = (
        await cluster.ok(
            "resetOffsetByTime", "-g", "CliGroup", "-t", "ProgT", "-s", "now", "--json"
        )
    ).json()
    assert {r["queueId"]: r["offset"] for r in js["offsetTable"]}[0] == 3
    assert_clean_failure(
        await cluster.admin("resetOffsetByTime", "-g", "CliGroup", "-t", "ProgT", "-s", "yday"),
        "bad time",
    )

    assert_clean_failure(
        await cluster.admin("consumerConnection", "-g", "CliGroup"), "CliGroup", "not online"
    )
    assert_clean_failure(
        await cluster.admin("consumerProgress", "-g", "NoSuchGroup"),
        "no consume stats for group NoSuchGroup",
    )

    r = await cluster.ok("updateSubGroup", "-g", "SubG", "-c", CLUSTER, "-r", "3", "-q", "2")
    assert f"create subscription group to {cluster.addr} success." in r.out
    assert "consumeBroadcastEnable=false" in r.out and "retryMaxTimes=3" in r.out
    cfg = cluster.broker.subscription_groups.get("SubG")
    assert cfg is not None and cfg.retry_max_times == 3 and cfg.retry_queue_nums == 2
    assert cfg.consume_broadcast_enable is False
    await cluster.ok("deleteSubGroup", "-g", "SubG", "-b", cluster.addr)
    assert cluster.broker.subscription_groups.get("SubG") is None


async def test_kv_config(cluster: Cluster) -> None:
    r = await cluster.ok("updateKvConfig", "-s", "CLI_NS", "-k", "k1", "-v", "v1")
    assert "update kv config in namespace success." in r.out
    assert (await cluster.ok("getKvConfig", "-s", "CLI_NS", "-k", "k1")).out.strip() == "v1"
    assert (await cluster.ok("getKvConfig", "-s", "CLI_NS", "--json")).json()["table"] == {
        "k1": "v1"
    }
    await cluster.ok("deleteKvConfig", "-s", "CLI_NS", "-k", "k1")
    assert_clean_failure(
        await cluster.admin("getKvConfig", "-s", "CLI_NS", "-k", "k1"), "no kv config k1"
    )


async def test_error_paths(cluster: Cluster) -> None:
    assert_clean_failure(
        await cluster.admin("topicStatus", "-t", "NoSuchTopic"), "topic NoSuchTopic does not exist"
    )
    assert_clean_failure(
        await cluster.admin("queryMsgByKey", "-t", "NoSuchTopic", "-k", "x"),
        "topic NoSuchTopic does not exist",
    )
    assert_clean_failure(
        await cluster.admin("deleteTopic", "-t", "NoSuchTopic"), "topic NoSuchTopic does not exist"
    )
    assert_clean_failure(
        await cluster.admin("updateTopic", "-t", "bad/name", "-c", CLUSTER), "illegal characters"
    )
    assert_clean_failure(
        await cluster.admin("updateTopic", "-t", "x" * 128, "-c", CLUSTER), "max length"
    )
    assert_clean_failure(
        await cluster.admin("updateTopic", "-t", "T1", "-c", "NoCluster"),
        "cluster NoCluster does not exist",
    )
    assert_clean_failure(
        await cluster.admin("updateTopic", "-t", "T1", "-c", CLUSTER, "-a", "-message.type"),
        "removing attribute 'message.type' is not supported",
    )
    # exactly one of -b / -c: a usage error
    r = await cluster.admin("updateTopic", "-t", "T1")
    assert r.rc == 2 and "Traceback" not in r.err
    r = await cluster.admin("updateTopic", "-t", "T1", "-b", cluster.addr, "-c", CLUSTER)
    assert r.rc == 2 and "not allowed with" in r.err

    r = await cluster.admin("noSuchCommand")
    assert r.rc == 2 and "unknown command" in r.err and "updateTopic" in r.err
    r = await cluster.admin(ns=False)
    assert r.rc == 0 and "clusterList" in r.out

    # NameServer down: a port nothing listens on
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    assert_clean_failure(
        await cluster.admin("topicList", ns=dead), "cannot connect to NameServer", dead
    )
    assert_clean_failure(await cluster.admin("clusterList", ns=dead), dead)

    # -n from NAMESRV_ADDR, like mqadmin
    r = await cluster.admin("topicList", ns=False, env={"NAMESRV_ADDR": cluster.ns})
    assert r.rc == 0, r
    r = await cluster.admin("topicList", ns=False, env={"NAMESRV_ADDR": ""})
    assert_clean_failure(r, "NAMESRV_ADDR")


async def test_online_consumer(cluster: Cluster) -> None:
    from ledgermq.client.instance import ClientInstance
    from ledgermq.client.message import ConsumeResult
    from ledgermq.client.push_consumer import PushConsumer

    await cluster.ok("updateTopic", "-t", "LiveT", "-c", CLUSTER, "-r", "2", "-w", "2")
    for i in range(4):
        await cluster.ok("sendMessage", "-t", "LiveT", "-p", f"m{i}")
    seen: list[bytes] = []
    consumer = PushConsumer(
        "LiveGroup",
        cluster.ns,
        consume_from_where="CONSUME_FROM_FIRST_OFFSET",
        persist_interval=0.2,
        instance=ClientInstance(cluster.ns, route_interval=0.5, heartbeat_interval=1.0),
    )
    consumer.subscribe("LiveT", "*")
    consumer.register_listener(
        lambda msgs: seen.extend(m.body for m in msgs) or ConsumeResult.SUCCESS
    )
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while loop.time() < deadline:
            r = await cluster.admin("consumerProgress", "-g", "LiveGroup", "--json")
            # exit 1 ("no consume stats") until the consumer commits its first offsets
            js = r.json() if r.rc == 0 else {"offsetTable": []}
            live = [r for r in js["offsetTable"] if r["topic"] == "LiveT"]
            if len(seen) >= 4 and live and sum(r["diff"] for r in live) == 0:
                break
            await asyncio.sleep(0.3)
        else:
            raise AssertionError(f"consumer did not catch up: {js}")
        # The IP comes from GET_CONSUMER_RUNNING_INFO (307), which the broker forwards to
        # the client that holds the queue.
        assert {r["clientIP"] for r in live} == {"127.0.0.1"}

        conn = await cluster.ok("consumerConnection", "-g", "LiveGroup")
        assert conn.out.startswith("001  ")
        assert "Below is subscription:" in conn.out
        assert "Topic: LiveT" in conn.out
        assert "ConsumeType: CONSUME_PASSIVELY" in conn.out
        assert "MessageModel: CLUSTERING" in conn.out
        js = (await cluster.ok("consumerConnection", "-g", "LiveGroup", "--json")).json()
        assert len(js["connectionSet"]) == 1

        groups = (await cluster.ok("consumerProgress", "--json")).json()
        mine = next(g for g in groups if g["group"] == "LiveGroup")
        assert (mine["count"], mine["type"], mine["model"]) == (1, "PUSH", "CLUSTERING")
    finally:
        await consumer.shutdown()
