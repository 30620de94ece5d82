"""Broker over real sockets and real files: drive it like a RocketMQ client would."""

from __future__ import annotations

import asyncio
import json

import pytest

from ledgermq.broker.broker import Broker
from ledgermq.broker.config import BrokerConfig
from ledgermq.common.config import ConfigError
from ledgermq.common.message import (
    decode_record,
    decode_records,
    encode_batch,
    encode_properties,
    parse_offset_msg_id,
)
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode, SerializeType
from ledgermq.remoting.connection import Dispatcher

pytestmark = pytest.mark.timeout(60)


def make_config(tmp_path, **props: str) -> BrokerConfig:
    base = {
        "brokerName": "broker-a",
        "brokerIP1": "127.0.0.1",
        "listenPort": "0",
        "storePathRootDir": str(tmp_path / "store"),
        "mappedFileSizeCommitLog": str(1 << 20),
        "messageDelayLevel": "1s 2s",
    }
    base.update(props)
    return BrokerConfig.from_properties(base)


class Harness:
    def __init__(self, tmp_path, **props: str) -> None:
        self.tmp_path = tmp_path
        self.props = props
        self.broker: Broker | None = None
        self.client = RemotingClient()

    async def start(self) -> Broker:
        self.broker = Broker(make_config(self.tmp_path, **self.props), host="127.0.0.1")
        await self.broker.start()
        return self.broker

    async def restart(self) -> Broker:
        assert self.broker is not None
        await self.broker.stop()
        await self.client.close()
        self.client = RemotingClient()
        return await self.start()

    @property
    def addr(self) -> str:
        assert self.broker is not None
        return self.broker.address

    async def call(self, code: int, ext=None, body=b"", serialize=SerializeType.JSON, timeout=5):
        cmd = RemotingCommand(
            code=code,
            ext_fields={k: str(v) for k, v in (ext or {}).items()},
            body=body,
            serialize_type=serialize,
        )
        return await self.client.invoke(self.addr, cmd, timeout)

    async def send(self, topic, body, *, props=None, queue_id=0, v2=True, serialize=0, **extra):
        props = {"UNIQ_KEY": f"U{body.hex()[:16]}", **(props or {})}
        fields = {
            "producerGroup": "PG",
            "topic": topic,
            "defaultTopic": "TBW102",
            "defaultTopicQueueNums": 4,
            "queueId": queue_id,
            "sysFlag": 0,
            "bornTimestamp": 1700000000000,
            "flag": 0,
            "properties": encode_properties(props),
            "reconsumeTimes": 0,
            **extra,
        }
        if v2:
            short = dict(
                zip(
                    [
                        "producerGroup",
                        "topic",
                        "defaultTopic",
                        "defaultTopicQueueNums",
                        "queueId",
                        "sysFlag",
                        "bornTimestamp",
                        "flag",
                        "properties",
                        "reconsumeTimes",
                        "unitMode",
                        "maxReconsumeTimes",
                    ],
                    "abcdefghijkl",
                    strict=True,
                )
            )
            fields = {short.get(k, k): v for k, v in fields.items()}
            return await self.call(RequestCode.SEND_MESSAGE_V2, fields, body, serialize)
        return await self.call(RequestCode.SEND_MESSAGE, fields, body, serialize)

    async def pull(
        self,
        topic,
        queue_id=0,
        offset=0,
        *,
        group="CG",
        sys_flag=0,
        sub="*",
        suspend_ms=1000,
        commit=-1,
        serialize=0,
        timeout=5,
    ):
        return await self.call(
            RequestCode.PULL_MESSAGE,
            {
                "consumerGroup": group,
                "topic": topic,
                "queueId": queue_id,
                "queueOffset": offset,
                "maxMsgNums": 32,
                "sysFlag": sys_flag | 0x4,
                "commitOffset": commit,
                "suspendTimeoutMillis": suspend_ms,
                "subVersion": 0,
                "subscription": sub,
                "expressionType": "TAG",
            },
            serialize=serialize,
            timeout=timeout,
        )

    async def close(self) -> None:
        await self.client.close()
        if self.broker is not None:
            await self.broker.stop()


