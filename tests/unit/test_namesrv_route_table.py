"""Transcript-style tests of the pure NameServer route table (PROTOCOL.md section 4)."""

from hypothesis import given
from hypothesis import strategies as st

from ledgermq.common import fastjson as jsonfmt
from ledgermq.common.route_data import PERM_READ, PERM_WRITE, DataVersion, QueueData, TopicConfig
from ledgermq.namesrv.route_table import BrokerRegistration, RouteTable, UnregisterRequest

MASTER = "10.0.0.1:10911"
SLAVE = "10.0.0.2:10911"
OTHER = "10.0.0.3:10911"


def reg(
    addr=MASTER,
    bid=0,
    name="broker-a",
    cluster="DefaultCluster",
    topics=("TopicA",),
    version=None,
    ha=None,
    timeout=None,
    acting=None,
    queues=4,
    perm=6,
    own_topic=True,
):
    # Real brokers always register a topic named after themselves too (so a one-topic
    # body is the special "single new topic" announcement).
    if own_topic:
        topics = (*topics, name)
    return BrokerRegistration(
        cluster=cluster,
        broker_addr=addr,
        broker_name=name,
        broker_id=bid,
        ha_server_addr=ha or addr.replace("10911", "10912"),
        timeout_ms=timeout,
        enable_acting_master=acting,
        topic_configs={
            t: TopicConfig(t, read_queue_nums=queues, write_queue_nums=queues, perm=perm)
            for t in topics
        },
        data_version=version or DataVersion(0, 1000, 1),
    )


def test_register_master_and_slave_then_route():
    table = RouteTable()
    master_channel, slave_channel = object(), object()

    result = table.register_broker(reg(topics=("TopicA", "TopicB")), 0, master_channel)
    assert result is not None
    assert (result.master_addr, result.ha_server_addr) == (None, None)

    result = table.register_broker(reg(SLAVE, 1, topics=("TopicA", "TopicB")), 10, slave_channel)
    # A slave learns where its master and the master's HA port are.
    assert result.master_addr == MASTER
    assert result.ha_server_addr == "10.0.0.1:10912"

    route = table.pickup_topic_route_data("TopicA")
    assert route is not None
    assert [q.to_json() for q in route.queue_datas] == [
        {
            "brokerName": "broker-a",
            "perm": 6,
            "readQueueNums": 4,
            "topicSysFlag": 0,
            "writeQueueNums": 4,
        }
    ]
    assert len(route.broker_datas) == 1
    assert route.broker_datas[0].broker_addrs == {0: MASTER, 1: SLAVE}
    assert route.broker_datas[0].cluster == "DefaultCluster"

    assert table.pickup_topic_route_data("Nope") is None
    assert table.all_topics() == ["TopicA", "TopicB", "broker-a"]
    assert table.topics_by_cluster("DefaultCluster") == ["TopicA", "TopicB", "broker-a"]
    assert table.topics_by_cluster("Other") == []
    info = table.cluster_info()
    assert info["clusterAddrTable"] == {"DefaultCluster": {"broker-a"}}
    assert jsonfmt.encode(info, standard=False) == (
        b'{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:"10.0.0.1:10911",'
        b'1:"10.0.0.2:10911"},"brokerName":"broker-a","cluster":"DefaultCluster",'
        b'"enableActingMaster":false}},"clusterAddrTable":{"DefaultCluster":["broker-a"]}}'
    )
    assert table.broker_member_group("DefaultCluster", "broker-a")["brokerAddrs"] == {
        0: MASTER,
        1: SLAVE,
    }


def test_route_is_a_copy():
    table = RouteTable()
    table.register_broker(reg(), 0)
    route = table.pickup_topic_route_data("TopicA")
    route.broker_datas[0].broker_addrs[5] = "x"
    route.queue_datas[0].perm = 0
    again = table.pickup_topic_route_data("TopicA")
    assert again.broker_datas[0].broker_addrs == {0: MASTER}
    assert again.queue_datas[0].perm == 6


def test_slave_queue_data_is_ignored():
    table = RouteTable()
    table.register_broker(reg(topics=("TopicA",)), 0)
    # The slave lists an extra topic; only the master's view counts.
    table.register_broker(reg(SLAVE, 1, topics=("TopicA", "SlaveOnly")), 0)
    assert table.all_topics() == ["TopicA", "broker-a"]


