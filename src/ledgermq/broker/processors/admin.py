"""Broker administration: runtime info (28), broker config (25/26), topic stats (202),
consume stats (208), subscription groups (200/201/207), reset offset (222)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from ledgermq.broker.subscription_group import SubscriptionGroupConfig
from ledgermq.common import fastjson
from ledgermq.common.config import (
    ConfigError,
    apply_properties,
    format_properties,
    parse_properties,
    to_properties,
)
from ledgermq.common.message import MessageQueue
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.connection import RemotingConnection
from ledgermq.remoting.errors import RemotingError
from ledgermq.remoting.headers import get_bool, get_int, get_str, req_int, req_str

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker

log = logging.getLogger(__name__)
VERSION_DESC = "V5_3_3"
VERSION_ORDINAL = 479

# Keys that decide where data lives or who we are: changing them at runtime would
# corrupt the store or the cluster view, so RocketMQ refuses them too.
_FROZEN_KEYS = frozenset(
    {
        "storePathRootDir",
        "storePathCommitLog",
        "brokerName",
        "brokerClusterName",
        "brokerId",
        "listenPort",
        "brokerRole",
        "enableDLegerCommitLog",
    }
)


def _runtime_text(ms: int) -> str:
    s = ms // 1000
    return (
        f"[ {s // 86400} days, {s // 3600 % 24} hours, {s // 60 % 60} minutes, {s % 60} seconds ]"
    )


class AdminProcessor:
    def __init__(self, broker: Broker) -> None:
        self._b = broker

    def runtime_info(self, conn: RemotingConnection, cmd: RemotingCommand):
        b = self._b
        s = b.stats
        now = b.clock_ms()
        table = {
            "brokerVersionDesc": VERSION_DESC,
            "brokerVersion": str(VERSION_ORDINAL),
            "msgPutTotalYesterdayMorning": str(s.put_total_yesterday_morning),
            "msgPutTotalTodayMorning": str(s.put_total_today_morning),
            "msgPutTotalTodayNow": str(s.put_total),
            "msgGetTotalYesterdayMorning": str(s.get_total_yesterday_morning),
            "msgGetTotalTodayMorning": str(s.get_total_today_morning),
            "msgGetTotalTodayNow": str(s.get_total),
            "commitLogMaxOffset": str(b.store.commit_log_max_offset()),
            "commitLogMinOffset": str(b.store.commit_log_min_offset()),
            "bootTimestamp": str(s.boot_timestamp_ms),
            "runtime": _runtime_text(now - s.boot_timestamp_ms),
            "brokerActive": "true",
            "putTps": "0.0 0.0 0.0",
            "getFoundTps": "0.0 0.0 0.0",
            "sendThreadPoolQueueSize": "0",
            "sendThreadPoolQueueCapacity": "10000",
            "pullThreadPoolQueueSize": "0",
            "pullThreadPoolQueueCapacity": "100000",
            "dispatchBehindBytes": "0",
            "pageCacheLockTimeMills": "0",
            "remainHowManyDataToFlush": "0 B",
            "startAcceptSendRequestTimeStamp": "0",
        }
        member = b.dledger_member
        if member is not None and member.node is not None:
            # a DLedger group member: its view of the group (see `admin dledgerStatus`)
            meta = member.metadata()
            table.update(
                {
                    "dLedgerGroup": meta["group"],
                    "dLedgerSelfId": meta["selfId"],
                    "dLedgerRole": meta["role"],
                    "dLedgerTerm": str(meta["term"]),
                    "dLedgerLeaderId": meta["leaderId"] or "",
                    "dLedgerCommitIndex": str(meta["commitIndex"]),
                    "dLedgerAppliedIndex": str(meta["appliedIndex"]),
                    "dLedgerLastIndex": str(meta["lastIndex"]),
                    "dLedgerPeers": json.dumps(meta["peers"]),
                    "dLedgerMatchIndex": json.dumps(meta["matchIndex"]),
                    "dLedgerFlushMode": meta["flushMode"],
                    "brokerId": str(b.broker_id),
                    "brokerWritable": "false" if b.is_slave else "true",
                }
            )
        body = json.dumps({"table": table}).encode()
        return cmd.make_response(ResponseCode.SUCCESS, body=body)

    def get_broker_config(self, conn: RemotingConnection, cmd: RemotingCommand):
        text = format_properties(dict(sorted(to_properties(self._b.config).items())))
        version = json.dumps(self._b.config_version.to_json())
        return cmd.make_response(ResponseCode.SUCCESS, None, {"version": version}, text.encode())

    def update_broker_config(self, conn: RemotingConnection, cmd: RemotingCommand):
        try:
            props = parse_properties(cmd.body.decode())
        except UnicodeDecodeError:
            raise RemotingError(ResponseCode.SYSTEM_ERROR, "config body is not UTF-8") from None
        frozen = sorted(set(props) & _FROZEN_KEYS)
        if frozen:
            raise RemotingError(
                ResponseCode.NO_PERMISSION, f"cannot change {', '.join(frozen)} at runtime"
            )
        trial = self._b.config.copy()
        try:
            unknown = apply_properties(trial, props)
            trial.validate()
        except ConfigError as exc:
            raise RemotingError(ResponseCode.SYSTEM_ERROR, str(exc)) from None
        if unknown:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"unknown config keys: {', '.join(sorted(unknown))}"
            )
        apply_properties(self._b.config, props)
        self._b.config_version.next_version(self._b.clock_ms())
        log.info("broker config updated: %s", props)
        return cmd.make_response(ResponseCode.SUCCESS)

    def topic_stats(self, conn: RemotingConnection, cmd: RemotingCommand):
        topic = req_str(cmd, "topic")
        b = self._b
        cfg = b.topic_config.get(topic)
        if cfg is None:
            return cmd.make_response(ResponseCode.TOPIC_NOT_EXIST, f"topic[{topic}] not exist")
        items = []
        for qid in range(cfg.write_queue_nums):
            items.append(
                (
                    MessageQueue(topic, b.config.broker_name, qid),
                    {
                        "minOffset": b.store.min_offset(topic, qid),
                        "maxOffset": b.store.max_offset(topic, qid),
                        "lastUpdateTimestamp": 0,
                    },
                )
            )
        body = fastjson.encode({"offsetTable": dict(items)})
        return cmd.make_response(ResponseCode.SUCCESS, body=body)

    def consume_stats(self, conn: RemotingConnection, cmd: RemotingCommand):
        group = req_str(cmd, "consumerGroup")
        topic = get_str(cmd, "topic")
        b = self._b
        topics = [topic] if topic else sorted(b.consumer_offsets.topics_of_group(group))
        items = []
        for name in topics:
            cfg = b.topic_config.get(name)
            if cfg is None:
                continue
            for qid in range(cfg.read_queue_nums):
                committed = b.consumer_offsets.query(group, name, qid)
                items.append(
                    (
                        MessageQueue(name, b.config.broker_name, qid),
                        {
                            "brokerOffset": b.store.max_offset(name, qid),
                            "consumerOffset": max(committed, 0),
                            "pullOffset": max(committed, 0),
                            "lastTimestamp": 0,
                        },
                    )
                )
        body = fastjson.encode({"consumeTps": 0.0, "offsetTable": dict(items)})
        return cmd.make_response(ResponseCode.SUCCESS, body=body)

    # --- subscription groups -------------------------------------------------------
    def update_subscription_group(self, conn: RemotingConnection, cmd: RemotingCommand):
        try:
            cfg = SubscriptionGroupConfig.from_json(json.loads(cmd.body))
        except (ValueError, KeyError, TypeError) as exc:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"bad subscription group: {exc}"
            ) from None
        self._b.subscription_groups.update(cfg)
        return cmd.make_response(ResponseCode.SUCCESS)

    def get_all_subscription_groups(self, conn: RemotingConnection, cmd: RemotingCommand):
        body = json.dumps(self._b.subscription_groups.to_json()).encode()
        return cmd.make_response(ResponseCode.SUCCESS, body=body)

    def delete_subscription_group(self, conn: RemotingConnection, cmd: RemotingCommand):
        group = req_str(cmd, "groupName")
        self._b.subscription_groups.delete(group)
        if get_bool(cmd, "removeOffset", False):
            self._b.consumer_offsets.remove_group(group)
        return cmd.make_response(ResponseCode.SUCCESS)

    # --- reset offsets -------------------------------------------------------------
    def reset_offset(self, conn: RemotingConnection, cmd: RemotingCommand):
        topic = req_str(cmd, "topic")
        group = req_str(cmd, "group")
        timestamp = req_int(cmd, "timestamp")
        force = get_bool(cmd, "isForce", True)
        only_queue = get_int(cmd, "queueId", -1)
        b = self._b
        cfg = b.topic_config.get(topic)
        if cfg is None:
            raise RemotingError(ResponseCode.TOPIC_NOT_EXIST, f"topic[{topic}] not exist")
        items: list[tuple[MessageQueue, int]] = []
        for qid in range(cfg.read_queue_nums):
            if only_queue is not None and only_queue >= 0 and qid != only_queue:
                continue
            if timestamp < 0:
                target = b.store.max_offset(topic, qid)
            else:
                target = b.store.offset_by_time(topic, qid, timestamp)
            current = b.consumer_offsets.query(group, topic, qid)
            if force or current < 0 or target < current:
                b.commit_offset(group, topic, qid, target)
            else:
                target = current
            items.append((MessageQueue(topic, b.config.broker_name, qid), target))
        body = fastjson.encode({"offsetTable": dict(items)})
        self._notify_reset(group, topic, timestamp, force, body)
        return cmd.make_response(ResponseCode.SUCCESS, body=body)

    def _notify_reset(self, group: str, topic: str, ts: int, force: bool, body: bytes) -> None:
        """Tells online consumers (220) so they drop their cached offsets."""
        info = self._b.clients.consumer_group(group)
        if info is None:
            return
        for channel in list(info.channels.values()):
            try:
                channel.conn.oneway(
                    RemotingCommand(
                        code=RequestCode.RESET_CONSUMER_CLIENT_OFFSET,
                        ext_fields={
                            "topic": topic,
                            "group": group,
                            "timestamp": str(ts),
                            "isForce": "true" if force else "false",
                        },
                        body=body,
                    )
                )
            except Exception as exc:
                log.info("reset offset notify to %s failed: %s", channel.client_id, exc)