@pytest.fixture
async def h(tmp_path):
    harness = Harness(tmp_path)
    await harness.start()
    yield harness
    await harness.close()


async def wait_until(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


PULL_HEADER = ("suggestWhichBrokerId", "nextBeginOffset", "minOffset", "maxOffset")


# --- send and pull ----------------------------------------------------------------------
@pytest.mark.parametrize("serialize", [SerializeType.JSON, SerializeType.ROCKETMQ])
@pytest.mark.parametrize("v2", [True, False])
async def test_send_then_pull_back_byte_exact(h, serialize, v2):
    sent = []
    for i in range(3):
        r = await h.send(
            "TopicA",
            f"body-{i}".encode(),
            props={"TAGS": "t", "KEYS": f"k{i}"},
            v2=v2,
            serialize=serialize,
        )
        assert r.code == ResponseCode.SUCCESS, r.remark
        assert r.serialize_type == serialize
        assert r.ext_fields["queueId"] == "0"
        assert r.ext_fields["queueOffset"] == str(i)
        assert r.ext_fields["MSG_REGION"] == "DefaultRegion"
        assert r.ext_fields["TRACE_ON"] == "true"
        sent.append(r.ext_fields["msgId"])
    r = await h.pull("TopicA", serialize=serialize)
    assert r.code == ResponseCode.SUCCESS
    assert all(k in r.ext_fields for k in PULL_HEADER)
    assert r.ext_fields["nextBeginOffset"] == "3"
    msgs = decode_records(r.body, verify_crc=True)
    assert [m.body for m in msgs] == [b"body-0", b"body-1", b"body-2"]
    assert [m.queue_offset for m in msgs] == [0, 1, 2]
    assert [m.offset_msg_id for m in msgs] == sent
    assert msgs[0].properties["TAGS"] == "t"
    assert msgs[0].born_timestamp == 1700000000000
    assert msgs[0].store_host == ("127.0.0.1", h.broker.port)
    # The stored bytes are what VIEW_MESSAGE_BY_ID returns for the offsetMsgId.
    _, _, phy = parse_offset_msg_id(sent[1])
    view = await h.call(RequestCode.VIEW_MESSAGE_BY_ID, {"offset": phy})
    assert view.code == 0
    _, end0 = decode_record(r.body)
    _, end1 = decode_record(r.body, end0)
    assert view.body == r.body[end0:end1]


async def test_batch_send_and_pull(h):
    body = encode_batch([(f"m{i}".encode(), 0, {"UNIQ_KEY": f"B{i}"}) for i in range(5)])
    r = await h.call(
        RequestCode.SEND_BATCH_MESSAGE,
        {
            "a": "PG",
            "b": "BatchT",
            "c": "TBW102",
            "d": 4,
            "e": 1,
            "f": 0,
            "g": 1,
            "h": 0,
            "m": "true",
        },
        body,
    )
    assert r.code == 0, r.remark
    assert len(r.ext_fields["msgId"].split(",")) == 5
    assert r.ext_fields["queueOffset"] == "0"
    p = await h.pull("BatchT", queue_id=1)
    assert [m.body for m in decode_records(p.body)] == [f"m{i}".encode() for i in range(5)]


async def test_pull_status_codes_carry_all_header_fields(h):
    await h.send("T2", b"x")
    not_found = await h.pull("T2", offset=1)
    moved = await h.pull("T2", offset=5)
    for r in (not_found, moved):
        assert all(k in r.ext_fields for k in PULL_HEADER)
    assert not_found.code == ResponseCode.PULL_NOT_FOUND
    assert moved.code == ResponseCode.PULL_OFFSET_MOVED
    assert moved.ext_fields["nextBeginOffset"] == "1"
    empty_q = await h.pull("T2", queue_id=3, offset=0)
    assert empty_q.code == ResponseCode.PULL_NOT_FOUND
    # Errors too: clients decode these fields before they look at the code.
    unknown_topic = await h.pull("NoSuchTopic")
    bad_queue = await h.pull("T2", queue_id=99)
    bad_expression = await h.pull("T2", sub="a ||")
    assert unknown_topic.code == ResponseCode.TOPIC_NOT_EXIST
    assert bad_queue.code == ResponseCode.SYSTEM_ERROR
    for r in (unknown_topic, bad_queue, bad_expression):
        assert r.code != ResponseCode.SUCCESS
        assert all(k in r.ext_fields for k in PULL_HEADER), (r.code, r.remark)


async def test_long_poll_wakes_on_new_message_and_times_out(h):
    await h.send("LP", b"first")
    waiting = asyncio.ensure_future(h.pull("LP", offset=1, sys_flag=0x2, suspend_ms=10_000))
    await wait_until(lambda: h.broker.pull_hold.suspended == 1)
    assert not waiting.done()
    await h.send("LP", b"second")
    r = await asyncio.wait_for(waiting, 5)
    assert r.code == 0
    assert [m.body for m in decode_records(r.body)] == [b"second"]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    r = await h.pull("LP", offset=2, sys_flag=0x2, suspend_ms=200)
    assert r.code == ResponseCode.PULL_NOT_FOUND
    assert loop.time() - t0 >= 0.15
    assert all(k in r.ext_fields for k in PULL_HEADER)


async def test_tag_filtering(h):
    for tag in ("a", "b", "c", "a"):
        await h.send("Tags", tag.encode(), props={"TAGS": tag})
    r = await h.pull("Tags", sub="a || c")
    assert [m.body for m in decode_records(r.body)] == [b"a", b"c", b"a"]
    r = await h.pull("Tags", sub="zzz")
    assert r.code == ResponseCode.PULL_RETRY_IMMEDIATELY
    assert r.ext_fields["nextBeginOffset"] == "4"


# --- offsets ------------------------------------------------------------------------------
async def test_consumer_offsets_persist_across_restart(h):
    await h.send("OffT", b"x")
    q = {"consumerGroup": "G1", "topic": "OffT", "queueId": 0}
    r = await h.call(RequestCode.QUERY_CONSUMER_OFFSET, q)
    assert (r.code, r.ext_fields.get("offset")) == (0, "0")  # min offset 0 -> 0
    r = await h.call(RequestCode.UPDATE_CONSUMER_OFFSET, {**q, "commitOffset": -1})
    assert r.code == 0
    r = await h.call(RequestCode.UPDATE_CONSUMER_OFFSET, {**q, "commitOffset": 1})
    await h.pull("OffT", group="G1", queue_id=1, sys_flag=0x1, commit=7)
    await h.restart()
    r = await h.call(RequestCode.QUERY_CONSUMER_OFFSET, q)
    assert r.ext_fields["offset"] == "1"
    r = await h.call(RequestCode.QUERY_CONSUMER_OFFSET, {**q, "queueId": 1})
    assert r.ext_fields["offset"] == "7"
    data = json.loads((h.tmp_path / "store/config/consumerOffset.json").read_text())
    assert data["offsetTable"]["OffT@G1"] == {"0": 1, "1": 7}
    r = await h.call(RequestCode.GET_MAX_OFFSET, {"topic": "OffT", "queueId": 0})
    assert r.ext_fields["offset"] == "1"
    r = await h.call(RequestCode.GET_MIN_OFFSET, {"topic": "OffT", "queueId": 0})
    assert r.ext_fields["offset"] == "0"


# --- clients --------------------------------------------------------------------------
def heartbeat_body(client_id, group, ordinal=False):
    consumer = {
        "groupName": group,
        "consumeType": 1 if ordinal else "CONSUME_PASSIVELY",
        "messageModel": 1 if ordinal else "CLUSTERING",
        "consumeFromWhere": 0 if ordinal else "CONSUME_FROM_LAST_OFFSET",
        "unitMode": False,
        "subscriptionDataSet": [
            {
                "topic": "HT",
                "subString": "*",
                "tagsSet": [],
                "codeSet": [],
                "subVersion": "123" if ordinal else 123,
                "expressionType": "TAG",
                "classFilterMode": False,
            }
        ],
    }
    return json.dumps(
        {
            "clientID": client_id,
            "producerDataSet": [{"groupName": "PG"}],
            "consumerDataSet": [consumer],
        }
    ).encode()


async def test_heartbeat_consumer_list_and_notify_on_change(h):
    notified = asyncio.Queue()
    d = Dispatcher()
    d.register(
        RequestCode.NOTIFY_CONSUMER_IDS_CHANGED,
        lambda conn, cmd: notified.put_nowait(cmd.ext_fields["consumerGroup"]),
    )
    first = RemotingClient(d)
    cmd = RemotingCommand(code=RequestCode.HEART_BEAT, body=heartbeat_body("c1@1", "CG1"))
    assert (await first.invoke(h.addr, cmd)).code == 0
    assert await asyncio.wait_for(notified.get(), 5) == "CG1"
    # The C++ core's dialect: ordinals and a string subVersion.
    second = RemotingClient()
    cmd = RemotingCommand(code=RequestCode.HEART_BEAT, body=heartbeat_body("c2@2", "CG1", True))
    assert (await second.invoke(h.addr, cmd)).code == 0
    assert await asyncio.wait_for(notified.get(), 5) == "CG1"
    r = await h.call(RequestCode.GET_CONSUMER_LIST_BY_GROUP, {"consumerGroup": "CG1"})
    assert json.loads(r.body)["consumerIdList"] == ["c1@1", "c2@2"]
    r = await h.call(RequestCode.GET_CONSUMER_CONNECTION_LIST, {"consumerGroup": "CG1"})
    conn = json.loads(r.body)
    assert conn["messageModel"] == "CLUSTERING"
    assert {c["clientId"] for c in conn["connectionSet"]} == {"c1@1", "c2@2"}
    r = await h.call(RequestCode.GET_PRODUCER_CONNECTION_LIST, {"producerGroup": "PG"})
    assert r.code == 0
    # A member leaving (its connection closes) is a change too.
    await second.close()
    assert await asyncio.wait_for(notified.get(), 5) == "CG1"
    r = await h.call(RequestCode.GET_CONSUMER_LIST_BY_GROUP, {"consumerGroup": "CG1"})
    assert json.loads(r.body)["consumerIdList"] == ["c1@1"]
    # Pull without a subscription in the header uses the heartbeat's.
    await h.send("HT", b"x")
    r = await h.call(
        RequestCode.PULL_MESSAGE,
        {
            "consumerGroup": "CG1",
            "topic": "HT",
            "queueId": 0,
            "queueOffset": 0,
            "maxMsgNums": 32,
            "sysFlag": 0,
            "commitOffset": -1,
            "suspendTimeoutMillis": 0,
            "subVersion": 0,
        },
    )
    assert r.code == 0
    await first.close()


async def test_check_client_config_and_unknown_code(h):
    assert (await h.call(RequestCode.CHECK_CLIENT_CONFIG)).code == 0
    assert (await h.call(9999)).code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED


# --- retry, DLQ, delay --------------------------------------------------------------------
async def test_send_back_goes_to_retry_then_dlq(tmp_path):
    h = Harness(tmp_path, messageDelayLevel="1s 1s 1s 1s")
    await h.start()
    try:
        r = await h.send("Orig", b"payload", props={"UNIQ_KEY": "UK1"})
        _, _, phy = parse_offset_msg_id(r.ext_fields["msgId"])
        back = {
            "offset": phy,
            "group": "G",
            "delayLevel": 0,
            "originMsgId": "UK1",
            "maxReconsumeTimes": 1,
        }
        assert (await h.call(RequestCode.CONSUMER_SEND_MSG_BACK, back)).code == 0
        # Level 3 + 0 is clamped to the 4 configured levels; arrives after ~1 s.
        r = await h.pull("%RETRY%G", sys_flag=0x2, suspend_ms=5000)
        assert r.code == 0, r.remark
        (retry,) = decode_records(r.body)
        assert retry.topic == "%RETRY%G"
        assert retry.reconsume_times == 1
        assert retry.properties["RETRY_TOPIC"] == "Orig"
        assert retry.properties["UNIQ_KEY"] == "UK1"
        assert retry.properties["ORIGIN_MESSAGE_ID"] == "UK1"
        assert "DELAY" not in retry.properties
        back["offset"] = retry.commit_log_offset
        assert (await h.call(RequestCode.CONSUMER_SEND_MSG_BACK, back)).code == 0
        r = await h.pull("%DLQ%G")
        assert r.code == 0
        (dead,) = decode_records(r.body)
        assert dead.body == b"payload"
        assert dead.reconsume_times == 2
        assert dead.properties["RETRY_TOPIC"] == "Orig"
    finally:
        await h.close()


async def test_delay_level_delivery_survives_restart(h):
    r = await h.send("Later", b"d1", props={"DELAY": "1"})
    assert r.code == 0
    r = await h.send("Later", b"d2", props={"DELAY": "2"})
    assert (await h.pull("Later")).code == ResponseCode.PULL_NOT_FOUND
    sched = await h.pull("SCHEDULE_TOPIC_XXXX", queue_id=0)
    (m,) = decode_records(sched.body)
    assert m.properties["REAL_TOPIC"] == "Later"
    r = await h.pull("Later", sys_flag=0x2, suspend_ms=5000)
    assert [m.body for m in decode_records(r.body)] == [b"d1"]
    assert "DELAY" not in decode_records(r.body)[0].properties
    await h.restart()  # level 2 is still pending: it must still arrive
    r = await h.pull("Later", offset=1, sys_flag=0x2, suspend_ms=5000)
    assert [m.body for m in decode_records(r.body)] == [b"d2"]
    data = json.loads((h.tmp_path / "store/config/delayOffset.json").read_text())
    assert data["offsetTable"]["1"] == 1
    r = await h.call(RequestCode.GET_ALL_DELAY_OFFSET)
    assert json.loads(r.body)["offsetTable"]["1"] == 1


# --- locks, queries ---------------------------------------------------------------------
async def test_lock_and_unlock_batch(h):
    mqs = [{"topic": "T", "brokerName": "broker-a", "queueId": i} for i in range(3)]

    async def lock(client, qs):
        body = json.dumps({"consumerGroup": "G", "clientId": client, "mqSet": qs}).encode()
        r = await h.call(RequestCode.LOCK_BATCH_MQ, body=body)
        return sorted(mq["queueId"] for mq in json.loads(r.body)["lockOKMQSet"])

    assert await lock("c1", mqs[:2]) == [0, 1]
    assert await lock("c2", mqs) == [2]
    body = json.dumps({"consumerGroup": "G", "clientId": "c1", "mqSet": mqs[:1]}).encode()
    assert (await h.call(RequestCode.UNLOCK_BATCH_MQ, body=body)).code == 0
    assert await lock("c2", mqs) == [0, 2]


async def test_query_by_key_and_unique_key(h):
    await h.send("QT", b"one", props={"KEYS": "order-1 shared", "UNIQ_KEY": "AAA"})
    await h.send("QT", b"two", props={"KEYS": "shared", "UNIQ_KEY": "BBB"})
    q = {"topic": "QT", "maxNum": 32, "beginTimestamp": 0, "endTimestamp": 1 << 62}
    r = await h.call(RequestCode.QUERY_MESSAGE, {**q, "key": "shared"})
    assert sorted(m.body for m in decode_records(r.body)) == [b"one", b"two"]
    r = await h.call(RequestCode.QUERY_MESSAGE, {**q, "key": "BBB", "_UNIQUE_KEY_QUERY": "true"})
    assert [m.body for m in decode_records(r.body)] == [b"two"]
    r = await h.call(RequestCode.QUERY_MESSAGE, {**q, "key": "nope"})
    assert r.code == ResponseCode.QUERY_NOT_FOUND


# --- errors ------------------------------------------------------------------------------
async def test_oversized_message_is_illegal(tmp_path):
    h = Harness(tmp_path, maxMessageSize="1024")
    await h.start()
    try:
        r = await h.send("Big", b"x" * 2048)
        assert r.code == ResponseCode.MESSAGE_ILLEGAL
        assert "1024" in r.remark
        r = await h.send("bad topic!", b"x")
        assert r.code == ResponseCode.MESSAGE_ILLEGAL
        assert "illegal" in r.remark
    finally:
        await h.close()


async def test_unknown_topic_without_auto_create(tmp_path):
    h = Harness(tmp_path, autoCreateTopicEnable="false")
    await h.start()
    try:
        r = await h.send("Nope", b"x")
        assert r.code == ResponseCode.TOPIC_NOT_EXIST
        r = await h.call(
            RequestCode.UPDATE_AND_CREATE_TOPIC,
            {
                "topic": "Made",
                "defaultTopic": "TBW102",
                "readQueueNums": 2,
                "writeQueueNums": 2,
                "perm": 6,
                "topicFilterType": "SINGLE_TAG",
                "order": "false",
            },
        )
        assert r.code == 0
        assert (await h.send("Made", b"x", queue_id=1)).code == 0
        r = await h.call(RequestCode.GET_TOPIC_CONFIG, {"topic": "Made"})
        assert json.loads(r.body)["readQueueNums"] == 2
        r = await h.call(RequestCode.DELETE_TOPIC_IN_BROKER, {"topic": "Made"})
        assert r.code == 0
        assert (await h.send("Made", b"x")).code == ResponseCode.TOPIC_NOT_EXIST
    finally:
        await h.close()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="brokerRole"):
        make_config(tmp_path, brokerRole="BOSS")
    with pytest.raises(ConfigError, match="listenPort"):
        make_config(tmp_path, listenPort="abc")
    with pytest.raises(ConfigError, match="messageDelayLevel"):
        make_config(tmp_path, messageDelayLevel="1x")