def test_slave_to_master_switch_moves_the_address():
    table = RouteTable()
    table.register_broker(reg(topics=("TopicA", "TopicB")), 0)
    table.register_broker(reg(SLAVE, 1, topics=("TopicA", "TopicB")), 0)
    table.unregister_broker("DefaultCluster", MASTER, "broker-a", 0)
    assert table.broker_addr_table["broker-a"].broker_addrs == {1: SLAVE}

    # The slave is promoted and re-registers under id 0 with a newer state version.
    table.register_broker(
        reg(SLAVE, 0, topics=("TopicA", "TopicB"), version=DataVersion(1, 2000, 5)), 5
    )
    assert table.broker_addr_table["broker-a"].broker_addrs == {0: SLAVE}
    route = table.pickup_topic_route_data("TopicA")
    assert route.broker_datas[0].broker_addrs == {0: SLAVE}


def test_stale_state_version_is_rejected():
    table = RouteTable()
    table.register_broker(reg(SLAVE, 0, version=DataVersion(3, 1000, 1)), 0)
    # The old master comes back claiming id 0 with an older stateVersion.
    result = table.register_broker(reg(MASTER, 0, version=DataVersion(2, 5000, 9)), 10)
    assert result is not None and result.master_addr is None
    assert table.broker_addr_table["broker-a"].broker_addrs == {0: SLAVE}
    assert all(k.addr != MASTER for k in table.broker_live_table)

    # A newer stateVersion wins.
    table.register_broker(reg(MASTER, 0, version=DataVersion(4, 5000, 9)), 20)
    assert table.broker_addr_table["broker-a"].broker_addrs == {0: MASTER}


def test_unchanged_data_version_does_not_overwrite_queue_data():
    table = RouteTable()
    v1 = DataVersion(0, 1000, 1)
    table.register_broker(reg(queues=4, version=v1), 0)
    table.wipe_write_perm_of_broker("broker-a")
    # Periodic re-registration with the same DataVersion: the stored QueueData (with the
    # wiped perm) stays as it is, even though the body says perm 6 and 8 queues.
    table.register_broker(reg(queues=8, version=DataVersion(0, 1000, 1)), 30_000)
    qd = table.topic_queue_table["TopicA"]["broker-a"]
    assert (qd.perm, qd.write_queue_nums) == (PERM_READ, 4)

    # A new DataVersion means the broker's topics changed: the body is applied.
    table.register_broker(reg(queues=8, version=DataVersion(0, 1000, 2)), 60_000)
    qd = table.topic_queue_table["TopicA"]["broker-a"]
    assert (qd.perm, qd.write_queue_nums) == (6, 8)


def test_unchanged_version_still_adds_missing_topic():
    table = RouteTable()
    table.register_broker(reg(topics=("TopicA", "TopicB")), 0)
    table.delete_topic("TopicB")
    table.register_broker(reg(topics=("TopicA", "TopicB")), 1)
    assert table.all_topics() == ["TopicA", "TopicB", "broker-a"]


def test_single_topic_registration_before_full_registration_is_refused():
    table = RouteTable()
    assert table.register_broker(reg(topics=("Only",), own_topic=False), 0) is None
    assert table.broker_addr_table == {} and table.cluster_addr_table == {}
    table.register_broker(reg(topics=("TopicA", "TopicB")), 0)
    single = reg(topics=("Only",), own_topic=False, version=DataVersion(0, 1, 9))
    assert table.register_broker(single, 1)
    assert "Only" in table.all_topics()


def test_expiry_by_scan_with_injected_clock():
    table = RouteTable()
    master, slave = object(), object()
    table.register_broker(reg(), 0, master)
    table.register_broker(reg(SLAVE, 1, timeout=10_000), 0, slave)

    assert table.scan_not_active(10_000) == []
    expired = table.scan_not_active(10_001)  # the slave's own 10 s timeout
    assert [(e.addr_info.addr, e.channel) for e in expired] == [(SLAVE, slave)]
    assert table.broker_addr_table["broker-a"].broker_addrs == {0: MASTER}

    # A heartbeat (QUERY_DATA_VERSION / BROKER_HEARTBEAT) keeps the master alive.
    assert table.update_broker_info_update_timestamp("DefaultCluster", MASTER, 100_000)
    assert table.scan_not_active(200_000) == []
    expired = table.scan_not_active(220_001)  # default 120 s after the last heartbeat
    assert [e.channel for e in expired] == [master]
    assert table.broker_addr_table == {}
    assert table.cluster_addr_table == {}
    assert table.topic_queue_table == {}
    assert table.pickup_topic_route_data("TopicA") is None


