"""POP's text codecs: receipt handles, *Info headers, batch-ack bodies, revive records."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgermq.broker.pop.order import OrderLocks
from ledgermq.broker.pop.records import (
    AckRecord,
    CheckPoint,
    ReviveRecordError,
    decode_revive_record,
    encode_record_body,
)
from ledgermq.common.pop_handle import (
    BatchAck,
    BatchAckBody,
    ExtraInfo,
    HandleError,
    bitset_from_base64,
    bitset_to_base64,
    format_msg_offset_info,
    format_order_count_info,
    format_start_offset_info,
    original_topic,
    parse_batch_ack_body,
    parse_msg_offset_info,
    parse_order_count_info,
    parse_start_offset_info,
    pop_retry_topic,
    real_topic,
    topic_type_of,
)

longs = st.integers(min_value=0, max_value=(1 << 63) - 1)
ints = st.integers(min_value=0, max_value=(1 << 31) - 1)
types = st.sampled_from(["0", "1", "2"])
bit_positions = st.integers(min_value=0, max_value=4096)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=20)


def test_handle_matches_rocketmq_layout():
    info = ExtraInfo(5, 1700000000000, 30000, 3, "1", "broker-a", 2, 7)
    assert info.format() == "5 1700000000000 30000 3 1 broker-a 2 7"
    assert ExtraInfo.parse("5 1700000000000 30000 3 1 broker-a 2") == ExtraInfo(
        5, 1700000000000, 30000, 3, "1", "broker-a", 2, None
    )
    assert ExtraInfo.parse("0 1 2 999 0 b 0 0").is_order


@given(longs, longs, longs, ints, types, names, ints, st.none() | longs)
def test_handle_round_trips(ck, pt, it, rq, tt, bn, q, qo):
    info = ExtraInfo(ck, pt, it, rq, tt, bn, q, qo)
    assert ExtraInfo.parse(info.format()) == info


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "garbage",
        "1 2 3 4 0 b",  # too few
        "1 2 3 4 0 b 1 2 3",  # too many
        "x 2 3 4 0 b 1 2",
        "1 2 3 4 9 b 1 2",  # unknown topic type
        "1 2 3 4 0  1 2",  # no broker name
        "1 2 3 99999999999 0 b 1 2",  # reviveQid beyond int32
        "1 +2 3 4 0 b 1 2",
        "1 2 3 4 0 b 1 ٣",
    ],
)
def test_malformed_handles_are_rejected_clearly(text):
    with pytest.raises(HandleError):
        ExtraInfo.parse(text)


@given(st.text(max_size=80))
def test_handle_parse_never_fails_with_anything_but_handle_error(text):
    try:
        ExtraInfo.parse(text)
    except HandleError:
        pass


def test_info_headers_match_rocketmq_layout():
    assert format_start_offset_info([("0", 1, 10), ("1", 0, 3)]) == "0 1 10;1 0 3"
    assert format_msg_offset_info([("0", 1, [10, 12])]) == "0 1 10,12"
    assert parse_order_count_info("0 qo1%10 2;0 3 1") == {("0", "qo1%10"): 2, ("0", "3"): 1}
    assert parse_start_offset_info("") == {}


@given(st.dictionaries(st.tuples(types, ints), longs, max_size=6))
def test_start_offset_info_round_trips(table):
    text = format_start_offset_info((t, q, o) for (t, q), o in table.items())
    assert parse_start_offset_info(text) == {(t, str(q)): o for (t, q), o in table.items()}


@given(st.dictionaries(st.tuples(types, ints), st.lists(longs, min_size=1, max_size=5), max_size=6))
def test_msg_offset_info_round_trips(table):
    text = format_msg_offset_info((t, q, o) for (t, q), o in table.items())
    assert parse_msg_offset_info(text) == {(t, str(q)): o for (t, q), o in table.items()}


@given(st.dictionaries(st.tuples(types, ints), ints, max_size=6))
def test_order_count_info_round_trips(table):
    text = format_order_count_info((t, q, c) for (t, q), c in table.items())
    assert parse_order_count_info(text) == {(t, str(q)): c for (t, q), c in table.items()}


@pytest.mark.parametrize("text", ["0 1", "0 1 2 3", "5 1 2", "0 1 x", "0 1 2;0 1 3", "0  1", ";"])
def test_malformed_info_headers_are_rejected(text):
    with pytest.raises(HandleError):
        parse_start_offset_info(text)


@given(st.text(max_size=60))
def test_info_parsers_only_raise_handle_error(text):
    for parse in (parse_start_offset_info, parse_msg_offset_info, parse_order_count_info):
        try:
            parse(text)
        except HandleError:
            pass


def test_bitset_is_javas_little_endian_byte_array():
    assert bitset_to_base64([0, 2]) == "BQ=="  # 0b101
    assert bitset_to_base64([9]) == "AAI="  # byte 1, bit 1
    assert bitset_from_base64("AAI=") == [9]
    with pytest.raises(HandleError):
        bitset_from_base64("not base64!")
    with pytest.raises(HandleError):
        bitset_to_base64([1 << 30])  # would be a 128 MiB bitset


@given(st.sets(st.integers(min_value=0, max_value=300), max_size=40))
def test_bitset_round_trips(bits):
    assert bitset_from_base64(bitset_to_base64(bits)) == sorted(bits)


@given(names, names, types, longs, ints, ints, longs, longs, st.sets(bit_positions, max_size=8))
def test_batch_ack_body_round_trips(group, topic, tt, so, q, rq, pt, it, bits):
    ack = BatchAck(group, topic, tt, so, q, rq, pt, it, tuple(sorted(bits)))
    body = BatchAckBody("broker-a", (ack,))
    assert parse_batch_ack_body(body.encode()) == body


def test_batch_ack_accepts_long_names_and_bit_lists():
    body = {
        "acks": [
            {
                "consumerGroup": "g",
                "topic": "t",
                "startOffset": 4,
                "queueId": 1,
                "reviveQueueId": 2,
                "popTime": 10,
                "invisibleTime": 20,
                "bitSet": [0, 3],
            }
        ]
    }
    parsed = parse_batch_ack_body(json.dumps(body).encode())
    assert parsed.broker_name is None
    assert parsed.acks[0].offsets() == [4, 7] and parsed.acks[0].topic_type == "0"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[]",
        b'{"acks": 1}',
        b'{"acks": [1]}',
        b'{"acks": [{"c": "g"}]}',
        b'{"acks": [{"c":"g","t":"t","so":"x","q":0,"rq":0,"pt":0,"it":0,"b":""}]}',
        b'{"acks": [{"c":"g","t":"t","so":0,"q":0,"rq":0,"pt":0,"it":0,"b":"!!"}]}',
        b'{"acks": [{"c":"g","t":"t","r":"7","so":0,"q":0,"rq":0,"pt":0,"it":0,"b":""}]}',
    ],
)
def test_malformed_batch_ack_bodies_are_rejected(body):
    with pytest.raises(HandleError):
        parse_batch_ack_body(body)


@given(st.binary(max_size=200))
def test_batch_ack_parser_only_raises_handle_error(data):
    try:
        parse_batch_ack_body(data)
    except HandleError:
        pass


def test_retry_topic_names():
    assert pop_retry_topic("T", "G") == "%RETRY%G_T"
    assert topic_type_of("%RETRY%G_T") == "1" and topic_type_of("T") == "0"
    assert topic_type_of("%RETRY%G+T") == "2"
    assert real_topic("T", "G", "1") == "%RETRY%G_T"
    assert real_topic("%RETRY%G_T", "G", "1") == "%RETRY%G_T"
    assert real_topic("T", "G", "0") == "T"
    assert original_topic("%RETRY%G_T", "G") == "T"


def test_revive_records_round_trip_and_reject_garbage():
    ck = CheckPoint("T", "G", 1, 10, 1000, 500, [0, 2], "b")
    again = decode_revive_record("ck", encode_record_body(ck))
    assert again == ck and again.offsets() == [10, 12] and again.revive_time == 1500
    ack = AckRecord("T", "G", 1, 10, 1000, [12], "b")
    assert decode_revive_record("ack", encode_record_body(ack)) == ack
    batch = AckRecord("T", "G", 1, 10, 1000, [10, 12], "b")
    assert batch.tag == "bAck"
    assert decode_revive_record("bAck", encode_record_body(batch)) == batch
    assert ack.key == ck.key
    for tag, body in [("ck", b"{}"), ("ack", b"[]"), ("zz", b"{}"), ("ck", b"\xff")]:
        with pytest.raises(ReviveRecordError):
            decode_revive_record(tag, body)


def test_order_locks_block_until_acked_or_expired():
    locks = OrderLocks()
    key = ("T", "G", 0)
    assert locks.popped(key, [3, 4], 5, pop_time=100, invisible_time=50, attempt_id="a") == 0
    assert locks.blocked(key, 120, None) and locks.blocked(key, 120, "b")
    assert not locks.blocked(key, 120, "a")  # the same request retried
    assert not locks.blocked(key, 151, None)  # expired
    assert locks.popped(key, [3, 4], 5, pop_time=151, invisible_time=50, attempt_id=None) == 1
    assert locks.ack(key, 4) == 3  # 3 still unacked: progress stays before it
    assert locks.ack(key, 3) == 5  # all acked: continue after the batch
    assert len(locks) == 0 and locks.ack(key, 3) is None


def test_an_oversized_batch_ack_bitset_is_refused_before_it_is_expanded():
    from ledgermq.common.pop_handle import MAX_BIT, bitset_from_base64, bitset_to_base64

    assert bitset_from_base64(bitset_to_base64([0, MAX_BIT])) == [0, MAX_BIT]
    huge = base64.b64encode(b"\xff" * ((MAX_BIT + 1) // 8 * 4)).decode()
    with pytest.raises(HandleError, match="longer than"):
        bitset_from_base64(huge)