# --- admin ------------------------------------------------------------------------------
async def test_admin_codes(h):
    await h.send("AdminT", b"x")
    r = await h.call(RequestCode.GET_BROKER_RUNTIME_INFO)
    table = json.loads(r.body)["table"]
    assert table["msgPutTotalTodayNow"] == "1"
    assert int(table["commitLogMaxOffset"]) > 0
    r = await h.call(RequestCode.GET_ALL_TOPIC_CONFIG)
    topics = json.loads(r.body)["topicConfigTable"]
    assert topics["TBW102"]["perm"] == 7
    assert topics["SCHEDULE_TOPIC_XXXX"]["readQueueNums"] == 2
    assert "AdminT" in topics
    r = await h.call(RequestCode.GET_TOPIC_STATS_INFO, {"topic": "AdminT"})
    assert r.code == 0 and b'"maxOffset":1' in r.body
    r = await h.call(RequestCode.GET_BROKER_CONFIG)
    assert b"brokerName=broker-a" in r.body
    r = await h.call(RequestCode.UPDATE_BROKER_CONFIG, body=b"brokerPermission=4\n")
    assert r.code == 0 and h.broker.config.broker_permission == 4
    assert (await h.send("AdminT", b"y")).code == ResponseCode.NO_PERMISSION
    r = await h.call(RequestCode.UPDATE_BROKER_CONFIG, body=b"noSuchKey=1\n")
    assert r.code != 0 and "noSuchKey" in r.remark