def test_unregister_cascades():
    table = RouteTable()
    table.register_broker(reg(topics=("Shared", "OnlyA")), 0)
    table.register_broker(reg(OTHER, 0, name="broker-b", topics=("Shared", "OnlyB")), 0)
    table.register_broker(reg(SLAVE, 1, topics=("Shared", "OnlyA")), 0)

    table.unregister_broker("DefaultCluster", MASTER, "broker-a", 0)
    # broker-a still has its slave: its BrokerData and queues stay.
    assert table.broker_addr_table["broker-a"].broker_addrs == {1: SLAVE}
    assert "OnlyA" in table.all_topics()

    table.unregister_brokers([UnregisterRequest("DefaultCluster", SLAVE, "broker-a", 1)])
    assert "broker-a" not in table.broker_addr_table
    assert table.cluster_addr_table == {"DefaultCluster": {"broker-b"}}
    assert table.all_topics() == ["OnlyB", "Shared", "broker-b"]
    assert list(table.topic_queue_table["Shared"]) == ["broker-b"]

    table.unregister_broker("DefaultCluster", OTHER, "broker-b", 0)
    assert table.topic_queue_table == {} and table.cluster_addr_table == {}


def test_channel_destroy_unregisters_only_that_broker():
    table = RouteTable()
    ch_a, ch_b = object(), object()
    table.register_broker(reg(topics=("TA", "X")), 0, ch_a)
    table.register_broker(reg(OTHER, 0, name="broker-b", topics=("TB", "X")), 0, ch_b)
    requests = table.on_channel_destroy(ch_a)
    assert requests == [UnregisterRequest("DefaultCluster", MASTER, "broker-a", 0)]
    assert table.all_topics() == ["TB", "X", "broker-b"]
    assert table.on_channel_destroy(object()) == []


def test_wipe_and_add_write_perm():
    table = RouteTable()
    table.register_broker(reg(topics=("T1", "T2")), 0)
    table.register_broker(reg(OTHER, 0, name="broker-b", topics=("T1", "T3")), 0)
    assert table.wipe_write_perm_of_broker("broker-a") == 3
    assert table.topic_queue_table["T1"]["broker-a"].perm == PERM_READ
    assert table.topic_queue_table["T1"]["broker-b"].perm == PERM_READ | PERM_WRITE
    assert table.wipe_write_perm_of_broker("nobody") == 0
    assert table.add_write_perm_of_broker("broker-a") == 3
    assert table.topic_queue_table["T2"]["broker-a"].perm == PERM_READ | PERM_WRITE


def test_delete_topic_per_cluster():
    table = RouteTable()
    table.register_broker(reg(topics=("T", "A")), 0)
    table.register_broker(reg(OTHER, 0, name="broker-b", cluster="C2", topics=("T", "B")), 0)
    table.delete_topic("T", "C2")
    assert list(table.topic_queue_table["T"]) == ["broker-a"]
    table.delete_topic("T", "DefaultCluster")
    assert "T" not in table.topic_queue_table
    table.delete_topic("A")
    assert table.all_topics() == ["B", "broker-a", "broker-b"]


def test_register_topic():
    table = RouteTable()
    table.register_broker(reg(), 0)
    qd = QueueData("broker-a", 2, 2, 6)
    assert table.register_topic("New", [qd])
    assert table.pickup_topic_route_data("New").queue_datas == [qd]
    assert not table.register_topic("Bad", [QueueData("ghost", 1, 1, 6)])
    assert "Bad" not in table.topic_queue_table
    assert not table.register_topic("Empty", [])


def test_data_version_query():
    table = RouteTable()
    assert table.is_broker_topic_config_changed("DefaultCluster", MASTER, DataVersion())
    table.register_broker(reg(version=DataVersion(0, 1000, 1)), 0)
    assert not table.is_broker_topic_config_changed(
        "DefaultCluster", MASTER, DataVersion(0, 1000, 1)
    )
    assert table.is_broker_topic_config_changed("DefaultCluster", MASTER, DataVersion(0, 1000, 2))
    assert table.query_broker_topic_config("DefaultCluster", MASTER) == DataVersion(0, 1000, 1)
    assert not table.update_broker_info_update_timestamp("DefaultCluster", OTHER, 5)


def test_acting_master_mode():
    table = RouteTable(support_acting_master=True)
    table.register_broker(reg(acting=True), 0)
    table.register_broker(reg(SLAVE, 1, acting=True), 0)
    table.unregister_broker("DefaultCluster", MASTER, "broker-a", 0)
    # The master is gone: the slave's queues lose write perm and the slave is shown as
    # the (read-only) master so clients keep consuming.
    assert table.topic_queue_table["TopicA"]["broker-a"].perm == PERM_READ
    route = table.pickup_topic_route_data("TopicA")
    assert route.broker_datas[0].broker_addrs == {0: SLAVE}
    # ... but the table itself still knows it as id 1.
    assert table.broker_addr_table["broker-a"].broker_addrs == {1: SLAVE}

    # The prime slave's re-registration keeps write perm off.
    table.register_broker(reg(SLAVE, 1, acting=True, version=DataVersion(0, 1, 2)), 1)
    assert table.topic_queue_table["TopicA"]["broker-a"].perm == PERM_READ


