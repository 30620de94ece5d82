"""NameServer over real loopback sockets, driven by the remoting client."""

import asyncio
import json
import zlib

import pytest

from ledgermq.common import fastjson as jsonfmt
from ledgermq.namesrv.config import NamesrvConfig
from ledgermq.namesrv.server import NameServer
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode

CLUSTER = "DefaultCluster"
MASTER = "127.0.0.1:10911"
SLAVE = "127.0.0.1:10921"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def make_config(tmp_path, **overrides) -> NamesrvConfig:
    config = NamesrvConfig(user_home=str(tmp_path))
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def namesrv(tmp_path, clock):
    server = NameServer(make_config(tmp_path), host="127.0.0.1", port=0, clock=clock)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client():
    c = RemotingClient()
    yield c
    await c.close()


def register_body(topics, counter=1, state_version=0, legacy=False):
    table = {
        t: {
            "order": False,
            "perm": 6,
            "readQueueNums": 4,
            "topicFilterType": "SINGLE_TAG",
            "topicName": t,
            "topicSysFlag": 0,
            "writeQueueNums": 4,
        }
        for t in topics
    }
    body = {
        "filterServerList": [],
        "topicConfigSerializeWrapper": {
            "dataVersion": {"counter": counter, "stateVersion": state_version, "timestamp": 7},
            "topicConfigTable": table,
        },
    }
    return jsonfmt.encode(body, standard=not legacy)


def register_cmd(addr=MASTER, bid=0, topics=("TopicA", "broker-a"), crc=True, **extra):
    body = extra.pop("body", None) or register_body(topics)
    fields = {
        "brokerName": "broker-a",
        "brokerAddr": addr,
        "clusterName": CLUSTER,
        "haServerAddr": addr.replace("109", "119"),
        "brokerId": str(bid),
        "compressed": "false",
        "bodyCrc32": str(zlib.crc32(body) & 0x7FFFFFFF) if crc else "0",
        **extra,
    }
    return RemotingCommand(RequestCode.REGISTER_BROKER, ext_fields=fields, body=body)


def cmd(code, body=b"", version=479, **fields):
    return RemotingCommand(code, version=version, ext_fields=fields, body=body)


async def test_register_route_and_cluster_info(namesrv, client):
    addr = namesrv.address
    reply = await client.invoke(addr, register_cmd())
    assert reply.code == ResponseCode.SUCCESS, reply.remark
    assert json.loads(reply.body) == {"table": {}}
    assert "masterAddr" not in reply.ext_fields

    slave = RemotingClient()
    try:
        reply = await slave.invoke(addr, register_cmd(SLAVE, 1))
        assert reply.code == ResponseCode.SUCCESS
        assert reply.ext_fields["masterAddr"] == MASTER
        assert reply.ext_fields["haServerAddr"] == "127.0.0.1:11911"
    finally:
        await slave.close()
    # The slave's connection closed: it is unregistered, the master stays.
    for _ in range(100):
        if 1 not in namesrv.route_table.broker_addr_table["broker-a"].broker_addrs:
            break
        await asyncio.sleep(0.01)
    assert namesrv.route_table.broker_addr_table["broker-a"].broker_addrs == {0: MASTER}

    # Modern clients (version >= 401) get standard JSON ...
    reply = await client.invoke(addr, cmd(RequestCode.GET_ROUTEINFO_BY_TOPIC, topic="TopicA"))
    assert reply.code == ResponseCode.SUCCESS
    route = json.loads(reply.body)
    assert route["brokerDatas"][0]["brokerAddrs"] == {"0": MASTER}
    assert route["queueDatas"][0]["writeQueueNums"] == 4
    # ... old ones (the Node.js client sends 121) the unquoted form ...
    reply = await client.invoke(
        addr, cmd(RequestCode.GET_ROUTEINFO_BY_TOPIC, version=121, topic="TopicA")
    )
    assert f'"brokerAddrs":{{0:"{MASTER}"}}'.encode() in reply.body
    # ... unless they insist on standard JSON.
    reply = await client.invoke(
        addr,
        cmd(
            RequestCode.GET_ROUTEINFO_BY_TOPIC,
            version=121,
            topic="TopicA",
            acceptStandardJsonOnly="true",
        ),
    )
    assert json.loads(reply.body)["brokerDatas"][0]["brokerAddrs"] == {"0": MASTER}

    reply = await client.invoke(addr, cmd(RequestCode.GET_BROKER_CLUSTER_INFO))
    assert f'"brokerAddrs":{{0:"{MASTER}"}}'.encode() in reply.body
    info = jsonfmt.decode(reply.body)
    assert info["clusterAddrTable"] == {CLUSTER: ["broker-a"]}

    reply = await client.invoke(addr, cmd(RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER))
    assert json.loads(reply.body) == {"topicList": ["TopicA", "broker-a"]}
    reply = await client.invoke(addr, cmd(RequestCode.GET_TOPICS_BY_CLUSTER, cluster=CLUSTER))
    assert json.loads(reply.body) == {"topicList": ["TopicA", "broker-a"]}

    reply = await client.invoke(
        addr,
        cmd(RequestCode.GET_BROKER_MEMBER_GROUP, clusterName=CLUSTER, brokerName="broker-a"),
    )
    assert jsonfmt.decode(reply.body)["brokerMemberGroup"]["brokerAddrs"] == {0: MASTER}


