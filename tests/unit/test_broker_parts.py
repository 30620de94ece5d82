"""Pure parts of the broker: subscriptions, heartbeats, locks, topic names, config."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgermq.broker.config import BrokerConfig
from ledgermq.broker.heartbeat import HeartbeatError, parse_heartbeat
from ledgermq.broker.mq_lock import RebalanceLockManager
from ledgermq.broker.processors.send import SendProcessor
from ledgermq.broker.send_header import _decode_general, decode_send_header
from ledgermq.broker.store_port import PutOutcome
from ledgermq.broker.subscription import build_subscription
from ledgermq.broker.topics import topic_error
from ledgermq.common.config import ConfigError
from ledgermq.common.message import MessageQueue, java_string_hash
from ledgermq.remoting.codec import FrameDecoder, RemotingCommand, encode_command
from ledgermq.remoting.codes import RequestCode
from ledgermq.remoting.errors import RemotingError


def test_subscription_parsing_and_matching():
    sub = build_subscription("T", " a || b ||")
    assert sub.tags_set == {"a", "b"}
    assert sub.code_set == {java_string_hash("a"), java_string_hash("b")}
    assert sub.matches_code(java_string_hash("a")) and not sub.matches_code(0)
    assert sub.matches_tags("b") and not sub.matches_tags(None)
    for expr in ("*", "", None, " || "):
        assert build_subscription("T", expr).match_all


def test_heartbeat_both_dialects():
    java = parse_heartbeat(
        json.dumps(
            {
                "clientID": "j",
                "producerDataSet": [{"groupName": "P"}],
                "consumerDataSet": [
                    {
                        "groupName": "G",
                        "consumeType": "CONSUME_ACTIVELY",
                        "messageModel": "BROADCASTING",
                        "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET",
                        "subscriptionDataSet": [
                            {"topic": "T", "subString": "x || y", "subVersion": 5}
                        ],
                    }
                ],
            }
        ).encode()
    )
    assert java.producer_groups == ["P"]
    c = java.consumers[0]
    assert (c.consume_type, c.message_model, c.consume_from_where) == (
        "CONSUME_ACTIVELY",
        "BROADCASTING",
        "CONSUME_FROM_FIRST_OFFSET",
    )
    assert c.subscriptions[0].tags_set == {"x", "y"}
    cpp = parse_heartbeat(
        json.dumps(
            {
                "clientID": "c",
                "consumerDataSet": [
                    {
                        "groupName": "G",
                        "consumeType": 1,
                        "messageModel": 1,
                        "consumeFromWhere": 4,
                        "subscriptionDataSet": [{"topic": "T", "subVersion": "77"}],
                    }
                ],
            }
        ).encode()
    )
    c = cpp.consumers[0]
    assert (c.consume_type, c.message_model, c.consume_from_where) == (
        "CONSUME_PASSIVELY",
        "CLUSTERING",
        "CONSUME_FROM_FIRST_OFFSET",
    )
    assert c.subscriptions[0].sub_version == 77 and c.subscriptions[0].match_all
    with pytest.raises(HeartbeatError):
        parse_heartbeat(b"{}")
    with pytest.raises(HeartbeatError):
        parse_heartbeat(b"not json")


def test_locks_expire_and_belong_to_one_client():
    now = [0]
    locks = RebalanceLockManager(lambda: now[0], max_live_ms=60_000)
    mq = MessageQueue("T", "b", 0)
    assert locks.try_lock_batch("G", [mq], "c1") == [mq]
    assert locks.try_lock_batch("G", [mq], "c2") == []
    assert locks.try_lock_batch("OtherGroup", [mq], "c2") == [mq]
    now[0] = 60_001
    assert locks.try_lock_batch("G", [mq], "c2") == [mq]
    locks.unlock_batch("G", [mq], "c1")  # not the holder: no effect
    assert locks.is_locked("G", mq, "c2")


def test_topic_names():
    assert topic_error("Good_topic-1%RETRY%|x") is None
    assert topic_error("") and topic_error("a b") and topic_error("x" * 128)
    assert topic_error("x" * 127) is None


def test_config_keys_and_errors():
    cfg = BrokerConfig.from_properties(
        {
            "brokerClusterName": "C",
            "brokerName": "b",
            "brokerIP1": "10.0.0.1",
            "namesrvAddr": "a:1; b:2",
            "flushDiskType": "SYNC_FLUSH",
            "messageDelayLevel": "1s 1m 1h 1d",
        }
    )
    assert cfg.namesrv_addrs() == ["a:1", "b:2"]
    assert cfg.delay_levels_ms() == [1000, 60_000, 3_600_000, 86_400_000]
    with pytest.raises(ConfigError, match="flushDiskType"):
        BrokerConfig.from_properties({"brokerName": "b", "flushDiskType": "SOMETIMES"})
    with pytest.raises(ConfigError, match="brokerId"):
        BrokerConfig.from_properties({"brokerName": "b", "brokerRole": "SLAVE"})


def test_unknown_keys_are_warned_by_name(caplog):
    BrokerConfig.from_properties({"brokerName": "b", "brokerNmae": "typo"})
    assert "brokerNmae" in caplog.text


@given(
    region=st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    trace_on=st.booleans(),
    msg_ids=st.lists(st.text("0123456789ABCDEF", min_size=1, max_size=32), min_size=1, max_size=3),
    queue_id=st.integers(0, 1 << 20),
    queue_offset=st.integers(-1, 1 << 62),
    status=st.sampled_from(["PUT_OK", "FLUSH_DISK_TIMEOUT", "FLUSH_SLAVE_TIMEOUT"]),
)
def test_a_send_reply_renders_the_json_the_encoder_would(
    region, trace_on, msg_ids, queue_id, queue_offset, status
):
    # the send reply's fields render their own JSON; the client must read the same fields
    broker = SimpleNamespace(config=SimpleNamespace(region_id=region, trace_on=trace_on))
    outcome = PutOutcome(status, queue_offset, 0, msg_ids, "", None)
    request = RemotingCommand(code=RequestCode.SEND_MESSAGE_V2, opaque=7)
    shared = SendProcessor(broker)._response(request, outcome, queue_id)
    plain = SendProcessor(broker)._response(request, outcome, queue_id, shared=False)
    assert type(plain.ext_fields) is dict and dict(shared.ext_fields) == plain.ext_fields
    assert shared.ext_fields._json == json.dumps(
        plain.ext_fields, separators=(",", ":"), ensure_ascii=False
    )
    (decoded,) = FrameDecoder().feed(encode_command(shared))
    assert decoded.ext_fields == plain.ext_fields and decoded.opaque == 7


_header_values = st.one_of(
    st.none(),
    st.sampled_from(["", "null", "true", "false", "TRUE", "x", " 7", "-1"]),
    st.integers(-(1 << 40), 1 << 40).map(str),
)


@given(
    fields=st.fixed_dictionaries({k: _header_values for k in "abcdefghijklmn"}),
    code=st.sampled_from([RequestCode.SEND_MESSAGE_V2, RequestCode.SEND_BATCH_MESSAGE]),
)
def test_the_v2_send_header_fast_path_agrees_with_the_general_decoder(fields, code):
    # whatever a client sends, the fast path gives the general decoder's header or error
    ext = {k: v for k, v in fields.items() if v is not None}

    def outcome(decode):
        try:
            return decode(code, ext)
        except RemotingError as exc:
            return (exc.code, exc.remark)

    assert outcome(decode_send_header) == outcome(_decode_general)


def test_a_non_numeric_max_reconsume_times_is_a_clear_header_error():
    # it used to escape as a bare ValueError (a generic SYSTEM_ERROR "ValueError: ...")
    ext = {"a": "g", "b": "T", "d": "4", "e": "0", "f": "0", "g": "1", "h": "0",
           "j": "0", "l": "sixteen", "m": "false"}  # fmt: skip
    with pytest.raises(RemotingError, match="'l' is not a number"):
        decode_send_header(RequestCode.SEND_MESSAGE_V2, ext)
