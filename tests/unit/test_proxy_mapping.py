"""Pure conversions of the proxy: statuses, routes, messages, ids, settings."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgermq.common import message as m
from ledgermq.common.route_data import BrokerData, QueueData, TopicRouteData
from ledgermq.proxy.config import ProxyConfig
from ledgermq.proxy.message_codec import (
    SendLimits,
    consistent_bucket,
    delay_level_for,
    queue_for_group,
    to_outgoing,
    to_v2_message,
)
from ledgermq.proxy.protocol import definition_pb2 as pb
from ledgermq.proxy.route import (
    ALL_SENDABLE_TYPES,
    Endpoint,
    accept_message_types,
    assignment_queues,
    permission_of,
    route_queues,
)
from ledgermq.proxy.settings import settings_reply
from ledgermq.proxy.status import Code, ProxyError, from_remoting
from ledgermq.proxy.txid import TransactionIdError, TransactionRef

LEVELS = ProxyConfig().delay_levels_ms()
LIMITS = SendLimits(max_body_size=1024, delay_levels_ms=LEVELS)
NOW = 1_700_000_000_000
HOUR = 3_600_000
CONFLICT = Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE


# --- statuses -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("remoting", "v2"),
    [
        (0, Code.OK),
        (10, Code.MASTER_PERSISTENCE_TIMEOUT),
        (12, Code.SLAVE_PERSISTENCE_TIMEOUT),
        (11, Code.HA_NOT_AVAILABLE),
        (17, Code.TOPIC_NOT_FOUND),
        (26, Code.CONSUMER_GROUP_NOT_FOUND),
        (16, Code.FORBIDDEN),
        (2, Code.TOO_MANY_REQUESTS),
        (9999, Code.INTERNAL_SERVER_ERROR),
    ],
)
def test_remoting_codes_map_to_v2(remoting, v2):
    assert from_remoting(remoting) == v2


# --- routes -------------------------------------------------------------------------------
def _route(read=4, write=4, perm=6, slave=True):
    addrs = {0: "10.0.0.1:10911"}
    if slave:
        addrs[1] = "10.0.0.2:10911"
    return TopicRouteData(
        queue_datas=[
            QueueData("broker-b", read, write, perm),
            QueueData("broker-a", read, write, perm),
            QueueData("broker-orphan", read, write, perm),
        ],
        broker_datas=[
            BrokerData("C", "broker-a", dict(addrs)),
            BrokerData("C", "broker-b", dict(addrs)),
            BrokerData("C", "broker-orphan", {1: "10.0.0.9:10911"}),
        ],
    )


@pytest.mark.parametrize(
    ("perm", "expected"),
    [(6, pb.READ_WRITE), (4, pb.READ), (2, pb.WRITE), (0, pb.NONE), (7, pb.READ_WRITE)],
)
def test_permission_mapping(perm, expected):
    assert permission_of(perm) == expected


def test_route_points_every_master_queue_at_the_proxy():
    topic = pb.Resource(name="T")
    queues = route_queues(topic, _route(), ALL_SENDABLE_TYPES, Endpoint("192.168.1.5", 8081))
    assert [(q.broker.name, q.id) for q in queues] == [
        ("broker-a", 0), ("broker-a", 1), ("broker-a", 2), ("broker-a", 3),
        ("broker-b", 0), ("broker-b", 1), ("broker-b", 2), ("broker-b", 3),
    ]  # fmt: skip
    q = queues[0]
    assert q.permission == pb.READ_WRITE and q.broker.id == 0 and q.topic.name == "T"
    assert q.broker.endpoints.scheme == pb.IPv4
    assert [(a.host, a.port) for a in q.broker.endpoints.addresses] == [("192.168.1.5", 8081)]
    assert list(q.accept_message_types) == [pb.NORMAL, pb.FIFO, pb.DELAY, pb.TRANSACTION]


def test_route_queue_permissions_follow_read_and_write_counts():
    queues = route_queues(pb.Resource(name="T"), _route(read=2, write=4), [pb.NORMAL],
                          Endpoint("h.example", 1))  # fmt: skip
    mine = [q for q in queues if q.broker.name == "broker-a"]
    assert [q.permission for q in mine] == [pb.READ_WRITE, pb.READ_WRITE, pb.WRITE, pb.WRITE]
    assert mine[0].broker.endpoints.scheme == pb.DOMAIN_NAME
    read_only = route_queues(pb.Resource(name="T"), _route(perm=4), [pb.NORMAL], Endpoint("h", 1))
    assert {q.permission for q in read_only} == {pb.READ}
    assert read_only[0].id == 0


@pytest.mark.parametrize(
    ("attribute", "types"),
    [
        (None, (pb.NORMAL, pb.FIFO, pb.DELAY, pb.TRANSACTION)),
        ("NORMAL", (pb.NORMAL,)),
        ("fifo", (pb.FIFO,)),
        ("DELAY", (pb.DELAY,)),
        ("TRANSACTION", (pb.TRANSACTION,)),
        ("MIXED", (pb.NORMAL, pb.FIFO, pb.DELAY, pb.TRANSACTION)),
    ],
)
def test_accept_message_types_from_topic_attribute(attribute, types):
    attrs = {} if attribute is None else {"message.type": attribute}
    assert accept_message_types(attrs) == types


def test_assignment_is_one_pop_queue_per_readable_master():
    out = assignment_queues(pb.Resource(name="T"), _route(), Endpoint("1.2.3.4", 8081), fifo=False)
    assert [(a.message_queue.broker.name, a.message_queue.id) for a in out] == [
        ("broker-a", -1),
        ("broker-b", -1),
    ]
    fifo = assignment_queues(pb.Resource(name="T"), _route(), Endpoint("1.2.3.4", 8081), fifo=True)
    assert len(fifo) == 8


# --- messages -----------------------------------------------------------------------------
def _msg(topic="T", body=b"hello", **sp) -> pb.Message:
    message = pb.Message(topic=pb.Resource(name=topic), body=body)
    message.system_properties.message_id = sp.pop("message_id", "01ABC")
    message.system_properties.body_encoding = pb.IDENTITY
    for key, value in sp.items():
        if key == "delivery_ms":
            message.system_properties.delivery_timestamp.FromMilliseconds(value)
        elif key == "keys":
            message.system_properties.keys.extend(value)
        else:
            setattr(message.system_properties, key, value)
    return message


def test_normal_message_properties():
    msg = _msg(tag="TagA", keys=["k1", "k2"], message_type=pb.NORMAL)
    msg.user_properties["color"] = "red"
    out = to_outgoing(msg, LIMITS, NOW)
    assert out.properties == {
        "color": "red", "TAGS": "TagA", "KEYS": "k1 k2", "UNIQ_KEY": "01ABC", "WAIT": "true"
    }  # fmt: skip
    assert (out.sys_flag, out.message_type, out.message_group, out.delay_level) == (0, 1, None, 0)


def test_fifo_message_sets_the_sharding_key():
    out = to_outgoing(_msg(message_type=pb.FIFO, message_group="order-1"), LIMITS, NOW)
    assert out.properties[m.PROPERTY_SHARDING_KEY] == "order-1"
    assert out.message_group == "order-1"


def test_transaction_message_is_prepared_with_the_topic_as_group():
    msg = _msg(message_type=pb.TRANSACTION)
    msg.system_properties.orphaned_transaction_recovery_duration.seconds = 30
    out = to_outgoing(msg, LIMITS, NOW)
    assert out.sys_flag & m.SYSFLAG_TX_PREPARED
    assert out.properties["TRAN_MSG"] == "true"
    assert out.properties["PGROUP"] == "T"
    assert out.properties["CHECK_IMMUNITY_TIME_IN_SECONDS"] == "30"


def test_delay_message_rounds_up_to_a_level():
    out = to_outgoing(_msg(message_type=pb.DELAY, delivery_ms=NOW + 3_000), LIMITS, NOW)
    assert (out.delay_level, out.properties["DELAY"]) == (2, "2")  # 5 s, never early
    due = to_outgoing(_msg(message_type=pb.DELAY, delivery_ms=NOW - 10), LIMITS, NOW)
    assert due.delay_level == 0 and "DELAY" not in due.properties


def test_gzip_body_is_stored_plain():
    out = to_outgoing(_msg(body=gzip.compress(b"zipped"), body_encoding=pb.GZIP), LIMITS, NOW)
    assert out.body == b"zipped" and out.sys_flag == 0


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"topic": "bad topic"}, Code.ILLEGAL_TOPIC),
        ({"topic": "TBW102"}, Code.ILLEGAL_TOPIC),
        ({"topic": "x" * 128}, Code.ILLEGAL_TOPIC),
        ({"body": b"x" * 1025}, Code.MESSAGE_BODY_TOO_LARGE),
        ({"body": b""}, Code.MESSAGE_BODY_EMPTY),
        ({"message_id": ""}, Code.ILLEGAL_MESSAGE_ID),
        ({"tag": "a|b"}, Code.ILLEGAL_MESSAGE_TAG),
        ({"keys": [" "]}, Code.ILLEGAL_MESSAGE_KEY),
        ({"message_type": pb.FIFO}, Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE),
        ({"message_type": pb.NORMAL, "message_group": "g"}, CONFLICT),
        ({"message_type": pb.FIFO, "message_group": "g" * 65}, Code.ILLEGAL_MESSAGE_GROUP),
        ({"message_type": pb.DELAY, "delivery_ms": NOW + 3 * HOUR}, Code.ILLEGAL_DELIVERY_TIME),
        ({"message_type": pb.DELAY, "delivery_ms": NOW + 48 * HOUR}, Code.ILLEGAL_DELIVERY_TIME),
        ({"body": b"not gzip", "body_encoding": pb.GZIP}, Code.MESSAGE_CORRUPTED),
        ({"message_type": pb.LITE}, Code.UNSUPPORTED),
    ],
)  # fmt: skip
def test_invalid_messages_get_the_right_code(kwargs, code):
    with pytest.raises(ProxyError) as err:
        to_outgoing(_msg(**kwargs), LIMITS, NOW)
    assert err.value.code == code
    assert err.value.message


def test_reserved_user_property_is_rejected():
    msg = _msg()
    msg.user_properties["UNIQ_KEY"] = "mine"
    with pytest.raises(ProxyError) as err:
        to_outgoing(msg, LIMITS, NOW)
    assert err.value.code == Code.ILLEGAL_MESSAGE_PROPERTY_KEY


@given(
    user=st.dictionaries(
        st.text(
            st.characters(min_codepoint=0x20, max_codepoint=0x2FF), min_size=1, max_size=8
        ).filter(lambda k: k not in m.__dict__.values()),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=8),
        max_size=5,
    ),
    tag=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8
    ).filter(lambda t: "|" not in t),
)
def test_properties_survive_the_remoting_encoding(user, tag):
    msg = _msg(tag=tag)
    msg.user_properties.update(user)
    out = to_outgoing(msg, LIMITS, NOW)
    decoded = m.decode_properties(m.encode_properties(out.properties))
    assert decoded == out.properties
    assert decoded["TAGS"] == tag and all(decoded[k] == v for k, v in user.items())


@given(delay=st.integers(min_value=1, max_value=max(LEVELS)))
def test_delay_level_is_the_first_not_earlier(delay):
    level = delay_level_for(delay, LEVELS)
    assert LEVELS[level - 1] >= delay
    assert level == 1 or LEVELS[level - 2] < delay


@given(key=st.integers(min_value=-(2**31), max_value=2**31 - 1), n=st.integers(1, 64))
def test_consistent_hash_is_in_range_and_moves_little(key, n):
    bucket = consistent_bucket(key, n)
    assert 0 <= bucket < n
    # Growing by one bucket either keeps the key or moves it to the new bucket.
    assert consistent_bucket(key, n + 1) in (bucket, n)


def test_same_group_same_queue():
    assert queue_for_group("order-42", 8) == queue_for_group("order-42", 8)
    assert len({queue_for_group(f"g{i}", 8) for i in range(200)}) == 8


# --- transaction ids ----------------------------------------------------------------------
@given(
    name=st.text(min_size=1, max_size=40),
    commit=st.integers(0, 2**63 - 1),
    queue=st.integers(0, 2**63 - 1),
    txid=st.text(max_size=40),
)
def test_transaction_id_round_trips(name, commit, queue, txid):
    ref = TransactionRef(name, commit, queue, txid)
    assert TransactionRef.decode(ref.encode()) == ref


@pytest.mark.parametrize("text", ["", "abc", "LMQTX1.!!", "LMQTX1.bnVsbA"])
def test_foreign_transaction_ids_are_rejected(text):
    with pytest.raises(TransactionIdError):
        TransactionRef.decode(text)


# --- settings and outgoing messages ---------------------------------------------------------
def test_producer_settings_reply_has_the_required_fields():
    client = pb.Settings(client_type=pb.PRODUCER)
    client.publishing.topics.add().name = "T"
    client.publishing.max_body_size = 128 * 1024 * 1024
    reply = settings_reply(client, ProxyConfig())
    assert reply.client_type == pb.PRODUCER and reply.publishing.topics[0].name == "T"
    assert reply.publishing.max_body_size == 4 * 1024 * 1024
    assert reply.publishing.validate_message_type
    assert reply.backoff_policy.max_attempts == 3
    assert reply.backoff_policy.WhichOneof("strategy") == "exponential_backoff"
    assert reply.HasField("metric") and not reply.metric.on


def test_consumer_settings_reply_has_the_required_fields():
    client = pb.Settings(client_type=pb.PUSH_CONSUMER)
    client.subscription.group.name = "G"
    reply = settings_reply(client, ProxyConfig())
    sub = reply.subscription
    assert sub.group.name == "G" and sub.receive_batch_size == 32 and sub.fifo is False
    assert sub.HasField("fifo") and sub.long_polling_timeout.seconds == 20
    assert reply.backoff_policy.customized_backoff.next[0].seconds == 10


def test_stored_message_as_v2_message():
    stored = m.MessageExt(
        topic="T",
        body=b"payload",
        properties={
            "UNIQ_KEY": "01XY",
            "TAGS": "a",
            "KEYS": "k1 k2",
            "__SHARDINGKEY": "g",
            "u": "1",
        },
        queue_id=3,
        queue_offset=7,
        born_timestamp=1_000,
        store_timestamp=2_500,
        store_host=("10.0.0.1", 10911),
        reconsume_times=1,
    )
    msg = to_v2_message(stored)
    sp = msg.system_properties
    assert (sp.message_id, sp.tag, list(sp.keys), sp.message_group) == (
        "01XY",
        "a",
        ["k1", "k2"],
        "g",
    )
    assert sp.message_type == pb.FIFO and sp.body_encoding == pb.IDENTITY
    assert sp.body_digest.type == pb.MD5
    assert sp.body_digest.checksum == hashlib.md5(b"payload").hexdigest().upper()
    assert (sp.queue_id, sp.queue_offset, sp.delivery_attempt) == (3, 7, 2)
    assert sp.store_timestamp.ToMilliseconds() == 2_500
    assert dict(msg.user_properties) == {"u": "1"}