async def test_unknown_topic_and_unknown_code(namesrv, client):
    reply = await client.invoke(
        namesrv.address, cmd(RequestCode.GET_ROUTEINFO_BY_TOPIC, topic="Nope")
    )
    assert reply.code == ResponseCode.TOPIC_NOT_EXIST
    assert reply.remark == "No topic route info in name server for the topic: Nope"
    reply = await client.invoke(namesrv.address, cmd(12345))
    assert reply.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED
    reply = await client.invoke(namesrv.address, cmd(RequestCode.GET_ROUTEINFO_BY_TOPIC))
    assert reply.code == ResponseCode.SYSTEM_ERROR and "topic" in reply.remark


async def test_register_body_checks(namesrv, client):
    addr = namesrv.address
    # Legacy (unquoted) body, CRC sent as the full unsigned value.
    body = register_body(["T1", "broker-a"], legacy=True)
    reply = await client.invoke(addr, register_cmd(body=body, bodyCrc32=str(zlib.crc32(body))))
    assert reply.code == ResponseCode.SUCCESS, reply.remark
    # Java's signed int spelling of the same CRC is accepted too.
    signed = zlib.crc32(body) - (1 << 32) if zlib.crc32(body) >= 1 << 31 else zlib.crc32(body)
    reply = await client.invoke(addr, register_cmd(body=body, bodyCrc32=str(signed)))
    assert reply.code == ResponseCode.SUCCESS, reply.remark

    reply = await client.invoke(addr, register_cmd(body=body, bodyCrc32="12345"))
    assert reply.code == ResponseCode.SYSTEM_ERROR and "crc32" in reply.remark
    reply = await client.invoke(addr, register_cmd(compressed="true"))
    assert reply.code == ResponseCode.SYSTEM_ERROR and "compress" in reply.remark
    reply = await client.invoke(addr, register_cmd(body=b"{not json", crc=False))
    assert reply.code == ResponseCode.SYSTEM_ERROR and "malformed" in reply.remark
    reply = await client.invoke(addr, register_cmd(brokerName=""))
    assert reply.code == ResponseCode.SYSTEM_ERROR and "brokerName" in reply.remark
    assert namesrv.route_table.all_topics() == ["T1", "broker-a"]