# --- registration -------------------------------------------------------------------------
async def test_registers_with_name_server_and_unregisters_on_stop(tmp_path):
    from ledgermq.namesrv.config import NamesrvConfig
    from ledgermq.namesrv.server import NameServer

    ns = NameServer(NamesrvConfig(user_home=str(tmp_path / "ns")), host="127.0.0.1", port=0)
    await ns.start()
    h = Harness(tmp_path, namesrvAddr=ns.address)
    try:
        await h.start()
        assert "TBW102" in ns.route_table.all_topics()
        route = ns.route_table.pickup_topic_route_data("TBW102")
        assert route is not None
        await h.send("NewTopic", b"x")  # auto-create triggers an immediate re-register
        await wait_until(lambda: "NewTopic" in ns.route_table.all_topics())
        await h.close()
        await wait_until(lambda: "TBW102" not in ns.route_table.all_topics())
    finally:
        await ns.stop()


async def test_sync_flush_send_waits_for_fsync_and_topics_survive_restart(tmp_path):
    h = Harness(tmp_path, flushDiskType="SYNC_FLUSH")
    await h.start()
    try:
        replies = await asyncio.gather(*(h.send("Durable", bytes([i])) for i in range(20)))
        assert all(r.code == 0 for r in replies)
        store = h.broker.store.store
        assert store.flushed_physical_offset >= store.max_physical_offset
        await h.restart()
        assert h.broker.topic_config.get("Durable") is not None
        r = await h.call(
            RequestCode.LITE_PULL_MESSAGE,
            {
                "consumerGroup": "L",
                "topic": "Durable",
                "queueId": 0,
                "queueOffset": 0,
                "maxMsgNums": 50,
                "sysFlag": 0x14,
                "commitOffset": -1,
                "suspendTimeoutMillis": 0,
                "subVersion": 0,
                "subscription": "*",
            },
        )
        assert r.code == 0
        assert len(decode_records(r.body)) == 20
    finally:
        await h.close()


