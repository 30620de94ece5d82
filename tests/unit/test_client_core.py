"""Unit tests of the client's pure parts: allocation, headers, route parsing, offsets."""

from __future__ import annotations

import json
import zlib

from hypothesis import given
from hypothesis import strategies as st

from ledgermq.client.allocate import allocate_averagely, allocate_by_circle
from ledgermq.client.message import Message, MessageExt, MessageQueue
from ledgermq.client.offset_store import LocalFileOffsetStore
from ledgermq.client.process_queue import ProcessQueue
from ledgermq.client.producer import (
    build_send_header,
    message_properties,
    parse_send_response,
    select_by_hash,
)
from ledgermq.client.push_consumer import restore_retry_topic
from ledgermq.client.route import parse_topic_route
from ledgermq.client.subscription import SubscriptionData
from ledgermq.common.message import decode_properties, java_string_hash
from ledgermq.remoting.codec import RemotingCommand


def mqs(n: int, brokers: tuple[str, ...] = ("b1",), topic: str = "T") -> list[MessageQueue]:
    return [MessageQueue(topic, b, i) for b in brokers for i in range(n)]


# --- allocation -----------------------------------------------------------------------------
def test_allocate_averagely_matches_java_examples():
    queues = mqs(8)
    cids = ["c1", "c2", "c3"]
    got = {c: [q.queue_id for q in allocate_averagely(c, queues, cids)] for c in cids}
    # 8 % 3 = 2: the first two clients get 3 queues, the last gets 2, contiguous.
    assert got == {"c1": [0, 1, 2], "c2": [3, 4, 5], "c3": [6, 7]}


def test_allocate_more_clients_than_queues():
    queues = mqs(2)
    cids = ["a", "b", "c"]
    assert [len(allocate_averagely(c, queues, cids)) for c in cids] == [1, 1, 0]


def test_allocate_sorts_inputs_and_ignores_unknown_client():
    queues = list(reversed(mqs(4, ("b2", "b1"))))
    assert allocate_averagely("x", queues, ["b", "a"]) == []
    a = allocate_averagely("a", queues, ["b", "a"])
    assert a == [MessageQueue("T", "b1", i) for i in range(4)]


@given(st.integers(0, 40), st.integers(1, 12))
def test_allocation_is_a_partition(n_queues, n_clients):
    queues = mqs(n_queues)
    cids = [f"10.0.0.1@{i}@x" for i in range(n_clients)]
    for strategy in (allocate_averagely, allocate_by_circle):
        parts = [strategy(c, queues, cids) for c in cids]
        flat = [q for p in parts for q in p]
        assert sorted(flat) == sorted(queues)
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1


# --- send header ---------------------------------------------------------------------------
def test_v2_header_uses_one_letter_keys():
    mq = MessageQueue("Orders", "broker-a", 3)
    props = message_properties(
        Message("Orders", b"x", tags="TagA", keys=["k1", "k2"], delay_level=3), "UNIQ1"
    )
    h = build_send_header(
        group="pg", mq=mq, sys_flag=1, born_timestamp=123, flag=7, properties=props
    )
    assert h["a"] == "pg"
    assert h["b"] == "Orders"
    assert h["c"] == "TBW102"
    assert h["d"] == "4"
    assert h["e"] == "3"
    assert h["f"] == "1"
    assert h["g"] == "123"
    assert h["h"] == "7"
    assert h["m"] == "false"
    assert h["n"] == "broker-a"
    assert set(h) <= set("abcdefghijklmn")
    decoded = decode_properties(h["i"])
    assert decoded["TAGS"] == "TagA"
    assert decoded["KEYS"] == "k1 k2"
    assert decoded["DELAY"] == "3"
    assert decoded["UNIQ_KEY"] == "UNIQ1"
    assert decoded["WAIT"] == "true"