async def test_query_data_version_heartbeat_and_expiry(namesrv, client, clock):
    addr = namesrv.address
    await client.invoke(addr, register_cmd())
    version = jsonfmt.encode({"counter": 1, "stateVersion": 0, "timestamp": 7})
    headers = {
        "brokerAddr": MASTER,
        "clusterName": CLUSTER,
        "brokerName": "broker-a",
        "brokerId": "0",
    }
    reply = await client.invoke(addr, cmd(RequestCode.QUERY_DATA_VERSION, body=version, **headers))
    assert reply.ext_fields["changed"] == "false"
    assert json.loads(reply.body) == {"counter": 1, "stateVersion": 0, "timestamp": 7}
    newer = jsonfmt.encode({"counter": 2, "stateVersion": 0, "timestamp": 7})
    reply = await client.invoke(addr, cmd(RequestCode.QUERY_DATA_VERSION, body=newer, **headers))
    assert reply.ext_fields["changed"] == "true"
    bad = b'{"counter":"many"}'
    reply = await client.invoke(addr, cmd(RequestCode.QUERY_DATA_VERSION, body=bad, **headers))
    assert reply.code == ResponseCode.SYSTEM_ERROR and "malformed" in reply.remark

    clock.now += 100_000
    reply = await client.invoke(
        addr,
        cmd(
            RequestCode.BROKER_HEARTBEAT,
            clusterName=CLUSTER,
            brokerAddr=MASTER,
            brokerName="broker-a",
        ),
    )
    assert reply.code == ResponseCode.SUCCESS
    clock.now += 110_000
    assert namesrv.scan_not_active_brokers() == 0
    clock.now += 10_001
    conn = client.connections()[addr]
    assert namesrv.scan_not_active_brokers() == 1
    # The expired broker's connection is closed by the NameServer.
    await asyncio.wait_for(conn.closed, 2)
    reply = await client.invoke(addr, cmd(RequestCode.GET_ROUTEINFO_BY_TOPIC, topic="TopicA"))
    assert reply.code == ResponseCode.TOPIC_NOT_EXIST


async def test_admin_codes(namesrv, client):
    addr = namesrv.address
    await client.invoke(addr, register_cmd())
    reply = await client.invoke(
        addr, cmd(RequestCode.WIPE_WRITE_PERM_OF_BROKER, brokerName="broker-a")
    )
    assert reply.ext_fields["wipeTopicCount"] == "2"
    reply = await client.invoke(addr, cmd(RequestCode.GET_ROUTEINFO_BY_TOPIC, topic="TopicA"))
    assert json.loads(reply.body)["queueDatas"][0]["perm"] == 4
    reply = await client.invoke(
        addr, cmd(RequestCode.ADD_WRITE_PERM_OF_BROKER, brokerName="broker-a")
    )
    assert reply.ext_fields["addTopicCount"] == "2"

    route = {
        "queueDatas": [
            {
                "brokerName": "broker-a",
                "perm": 6,
                "readQueueNums": 1,
                "topicSysFlag": 0,
                "writeQueueNums": 1,
            }
        ],
        "brokerDatas": [],
    }
    reply = await client.invoke(
        addr,
        cmd(RequestCode.REGISTER_TOPIC_IN_NAMESRV, body=jsonfmt.encode(route), topic="New"),
    )
    assert reply.code == ResponseCode.SUCCESS
    assert "New" in namesrv.route_table.all_topics()
    reply = await client.invoke(addr, cmd(RequestCode.DELETE_TOPIC_IN_NAMESRV, topic="New"))
    assert reply.code == ResponseCode.SUCCESS
    assert "New" not in namesrv.route_table.all_topics()

    reply = await client.invoke(
        addr,
        cmd(
            RequestCode.UNREGISTER_BROKER,
            brokerName="broker-a",
            brokerAddr=MASTER,
            clusterName=CLUSTER,
            brokerId="0",
        ),
    )
    assert reply.code == ResponseCode.SUCCESS
    assert namesrv.route_table.broker_addr_table == {}


async def test_namesrv_config_get_and_update(namesrv, client):
    addr = namesrv.address
    reply = await client.invoke(addr, cmd(RequestCode.GET_NAMESRV_CONFIG))
    assert b"orderMessageEnable=false\n" in reply.body
    reply = await client.invoke(
        addr, cmd(RequestCode.UPDATE_NAMESRV_CONFIG, body=b"orderMessageEnable=true\n")
    )
    assert reply.code == ResponseCode.SUCCESS
    assert namesrv.config.order_message_enable is True
    reply = await client.invoke(
        addr, cmd(RequestCode.UPDATE_NAMESRV_CONFIG, body=b"kvConfigPath=/etc/passwd\n")
    )
    assert reply.code == ResponseCode.NO_PERMISSION
    reply = await client.invoke(
        addr,
        cmd(RequestCode.UPDATE_NAMESRV_CONFIG, body=b"enableTopicList=false\nbogusKey=1\n"),
    )
    assert reply.code == ResponseCode.SYSTEM_ERROR and "bogusKey" in reply.remark
    assert namesrv.config.enable_topic_list is True  # all-or-nothing