def _v2_send_frame(opaque: int, topic: str, body: bytes) -> bytes:
    from ledgermq.remoting.codec import encode_command

    fields = {
        "a": "PG",
        "b": topic,
        "c": "TBW102",
        "d": "4",
        "e": "0",
        "f": "0",
        "g": "1700000000000",
        "h": "0",
        "i": encode_properties({"UNIQ_KEY": f"U{opaque}"}),
        "j": "0",
        "k": "false",
        "m": "false",
    }
    return encode_command(
        RemotingCommand(
            code=RequestCode.SEND_MESSAGE_V2, opaque=opaque, ext_fields=fields, body=body
        )
    )


async def _pipelined_sends(broker: Broker, count: int) -> list[RemotingCommand]:
    """`count` sends written in one go, so the broker reads (and groups) them together."""
    from ledgermq.remoting.codec import FrameDecoder

    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    writer.write(b"".join(_v2_send_frame(i, "Piped", bytes([i]) * 10) for i in range(count)))
    decoder, replies = FrameDecoder(), []
    while len(replies) < count:
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, "broker closed the connection"
        replies.extend(decoder.feed(chunk))
    writer.close()
    return sorted(replies, key=lambda r: r.opaque)


async def test_pipelined_sync_flush_sends_are_acked_only_when_durable(tmp_path):
    h = Harness(tmp_path, flushDiskType="SYNC_FLUSH")
    await h.start()
    groups: list[int] = []
    real_put_group = h.broker.putter.put_group
    h.broker.putter.put_group = lambda msgs: (groups.append(len(msgs)), real_put_group(msgs))[1]
    try:
        replies = await _pipelined_sends(h.broker, 50)
        assert [r.code for r in replies] == [0] * 50
        assert max(groups) > 1, "the pipelined sends were not stored as a group"
        assert [int(r.ext_fields["queueOffset"]) for r in replies] == list(range(50))
        store = h.broker.store.store
        assert store.flushed_physical_offset >= store.max_physical_offset
    finally:
        await h.close()


