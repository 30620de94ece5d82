"""Pure parts of the broker: subscriptions, heartbeats, locks, topic names, config."""

from __future__ import annotations

import json

import pytest

from ledgermq.broker.config import BrokerConfig
from ledgermq.broker.heartbeat import HeartbeatError, parse_heartbeat
from ledgermq.broker.mq_lock import RebalanceLockManager
from ledgermq.broker.subscription import build_subscription
from ledgermq.broker.topics import topic_error
from ledgermq.common.config import ConfigError
from ledgermq.common.message import MessageQueue, java_string_hash


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