async def test_kv_config_persists_across_restart(tmp_path, clock):
    config = make_config(tmp_path, order_message_enable=True)
    server = NameServer(config, host="127.0.0.1", port=0, clock=clock)
    await server.start()
    client = RemotingClient()
    try:
        addr = server.address
        ns = "ORDER_TOPIC_CONFIG"
        for key, value in (("TopicA", "broker-a:4"), ("Gone", "x")):
            reply = await client.invoke(
                addr, cmd(RequestCode.PUT_KV_CONFIG, namespace=ns, key=key, value=value)
            )
            assert reply.code == ResponseCode.SUCCESS
        reply = await client.invoke(
            addr, cmd(RequestCode.DELETE_KV_CONFIG, namespace=ns, key="Gone")
        )
        assert reply.code == ResponseCode.SUCCESS
        # Registering brokers get the order-topic table back.
        reply = await client.invoke(addr, register_cmd())
        assert json.loads(reply.body) == {"table": {"TopicA": "broker-a:4"}}
        reply = await client.invoke(addr, cmd(RequestCode.GET_ROUTEINFO_BY_TOPIC, topic="TopicA"))
        assert json.loads(reply.body)["orderTopicConf"] == "broker-a:4"
    finally:
        await client.close()
        await server.stop()

    path = tmp_path / "namesrv" / "kvConfig.json"
    assert json.loads(path.read_text()) == {"configTable": {ns: {"TopicA": "broker-a:4"}}}

    server = NameServer(config, host="127.0.0.1", port=0, clock=clock)
    await server.start()
    client = RemotingClient()
    try:
        addr = server.address
        reply = await client.invoke(
            addr, cmd(RequestCode.GET_KV_CONFIG, namespace=ns, key="TopicA")
        )
        assert reply.ext_fields["value"] == "broker-a:4"
        reply = await client.invoke(addr, cmd(RequestCode.GET_KV_CONFIG, namespace=ns, key="Gone"))
        assert reply.code == ResponseCode.QUERY_NOT_FOUND
        reply = await client.invoke(addr, cmd(RequestCode.GET_KVLIST_BY_NAMESPACE, namespace=ns))
        assert json.loads(reply.body) == {"table": {"TopicA": "broker-a:4"}}
        reply = await client.invoke(addr, cmd(RequestCode.GET_KVLIST_BY_NAMESPACE, namespace="x"))
        assert reply.code == ResponseCode.QUERY_NOT_FOUND
    finally:
        await client.close()
        await server.stop()


async def test_corrupt_kv_file_refuses_to_start(tmp_path):
    path = tmp_path / "namesrv" / "kvConfig.json"
    path.parent.mkdir()
    path.write_text("{garbage")
    server = NameServer(make_config(tmp_path), host="127.0.0.1", port=0)
    with pytest.raises(Exception, match="kvConfig"):
        await server.start()
    assert path.read_text() == "{garbage"


async def test_two_instances_in_one_process(tmp_path):
    a = NameServer(make_config(tmp_path / "a"), host="127.0.0.1", port=0)
    b = NameServer(make_config(tmp_path / "b"), host="127.0.0.1", port=0)
    await a.start()
    await b.start()
    client = RemotingClient()
    try:
        await client.invoke(a.address, register_cmd())
        reply = await client.invoke(
            b.address, cmd(RequestCode.GET_ROUTEINFO_BY_TOPIC, topic="TopicA")
        )
        assert reply.code == ResponseCode.TOPIC_NOT_EXIST
    finally:
        await client.close()
        await a.stop()
        await b.stop()


async def test_periodic_scan_closes_expired_broker_connection(tmp_path, clock):
    config = make_config(tmp_path, scan_not_active_broker_interval=20)
    server = NameServer(config, host="127.0.0.1", port=0, clock=clock)
    await server.start()
    client = RemotingClient()
    try:
        await client.invoke(server.address, register_cmd(heartbeatTimeoutMillis="1000"))
        conn = client.connections()[server.address]
        clock.now += 1001
        await asyncio.wait_for(conn.closed, 2)
        assert server.route_table.broker_addr_table == {}
    finally:
        await client.close()
        await server.stop()