async def test_pipelined_sync_flush_sends_report_flush_failure(tmp_path):
    # fsync fails: no send of the group may be acknowledged as SEND_OK.
    from ledgermq.storage.disk import FaultyDisk, OsDisk

    disk = FaultyDisk(OsDisk())
    broker = Broker(make_config(tmp_path, flushDiskType="SYNC_FLUSH"), disk=disk, host="127.0.0.1")
    await broker.start()
    disk.fail_sync = True
    try:
        replies = await _pipelined_sends(broker, 20)
        assert {r.code for r in replies} == {ResponseCode.FLUSH_DISK_TIMEOUT}
    finally:
        await broker.stop()


async def test_consumer_running_info_for_an_offline_client_says_so(h):
    r = await h.call(
        RequestCode.GET_CONSUMER_RUNNING_INFO,
        {"consumerGroup": "NobodyHere", "clientId": "127.0.0.1@1@x", "jstackEnable": "false"},
    )
    assert r.code == ResponseCode.CONSUMER_NOT_ONLINE
    assert "NobodyHere" in r.remark


async def test_long_poll_wakes_only_for_messages_its_filter_accepts(h):
    await h.send("LPF", b"seed", props={"TAGS": "a"})
    waiting = asyncio.ensure_future(
        h.pull("LPF", offset=1, sys_flag=0x2, sub="a", suspend_ms=10_000, timeout=15)
    )
    await wait_until(lambda: h.broker.pull_hold.suspended == 1)
    await h.send("LPF", b"other", props={"TAGS": "b"})
    # A message the filter rejects leaves the pull suspended (no PULL_RETRY_IMMEDIATELY).
    await h.send("Elsewhere", b"sync point")
    assert not waiting.done() and h.broker.pull_hold.suspended == 1
    await h.send("LPF", b"wanted", props={"TAGS": "a"})
    r = await asyncio.wait_for(waiting, 5)
    assert r.code == ResponseCode.SUCCESS
    assert [m.body for m in decode_records(r.body)] == [b"wanted"]