_any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(
    group=_any_text,
    topic=_any_text,
    broker=_any_text,
    props=st.dictionaries(
        _any_text.filter(lambda k: k and "\x01" not in k and "\x02" not in k),
        _any_text.filter(lambda v: "\x02" not in v),
        max_size=4,
    ),
    numbers=st.tuples(*[st.integers(-(1 << 40), 1 << 40)] * 6),
    batch=st.booleans(),
    max_reconsume=st.none() | st.integers(-5, 99),
)
def test_the_send_header_json_is_what_the_encoder_writes(
    group, topic, broker, props, numbers, batch, max_reconsume
):
    # the header renders its own JSON (quotes, backslashes, control and non-ASCII
    # characters included): it must be byte-for-byte the general encoder's output
    queue_id, sys_flag, born, flag, queue_nums, reconsume = numbers
    h = build_send_header(
        group=group, mq=MessageQueue(topic, broker, queue_id), sys_flag=sys_flag,
        born_timestamp=born, flag=flag, properties=props, batch=batch,
        reconsume_times=reconsume, max_reconsume_times=max_reconsume,
        default_topic_queue_nums=queue_nums,
    )  # fmt: skip
    assert h._json == json.dumps(dict(h), separators=(",", ":"), ensure_ascii=False)
    assert json.loads(h._json) == dict(h)


def test_batch_header_sets_m_true():
    h = build_send_header(
        group="g",
        mq=MessageQueue("T", "b", 0),
        sys_flag=0,
        born_timestamp=1,
        flag=0,
        properties={},
        batch=True,
    )
    assert h["m"] == "true"


def test_parse_send_response_maps_status_and_ids():
    mq = MessageQueue("T", "b", 0)
    resp = RemotingCommand(code=0, ext_fields={"msgId": "AB", "queueId": "2", "queueOffset": "9"})
    r = parse_send_response(resp, mq, "U", "addr")
    assert r.status.name == "SEND_OK"
    assert (r.msg_id, r.offset_msg_id, r.queue_offset) == ("U", "AB", 9)
    assert r.message_queue == MessageQueue("T", "b", 2)
    r = parse_send_response(RemotingCommand(code=10), mq, "U", "addr")
    assert r.status.name == "FLUSH_DISK_TIMEOUT"


def test_select_by_hash_is_stable_and_java_compatible():
    queues = mqs(4)
    sel = select_by_hash()
    q = sel(queues, Message("T", b"x"), "order-42")
    assert q == queues[abs(java_string_hash("order-42")) % 4]
    assert select_by_hash("order-42")(queues, Message("T", b"y"), None) == q


# --- route JSON ------------------------------------------------------------------------------
ROUTE_STD = json.dumps(
    {
        "brokerDatas": [
            {
                "brokerAddrs": {"0": "127.0.0.1:10911", "1": "127.0.0.1:10921"},
                "brokerName": "broker-a",
                "cluster": "DefaultCluster",
            },
            {"brokerAddrs": {"1": "127.0.0.1:10931"}, "brokerName": "broker-b", "cluster": "c"},
        ],
        "queueDatas": [
            {"brokerName": "broker-a", "perm": 6, "readQueueNums": 4, "writeQueueNums": 2},
            {"brokerName": "broker-b", "perm": 6, "readQueueNums": 2, "writeQueueNums": 2},
        ],
        "filterServerTable": {},
    }
)

ROUTE_FASTJSON = (
    '{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:10911",1:"127.0.0.1:10921"},'
    '"brokerName":"broker-a","cluster":"DefaultCluster"},{"brokerAddrs":{1:"127.0.0.1:10931"},'
    '"brokerName":"broker-b","cluster":"c"}],"filterServerTable":{},"queueDatas":['
    '{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":2},'
    '{"brokerName":"broker-b","perm":6,"readQueueNums":2,"topicSysFlag":0,"writeQueueNums":2}]}'
)


def test_route_parses_both_json_forms_identically():
    a = parse_topic_route(ROUTE_STD.encode())
    b = parse_topic_route(ROUTE_FASTJSON.encode())
    assert a.broker_datas == b.broker_datas
    assert [(q.broker_name, q.read_queue_nums) for q in a.queue_datas] == [
        (q.broker_name, q.read_queue_nums) for q in b.queue_datas
    ]
    assert b.broker("broker-a").broker_addrs == {0: "127.0.0.1:10911", 1: "127.0.0.1:10921"}
    # broker-b has no master: not writable, but readable.
    assert b.publish_queues("T") == [MessageQueue("T", "broker-a", i) for i in range(2)]
    assert len(b.subscribe_queues("T")) == 6
    # The TBW102 fallback caps the queue count per broker.
    assert len(b.publish_queues("New", 1)) == 1