def test_route_json_forms():
    table = RouteTable()
    table.register_broker(reg(), 0)
    table.register_broker(reg(SLAVE, 1), 0)
    route = table.pickup_topic_route_data("TopicA")
    legacy = jsonfmt.encode(route, standard=False)
    standard = jsonfmt.encode(route, standard=True)
    assert b'"brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"}' in legacy
    assert b'"brokerAddrs":{"0":"10.0.0.1:10911","1":"10.0.0.2:10911"}' in standard
    assert standard == (
        b'{"brokerDatas":[{"brokerAddrs":{"0":"10.0.0.1:10911","1":"10.0.0.2:10911"},'
        b'"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}],'
        b'"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,'
        b'"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}'
    )


# -- random operation sequences keep the tables consistent ----------------------------

ADDRS = {  # address -> (cluster, brokerName): an address always serves one broker
    "a1:1": ("C1", "broker-a"),
    "a2:1": ("C1", "broker-a"),
    "a3:1": ("C1", "broker-a"),
    "b1:1": ("C1", "broker-b"),
    "b2:1": ("C1", "broker-b"),
    "c1:1": ("C2", "broker-c"),
}
TOPICS = ["T1", "T2", "T3", "T4"]

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("register"),
            st.sampled_from(sorted(ADDRS)),
            st.integers(0, 2),
            st.integers(0, 3),
            st.integers(0, 3),
            st.lists(st.sampled_from(TOPICS), max_size=4, unique=True),
            st.sampled_from([None, False, True]),
        ),
        st.tuples(st.just("unregister"), st.sampled_from(sorted(ADDRS)), st.integers(0, 2)),
        st.tuples(st.just("close"), st.sampled_from(sorted(ADDRS))),
        st.tuples(st.just("scan"), st.integers(0, 200_000)),
        st.tuples(st.just("wipe"), st.sampled_from(["broker-a", "broker-b", "broker-c"])),
        st.tuples(st.just("delete"), st.sampled_from(TOPICS), st.sampled_from([None, "C1"])),
    ),
    max_size=40,
)


def check_invariants(table: RouteTable) -> None:
    for topic, queues in table.topic_queue_table.items():
        assert queues, f"topic {topic} kept with no queues"
        for name in queues:
            assert name in table.broker_addr_table, f"{topic} names removed broker {name}"
        route = table.pickup_topic_route_data(topic)
        assert route is not None and route.queue_datas and route.broker_datas
    for name, bd in table.broker_addr_table.items():
        assert bd.broker_addrs, f"{name} kept with no addresses"
        addrs = list(bd.broker_addrs.values())
        assert len(addrs) == len(set(addrs)), f"{name} lists an address twice: {addrs}"
        assert name in table.cluster_addr_table.get(bd.cluster, set())
    for cluster, names in table.cluster_addr_table.items():
        assert names, f"cluster {cluster} kept with no brokers"
        assert names <= set(table.broker_addr_table)


@given(ops)
def test_random_operations_keep_tables_consistent(operations):
    table = RouteTable(support_acting_master=True)
    channels = {addr: object() for addr in ADDRS}
    now = 0
    for op in operations:
        kind = op[0]
        if kind == "register":
            _, addr, bid, state, counter, topics, acting = op
            cluster, name = ADDRS[addr]
            registration = BrokerRegistration(
                cluster=cluster,
                broker_addr=addr,
                broker_name=name,
                broker_id=bid,
                enable_acting_master=acting,
                topic_configs={t: TopicConfig(t) for t in topics},
                data_version=DataVersion(state, 0, counter),
            )
            table.register_broker(registration, now, channels[addr])
        elif kind == "unregister":
            cluster, name = ADDRS[op[1]]
            table.unregister_broker(cluster, op[1], name, op[2])
        elif kind == "close":
            table.on_channel_destroy(channels[op[1]])
        elif kind == "scan":
            now += op[1]
            table.scan_not_active(now)
        elif kind == "wipe":
            table.wipe_write_perm_of_broker(op[1])
        elif kind == "delete":
            table.delete_topic(op[1], op[2])
        check_invariants(table)