async def test_stored_properties_decode_to_what_was_sent_plus_cluster(h):
    # The broker stores the producer's properties text as it came (plus CLUSTER) unless
    # it has to change it: transient keys are dropped, a missing last separator added.
    sent = {
        "plain": "KEYS\x01k1 k2\x02TAGS\x01t\x02UNIQ_KEY\x01U1\x02",
        "unterminated": "TAGS\x01t\x02UNIQ_KEY\x01U2",
        "transient": "TAGS\x01t\x02__RMQ.TRANSIENT.X\x01secret\x02UNIQ_KEY\x01U3\x02",
    }
    for i, text in enumerate(sent.values()):
        r = await h.call(
            RequestCode.SEND_MESSAGE,
            {
                "producerGroup": "PG",
                "topic": "Props",
                "defaultTopic": "TBW102",
                "defaultTopicQueueNums": 4,
                "queueId": 0,
                "sysFlag": 0,
                "bornTimestamp": 1700000000000,
                "flag": 0,
                "properties": text,
            },
            f"body{i}".encode(),
        )
        assert r.code == ResponseCode.SUCCESS, r.remark
    got = [m.properties for m in decode_records((await h.pull("Props")).body)]
    cluster = h.broker.config.broker_cluster_name
    assert got[0] == {"KEYS": "k1 k2", "TAGS": "t", "UNIQ_KEY": "U1", "CLUSTER": cluster}
    assert got[1] == {"TAGS": "t", "UNIQ_KEY": "U2", "CLUSTER": cluster}
    assert got[2] == {"TAGS": "t", "UNIQ_KEY": "U3", "CLUSTER": cluster}