# --- process queue ---------------------------------------------------------------------------
def ext(offset: int, tags: str | None = None) -> MessageExt:
    props = {"TAGS": tags} if tags else {}
    return MessageExt(topic="T", body=b"x", queue_offset=offset, properties=props)


def test_process_queue_commits_lowest_unacked_offset():
    pq = ProcessQueue(10)
    assert pq.commit_offset() == 10
    msgs = [ext(o) for o in range(10, 15)]
    assert pq.put(msgs, next_offset=15) == msgs
    assert pq.commit_offset() == 10
    # Acks out of order never move the commit past an unacked message.
    assert pq.remove([msgs[1], msgs[3]]) == 10
    assert pq.remove([msgs[0]]) == 12
    assert pq.remove([msgs[4]]) == 12
    assert pq.remove([msgs[2]]) == 15
    assert pq.count == 0


def test_process_queue_ignores_duplicates_and_tracks_next_offset():
    pq = ProcessQueue(0)
    pq.put([ext(0), ext(1)])
    assert pq.put([ext(1), ext(2)]) and pq.count == 3
    assert pq.next_offset == 3


def test_process_queue_orderly_take_commit_give_back():
    pq = ProcessQueue(0)
    pq.put([ext(2), ext(0), ext(1)], next_offset=3)
    batch = pq.take(2)
    assert [m.queue_offset for m in batch] == [0, 1]
    assert pq.commit_offset() == 0
    pq.give_back(batch)
    assert [m.queue_offset for m in pq.take(1)] == [0]
    assert pq.commit_taken() == 1
    assert [m.queue_offset for m in pq.take(5)] == [1, 2]
    assert pq.commit_taken() == 3


async def test_process_queue_flow_control_blocks_when_full():
    pq = ProcessQueue(0, max_count=2)
    pq.put([ext(0), ext(1)])
    assert not pq._space.is_set()
    pq.remove([ext(0)])
    await pq.wait_for_space()


@given(st.permutations(list(range(20))))
def test_commit_offset_never_skips(order):
    pq = ProcessQueue(0)
    msgs = [ext(o) for o in range(20)]
    pq.put(msgs, next_offset=20)
    acked: set[int] = set()
    for o in order:
        c = pq.remove([msgs[o]])
        acked.add(o)
        assert all(i in acked for i in range(c))
        assert c == 20 or c not in acked


# --- subscription, retry topic, local offsets -----------------------------------------------
def test_subscription_tags():
    s = SubscriptionData.build("T", "TagA || TagB")
    assert s.tags_set == {"TagA", "TagB"}
    assert s.code_set == {java_string_hash("TagA"), java_string_hash("TagB")}
    assert s.matches("TagA") and not s.matches("TagC") and not s.matches(None)
    assert SubscriptionData.build("T", "*").matches(None)


def test_restore_retry_topic():
    m = MessageExt(topic="%RETRY%g", properties={"RETRY_TOPIC": "Orders"})
    restore_retry_topic(m, "g")
    assert m.topic == "Orders"


async def test_local_offset_store_round_trip(tmp_path):
    path = tmp_path / "cid" / "g" / "offsets.json"
    store = LocalFileOffsetStore(path)
    mq = MessageQueue("T", "b", 0)
    store.update(mq, 5)
    await store.persist()
    store.update(mq, 7)
    await store.persist()
    again = LocalFileOffsetStore(path)
    await again.load()
    assert again.get(mq) == 7
    assert await again.read(MessageQueue("T", "b", 9), from_store=True) == -1
    assert not path.with_suffix(".json.tmp").exists()


def test_compressed_body_threshold_logic():
    # Producer compresses with zlib; the consumer side inflates by sysflag (broker_api).
    from ledgermq.client.broker_api import decode_pulled
    from ledgermq.common.message import encode_record

    body = b"a" * 5000
    rec = encode_record(
        MessageExt(topic="T", body=zlib.compress(body), sys_flag=1, store_host=("1.2.3.4", 1))
    )
    (m,) = decode_pulled(rec, 0, 1)
    assert m.body == body
    assert m.properties["MAX_OFFSET"] == "1"