async def test_pipelined_sync_flush_group_with_a_batch_send_in_it(tmp_path):
    # A V2 batch (m=true) among pipelined single sends: every reply is a real reply.
    from ledgermq.remoting.codec import FrameDecoder, encode_command

    h = Harness(tmp_path, flushDiskType="SYNC_FLUSH")
    await h.start()
    try:
        frames = [_v2_send_frame(i, "Mixed", b"single") for i in range(3)]
        batch_fields = {
            "a": "PG",
            "b": "Mixed",
            "c": "TBW102",
            "d": "4",
            "e": "0",
            "f": "0",
            "g": "1700000000000",
            "h": "0",
            "i": "",
            "j": "0",
            "k": "false",
            "m": "true",
        }
        body = encode_batch([(b"b1", 0, {"UNIQ_KEY": "B1"}), (b"b2", 0, {"UNIQ_KEY": "B2"})])
        frames.insert(
            1,
            encode_command(
                RemotingCommand(
                    code=RequestCode.SEND_MESSAGE_V2, opaque=99, ext_fields=batch_fields, body=body
                )
            ),
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", h.broker.port)
        writer.write(b"".join(frames))
        decoder, replies = FrameDecoder(), []
        while len(replies) < 4:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk
            replies.extend(decoder.feed(chunk))
        writer.close()
        assert sorted(r.opaque for r in replies) == [0, 1, 2, 99]
        assert all(r.code == ResponseCode.SUCCESS for r in replies), [r.remark for r in replies]
        batch_reply = next(r for r in replies if r.opaque == 99)
        assert len(batch_reply.ext_fields["msgId"].split(",")) == 2
    finally:
        await h.close()
