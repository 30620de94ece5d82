"""`ledgermq admin <command>`: RocketMQ's mqadmin, same command names, flags and tables.

Every command takes `-n ip:port;ip:port` (default: $NAMESRV_ADDR), `-h`, and `--json` for
machine-readable output. Failures print one line on stderr and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as _dt
import json
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ledgermq.cli.runtime import run_async

log = logging.getLogger(__name__)

TOPIC_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")
TOPIC_MAX_LENGTH = 127
ORDER_TOPIC_CONFIG = "ORDER_TOPIC_CONFIG"
RETRY_PREFIX = "%RETRY%"
DLQ_PREFIX = "%DLQ%"
TOOLS_GROUP = "TOOLS_CONSUMER"
# Java's MQVersion ordinals that clients of this project announce.
_VERSION_DESC = {479: "V5_3_3"}


class CommandError(Exception):
    """A failure with a message meant for the user (printed as one line, exit 1)."""


# --- output helpers ---------------------------------------------------------------------------


def human_ms(ms: int) -> str:
    """Java's UtilAll.timeMillisToHumanString2: `yyyy-MM-dd HH:mm:ss,SSS` local time."""
    if ms <= 0:
        return ""
    t = _dt.datetime.fromtimestamp(ms / 1000)
    return t.strftime("%Y-%m-%d %H:%M:%S,") + f"{ms % 1000:03d}"


def human_s(ms: int) -> str:
    """`yyyy-MM-dd HH:mm:ss` local time (UtilAll.YYYY_MM_DD_HH_MM_SS)."""
    if ms <= 0:
        return ""
    return _dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def perm_text(perm: int) -> str:
    return ("R" if perm & 4 else "-") + ("W" if perm & 2 else "-") + ("X" if perm & 1 else "-")


def version_desc(version: Any) -> str:
    try:
        v = int(version)
    except (TypeError, ValueError):
        return str(version)
    return _VERSION_DESC.get(v, str(v))


def _java_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return java_map(v)
    return str(v)


def java_map(d: dict[str, Any]) -> str:
    """A map as Java's toString prints it: `{k=v, k2=v2}`."""
    return "{" + ", ".join(f"{k}={_java_value(v)}" for k, v in d.items()) + "}"


def emit_json(obj: Any, *, compact: bool = False) -> None:
    if compact:
        print(json.dumps(obj, ensure_ascii=False, default=str), flush=True)
    else:
        print(json.dumps(obj, indent=2, ensure_ascii=False, default=str), flush=True)


def parse_time_arg(text: str) -> int:
    """`now`, milliseconds, or `yyyy-MM-dd#HH:mm:ss:SSS` (local time) -> ms."""
    text = text.strip()
    if text == "now":
        return int(time.time() * 1000)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        t = _dt.datetime.strptime(text, "%Y-%m-%d#%H:%M:%S:%f")
    except ValueError:
        raise CommandError(
            f"bad time {text!r}: use milliseconds, 'now' or yyyy-MM-dd#HH:mm:ss:SSS"
        ) from None
    return int(t.timestamp() * 1000)


def parse_bool(text: str) -> bool:
    return text.strip().lower() == "true"


def validate_topic(topic: str) -> None:
    if not topic:
        raise CommandError("the specified topic is blank")
    if len(topic) > TOPIC_MAX_LENGTH:
        raise CommandError(
            f"the specified topic is longer than topic max length {TOPIC_MAX_LENGTH}"
        )
    if not TOPIC_PATTERN.match(topic):
        raise CommandError(
            f"the specified topic[{topic}] contains illegal characters, "
            f"allowing only {TOPIC_PATTERN.pattern}"
        )


def parse_attributes(text: str | None) -> dict[str, str]:
    """`+k=v,+k2=v2` (5.x topic attributes). Deleting (`-k`) is not supported yet."""
    out: dict[str, str] = {}
    if not text:
        return out
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("-"):
            raise CommandError(f"removing attribute {item[1:]!r} is not supported")
        if not item.startswith("+") or "=" not in item:
            raise CommandError(f"bad attribute {item!r}: expected +key=value")
        k, _, v = item[1:].partition("=")
        if not k:
            raise CommandError(f"bad attribute {item!r}: empty key")
        out[k] = v
    return out


def message_json(m: Any) -> dict[str, Any]:
    body = bytes(m.body)
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "topic": m.topic,
        "msgId": m.msg_id,
        "offsetMsgId": m.offset_msg_id,
        "tags": m.tags,
        "keys": " ".join(m.keys) or None,
        "queueId": m.queue_id,
        "queueOffset": m.queue_offset,
        "commitLogOffset": m.commit_log_offset,
        "reconsumeTimes": m.reconsume_times,
        "bornTimestamp": m.born_timestamp,
        "storeTimestamp": m.store_timestamp,
        "bornHost": f"{m.born_host[0]}:{m.born_host[1]}",
        "storeHost": f"{m.store_host[0]}:{m.store_host[1]}",
        "sysFlag": m.sys_flag,
        "flag": m.flag,
        "bodyCRC": m.body_crc,
        "storeSize": m.store_size,
        # MIN/MAX_OFFSET are added by the pull path, they are not stored with the message.
        "properties": {
            k: v for k, v in m.properties.items() if k not in ("MIN_OFFSET", "MAX_OFFSET")
        },
        "body": text,
        "bodyBase64": base64.b64encode(body).decode(),
    }


def print_message(m: Any) -> None:
    j = message_json(m)
    keys = j["keys"]
    rows: list[tuple[str, Any]] = [
        ("OffsetID:", j["offsetMsgId"]),
        ("Topic:", j["topic"]),
        ("Tags:", f"[{j['tags']}]"),
        ("Keys:", f"[{keys}]"),
        ("Queue ID:", j["queueId"]),
        ("Queue Offset:", j["queueOffset"]),
        ("CommitLog Offset:", j["commitLogOffset"]),
        ("Reconsume Times:", j["reconsumeTimes"]),
        ("Born Timestamp:", human_ms(j["bornTimestamp"])),
        ("Store Timestamp:", human_ms(j["storeTimestamp"])),
        ("Born Host:", j["bornHost"]),
        ("Store Host:", j["storeHost"]),
        ("System Flag:", j["sysFlag"]),
        ("Properties:", java_map(j["properties"])),
    ]
    if j["body"] is not None:
        rows.append(("Message Body:", j["body"]))
    else:
        rows.append(("Message Body(b64):", j["bodyBase64"]))
    for label, value in rows:
        print(f"{label:<20} {value}")


# --- the command table ------------------------------------------------------------------------


@dataclass(slots=True)
class Ctx:
    args: argparse.Namespace
    namesrv: str
    _admin: Any = None

    @property
    def json(self) -> bool:
        return bool(self.args.json)

    async def admin(self) -> Any:
        if self._admin is None:
            from ledgermq.client.admin import AdminClient

            admin = AdminClient(self.namesrv, timeout=self.args.timeout)
            await admin.start()
            self._admin = admin
        return self._admin

    async def close(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.shutdown()


Handler = Callable[[Ctx], Awaitable[int]]


@dataclass(slots=True)
class Command:
    name: str
    help: str
    setup: Callable[[argparse.ArgumentParser], None]
    handler: Handler


COMMANDS: dict[str, Command] = {}


def command(name: str, help_text: str, setup: Callable[[argparse.ArgumentParser], None]):
    def deco(fn: Handler) -> Handler:
        COMMANDS[name] = Command(name, help_text, setup, fn)
        return fn

    return deco


def _target_flags(p: argparse.ArgumentParser, *, required: bool, what: str) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("-b", "--brokerAddr", dest="broker", help=f"{what} on this broker (ip:port)")
    g.add_argument(
        "-c", "--clusterName", dest="cluster", help=f"{what} on every master of a cluster"
    )


# --- shared lookups ---------------------------------------------------------------------------


async def _cluster_addrs(ctx: Ctx, cluster: str, *, masters_only: bool) -> list[str]:
    admin = await ctx.admin()
    info = await admin.cluster_info()
    if cluster not in info.cluster_addr_table:
        raise CommandError(f"cluster {cluster} does not exist")
    if masters_only:
        return sorted(info.masters(cluster).values())
    out: list[str] = []
    for name in info.cluster_addr_table[cluster]:
        bd = info.broker_addr_table.get(name)
        if bd is not None:
            out.extend(addr for _, addr in sorted(bd.broker_addrs.items()))
    return out


async def _target_addrs(ctx: Ctx, *, masters_only: bool = True) -> list[str]:
    if ctx.args.broker:
        return [ctx.args.broker.strip()]
    return await _cluster_addrs(ctx, ctx.args.cluster.strip(), masters_only=masters_only)


async def _broker_name_of(ctx: Ctx, addr: str) -> str | None:
    admin = await ctx.admin()
    info = await admin.cluster_info()
    for name, bd in info.broker_addr_table.items():
        if addr in bd.broker_addrs.values():
            return name
    return None


async def _all_masters(ctx: Ctx) -> list[str]:
    admin = await ctx.admin()
    return sorted((await admin.cluster_info()).masters().values())


async def _ensure_topic(ctx: Ctx, topic: str) -> Any:
    from ledgermq.client.errors import MQBrokerError
    from ledgermq.remoting.codes import ResponseCode

    admin = await ctx.admin()
    try:
        return await admin.topic_route(topic)
    except MQBrokerError as exc:
        if exc.code == ResponseCode.TOPIC_NOT_EXIST:
            raise CommandError(f"topic {topic} does not exist") from None
        raise


# --- topics -----------------------------------------------------------------------------------


def _setup_update_topic(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--topic", required=True, help="topic name")
    _target_flags(p, required=True, what="create the topic")
    p.add_argument("-r", "--readQueueNums", type=int, default=8, help="read queue nums (8)")
    p.add_argument("-w", "--writeQueueNums", type=int, default=8, help="write queue nums (8)")
    p.add_argument("-p", "--perm", type=int, default=6, choices=(2, 4, 6), help="perm 2/4/6")
    p.add_argument("-o", "--order", default="false", help="order topic (true|false)")
    p.add_argument("-a", "--attributes", help="attributes, e.g. +message.type=FIFO")


@command("updateTopic", "Update or create topic", _setup_update_topic)
async def _update_topic(ctx: Ctx) -> int:
    a = ctx.args
    topic = a.topic.strip()
    validate_topic(topic)
    for flag, n in (("-r", a.readQueueNums), ("-w", a.writeQueueNums)):
        if not 1 <= n <= 1024:
            raise CommandError(f"{flag} must be between 1 and 1024, got {n}")
    order = parse_bool(a.order)
    attributes = parse_attributes(a.attributes)
    admin = await ctx.admin()
    addrs = await _target_addrs(ctx)
    if not addrs:
        raise CommandError(f"cluster {a.cluster} has no master broker")
    done = await admin.create_topic(
        topic,
        broker_addr=addrs[0] if a.broker else None,
        cluster=a.cluster.strip() if a.cluster else None,
        read_queue_nums=a.readQueueNums,
        write_queue_nums=a.writeQueueNums,
        perm=a.perm,
        order=order,
        attributes=attributes or None,
    )
    order_conf = None
    if order:
        order_conf = await _update_order_conf(ctx, topic, done, a.writeQueueNums, bool(a.cluster))
    config = {
        "topicName": topic,
        "readQueueNums": a.readQueueNums,
        "writeQueueNums": a.writeQueueNums,
        "perm": a.perm,
        "topicFilterType": "SINGLE_TAG",
        "topicSysFlag": 0,
        "order": order,
        "attributes": attributes,
    }
    if ctx.json:
        emit_json({"brokers": done, "topicConfig": config, "orderConf": order_conf})
        return 0
    for addr in done:
        print(f"create topic to {addr} success.")
    if order_conf:
        print(f"set cluster orderConf. isOrder={order}, orderConf=[{order_conf}]")
    print(
        f"TopicConfig [topicName={topic}, readQueueNums={a.readQueueNums}, "
        f"writeQueueNums={a.writeQueueNums}, perm={perm_text(a.perm)}, "
        f"topicFilterType=SINGLE_TAG, topicSysFlag=0, order={str(order).lower()}, "
        f"attributes={java_map(attributes)}]"
    )
    return 0


async def _update_order_conf(
    ctx: Ctx, topic: str, addrs: list[str], queue_nums: int, whole_cluster: bool
) -> str:
    """ORDER_TOPIC_CONFIG kv: `brokerName:queueNums;...` (PROTOCOL.md 2.4, updateTopic -o)."""
    admin = await ctx.admin()
    entries: dict[str, int] = {}
    if not whole_cluster:
        old = await admin.get_kv_config(ORDER_TOPIC_CONFIG, topic)
        for part in (old or "").split(";"):
            name, _, n = part.partition(":")
            if name and n.isdigit():
                entries[name] = int(n)
    for addr in addrs:
        name = await _broker_name_of(ctx, addr)
        if name:
            entries[name] = queue_nums
    conf = ";".join(f"{k}:{v}" for k, v in sorted(entries.items()))
    if conf:
        await admin.put_kv_config(ORDER_TOPIC_CONFIG, topic, conf)
    return conf


def _setup_delete_topic(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--topic", required=True, help="topic name")
    p.add_argument("-c", "--clusterName", dest="cluster", help="delete the topic from this cluster")


@command("deleteTopic", "Delete topic from broker and NameServer", _setup_delete_topic)
async def _delete_topic(ctx: Ctx) -> int:
    topic = ctx.args.topic.strip()
    cluster = ctx.args.cluster.strip() if ctx.args.cluster else None
    admin = await ctx.admin()
    if topic not in await admin.topic_list():
        await _ensure_topic(ctx, topic)
    if cluster is not None:
        await _cluster_addrs(ctx, cluster, masters_only=True)  # checks that it exists
    await admin.delete_topic(topic, cluster=cluster)
    if ctx.json:
        emit_json({"topic": topic, "cluster": cluster, "deleted": True})
    else:
        print(f"delete topic [{topic}] from cluster [{cluster or '*'}] success.")
        print(f"delete topic [{topic}] from NameServer success.")
    return 0


def _setup_topic_list(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--clusterModel",
        dest="cluster_model",
        action="store_true",
        help="also print the cluster and the consumer groups of each topic",
    )


async def _groups_by_topic(ctx: Ctx) -> dict[str, set[str]]:
    """topic -> consumer groups with a committed offset on any master (GET_ALL_CONSUMER_OFFSET)."""
    from ledgermq.common import fastjson
    from ledgermq.remoting.codec import RemotingCommand
    from ledgermq.remoting.codes import RequestCode

    admin = await ctx.admin()
    out: dict[str, set[str]] = {}
    for addr in await _all_masters(ctx):
        cmd = RemotingCommand(code=RequestCode.GET_ALL_CONSUMER_OFFSET)
        try:
            resp = await admin.instance.invoke_ok(addr, cmd, admin.timeout)
        except Exception as exc:  # one broker down must not hide the others
            log.warning("consumer offsets of %s unavailable: %s", addr, exc)
            continue
        table = (fastjson.loads(resp.body) or {}).get("offsetTable") or {}
        for key in table:
            topic, sep, group = str(key).rpartition("@")
            if sep:
                out.setdefault(topic, set()).add(group)
    return out


@command("topicList", "Fetch all topic list from name server", _setup_topic_list)
async def _topic_list(ctx: Ctx) -> int:
    admin = await ctx.admin()
    topics = await admin.topic_list()
    if not ctx.args.cluster_model:
        if ctx.json:
            emit_json({"topicList": topics})
        else:
            for t in topics:
                print(t)
        return 0
    info = await admin.cluster_info()
    groups = await _groups_by_topic(ctx)
    rows: list[dict[str, Any]] = []
    for topic in topics:
        if topic.startswith((RETRY_PREFIX, DLQ_PREFIX)):
            continue
        clusters: set[str] = set()
        try:
            route = await admin.topic_route(topic)
            for bd in route.broker_datas:
                known = info.broker_addr_table.get(bd.broker_name)
                clusters.add(bd.cluster or (known.cluster if known else ""))
        except Exception as exc:
            log.debug("no route for %s: %s", topic, exc)
        cluster = ",".join(sorted(c for c in clusters if c))
        for group in sorted(groups.get(topic) or {""}):
            rows.append({"clusterName": cluster, "topic": topic, "consumerGroup": group})
    if ctx.json:
        emit_json(rows)
        return 0
    print(f"{'#Cluster Name':<20}  {'#Topic':<48}  {'#Consumer Group':<48}")
    for r in rows:
        print(f"{r['clusterName']:<20}  {r['topic']:<48}  {r['consumerGroup']:<48}")
    return 0


def _setup_topic(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--topic", required=True, help="topic name")


@command("topicRoute", "Examine topic route info", _setup_topic)
async def _topic_route(ctx: Ctx) -> int:
    from ledgermq.client.instance import check_response
    from ledgermq.common import fastjson
    from ledgermq.remoting.codec import RemotingCommand
    from ledgermq.remoting.codes import RequestCode, ResponseCode

    topic = ctx.args.topic.strip()
    admin = await ctx.admin()
    cmd = RemotingCommand(
        code=RequestCode.GET_ROUTEINFO_BY_TOPIC,
        ext_fields={"topic": topic, "acceptStandardJsonOnly": "true"},
    )
    resp = await admin.instance.invoke_namesrv(cmd, admin.timeout)
    if resp.code == ResponseCode.TOPIC_NOT_EXIST:
        raise CommandError(f"topic {topic} does not exist")
    check_response(resp, "namesrv")
    emit_json(fastjson.loads(resp.body) or {})
    return 0


@command("topicStatus", "Examine topic Status info", _setup_topic)
async def _topic_status(ctx: Ctx) -> int:
    topic = ctx.args.topic.strip()
    await _ensure_topic(ctx, topic)
    admin = await ctx.admin()
    stats = await admin.topic_stats(topic)
    rows = [
        {
            "brokerName": mq.broker_name,
            "queueId": mq.queue_id,
            "minOffset": off.min_offset,
            "maxOffset": off.max_offset,
            "lastUpdateTimestamp": off.last_update_timestamp,
        }
        for mq, off in sorted(stats.items())
    ]
    if ctx.json:
        emit_json({"topic": topic, "offsetTable": rows})
        return 0
    print(
        f"{'#Broker Name':<32}  {'#QID':<4}  {'#Min Offset':<20}  {'#Max Offset':<20}    "
        "#Last Updated"
    )
    for r in rows:
        print(
            f"{r['brokerName']:<32}  {r['queueId']:<4}  {r['minOffset']:<20}  "
            f"{r['maxOffset']:<20}    {human_ms(r['lastUpdateTimestamp'])}"
        )
    return 0


# --- cluster and brokers ----------------------------------------------------------------------


def _setup_cluster_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--moreStats", action="store_true", help="print more stats")
    p.add_argument("-i", "--interval", type=int, help="repeat every N seconds")
    p.add_argument("-c", "--clusterName", dest="cluster", help="only this cluster")


def _tps(text: str | None) -> float:
    try:
        return float((text or "0").split()[0])
    except (ValueError, IndexError):
        return 0.0


def _int(text: Any) -> int:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return 0


async def _cluster_rows(ctx: Ctx) -> list[dict[str, Any]]:
    admin = await ctx.admin()
    info = await admin.cluster_info()
    if ctx.args.cluster and ctx.args.cluster not in info.cluster_addr_table:
        raise CommandError(f"cluster {ctx.args.cluster} does not exist")
    rows: list[dict[str, Any]] = []
    for cluster in sorted(info.cluster_addr_table):
        if ctx.args.cluster and cluster != ctx.args.cluster:
            continue
        for name in sorted(info.cluster_addr_table[cluster]):
            bd = info.broker_addr_table.get(name)
            if bd is None:
                continue
            for bid, addr in sorted(bd.broker_addrs.items()):
                row: dict[str, Any] = {
                    "clusterName": cluster,
                    "brokerName": name,
                    "brokerId": bid,
                    "addr": addr,
                }
                try:
                    row["runtime"] = await admin.broker_runtime_info(addr)
                except Exception as exc:  # the table still shows the unreachable broker
                    row["runtime"] = {}
                    row["error"] = str(exc)
                rows.append(row)
    return rows


def _print_cluster_base(rows: list[dict[str, Any]]) -> None:
    fmt = "{:<16}  {:<22}  {:<4}  {:<22} {:<16} {:>19} {:>19} {:>10} {:>5} {:>6}"
    print(
        fmt.format(
            "#Cluster Name",
            "#Broker Name",
            "#BID",
            "#Addr",
            "#Version",
            "#InTPS(LOAD)",
            "#OutTPS(LOAD)",
            "#PCWait(ms)",
            "#Hour",
            "#SPACE",
        )
    )
    now = int(time.time() * 1000)
    for r in rows:
        t = r["runtime"]
        in_tps = _tps(t.get("putTps"))
        out_tps = _tps(t.get("getTransferedTps") or t.get("getFoundTps"))
        earliest = _int(t.get("earliestMessageTimeStamp"))
        hour = (now - earliest) / 3_600_000 if earliest > 0 else 0.0
        space = float(t.get("commitLogDiskRatio") or 0.0)
        send_q = t.get("sendThreadPoolQueueSize", "")
        pull_q = t.get("pullThreadPoolQueueSize", "")
        send_w = t.get("sendThreadPoolQueueHeadWaitTimeMills", "0")
        pull_w = t.get("pullThreadPoolQueueHeadWaitTimeMills", "0")
        version = t.get("brokerVersionDesc", "") if t else "UNREACHABLE"
        print(
            fmt.format(
                r["clusterName"],
                r["brokerName"],
                r["brokerId"],
                r["addr"],
                version,
                f"{in_tps:9.2f}({send_q},{send_w}ms)",
                f"{out_tps:9.2f}({pull_q},{pull_w}ms)",
                t.get("pageCacheLockTimeMills", ""),
                f"{hour:2.2f}",
                f"{space:.4f}",
            )
        )


def _more_stats(t: dict[str, str]) -> dict[str, int]:
    put_y, put_m, put_n = (
        _int(t.get(k))
        for k in ("msgPutTotalYesterdayMorning", "msgPutTotalTodayMorning", "msgPutTotalTodayNow")
    )
    get_y, get_m, get_n = (
        _int(t.get(k))
        for k in ("msgGetTotalYesterdayMorning", "msgGetTotalTodayMorning", "msgGetTotalTodayNow")
    )
    return {
        "inTotalYest": put_m - put_y,
        "outTotalYest": get_m - get_y,
        "inTotalToday": put_n - put_m,
        "outTotalToday": get_n - get_m,
    }


def _print_cluster_more(rows: list[dict[str, Any]]) -> None:
    fmt = "{:<16}  {:<32} {:>14} {:>14} {:>14} {:>14}"
    print(
        fmt.format(
            "#Cluster Name",
            "#Broker Name",
            "#InTotalYest",
            "#OutTotalYest",
            "#InTotalToday",
            "#OutTotalToday",
        )
    )
    for r in rows:
        s = _more_stats(r["runtime"])
        print(
            fmt.format(
                r["clusterName"],
                r["brokerName"],
                s["inTotalYest"],
                s["outTotalYest"],
                s["inTotalToday"],
                s["outTotalToday"],
            )
        )


@command("clusterList", "List all of clusters", _setup_cluster_list)
async def _cluster_list(ctx: Ctx) -> int:
    interval = ctx.args.interval
    if interval is not None and interval <= 0:
        raise CommandError("-i must be a positive number of seconds")
    first = True
    while True:
        if not first:
            await asyncio.sleep(interval)
        first = False
        rows = await _cluster_rows(ctx)
        if ctx.json:
            if ctx.args.moreStats:
                for r in rows:
                    r.update(_more_stats(r["runtime"]))
            emit_json(rows, compact=interval is not None)
        elif ctx.args.moreStats:
            _print_cluster_more(rows)
        else:
            _print_cluster_base(rows)
        sys.stdout.flush()
        if interval is None:
            return 0


def _setup_dledger_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--clusterName", dest="cluster", help="only this cluster")


def dledger_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """clusterList rows -> one entry per DLedger broker group, as its members see it."""
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = r.get("runtime") or {}
        name = t.get("dLedgerGroup")
        if not name:
            continue
        g = groups.setdefault(
            name,
            {"group": name, "brokerName": r["brokerName"], "term": -1, "leaderId": None,
             "commitIndex": -1, "members": []},
        )  # fmt: skip
        term = _int(t.get("dLedgerTerm"))
        member = {
            "selfId": t.get("dLedgerSelfId", ""),
            "addr": r["addr"],
            "brokerId": r["brokerId"],
            "role": t.get("dLedgerRole", ""),
            "term": term,
            "lastIndex": _int(t.get("dLedgerLastIndex")),
            "appliedIndex": _int(t.get("dLedgerAppliedIndex")),
            "matchIndex": None,
        }
        g["members"].append(member)
        if t.get("dLedgerRole") == "leader" and term >= g["term"]:
            g["term"] = term
            g["leaderId"] = member["selfId"]
            g["commitIndex"] = _int(t.get("dLedgerCommitIndex"))
            try:
                g["_match"] = json.loads(t.get("dLedgerMatchIndex") or "{}")
            except ValueError:
                g["_match"] = {}
        g["term"] = max(g["term"], term)
    out = []
    for g in groups.values():
        match = g.pop("_match", {})
        for m in g["members"]:
            m["matchIndex"] = match.get(m["selfId"])
        g["members"].sort(key=lambda m: m["selfId"])
        out.append(g)
    return sorted(out, key=lambda g: g["group"])


@command(
    "dledgerStatus",
    "Show each DLedger broker group: term, leader, commit index, each member's match index",
    _setup_dledger_status,
)
async def _dledger_status(ctx: Ctx) -> int:
    groups = dledger_groups(await _cluster_rows(ctx))
    if ctx.json:
        emit_json(groups)
        return 0
    if not groups:
        print("no DLedger broker groups (no broker reports enableDLegerCommitLog)")
        return 0
    for g in groups:
        leader = g["leaderId"] or "(none)"
        print(f"#Group {g['group']}  term {g['term']}  leader {leader}  commit {g['commitIndex']}")
        fmt = "  {:<8} {:<22} {:>4}  {:<10} {:>6} {:>10} {:>10} {:>10}"
        print(fmt.format("#Id", "#Addr", "#BID", "#Role", "#Term", "#Last", "#Applied", "#Match"))
        for m in g["members"]:
            match = "" if m["matchIndex"] is None else m["matchIndex"]
            print(
                fmt.format(
                    m["selfId"],
                    m["addr"],
                    m["brokerId"],
                    m["role"],
                    m["term"],
                    m["lastIndex"],
                    m["appliedIndex"],
                    match,
                )
            )
    return 0


def _setup_broker_status(p: argparse.ArgumentParser) -> None:
    _target_flags(p, required=True, what="fetch the status")


@command("brokerStatus", "Fetch broker runtime status data", _setup_broker_status)
async def _broker_status(ctx: Ctx) -> int:
    admin = await ctx.admin()
    addrs = await _target_addrs(ctx, masters_only=False)
    result: dict[str, dict[str, str]] = {}
    for addr in addrs:
        result[addr] = dict(sorted((await admin.broker_runtime_info(addr)).items()))
    if ctx.json:
        emit_json(result[addrs[0]] if ctx.args.broker else result)
        return 0
    for addr, table in result.items():
        for k, v in table.items():
            if ctx.args.broker:
                print(f"{k:<32}: {v}")
            else:
                print(f"{addr:<24} {k:<32}: {v}")
    return 0


def _setup_get_broker_config(p: argparse.ArgumentParser) -> None:
    _target_flags(p, required=True, what="read the config")


@command(
    "getBrokerConfig", "Get broker config by cluster or special broker", _setup_get_broker_config
)
async def _get_broker_config(ctx: Ctx) -> int:
    admin = await ctx.admin()
    addrs = await _target_addrs(ctx, masters_only=False)
    result = {addr: dict(sorted((await admin.broker_config(addr)).items())) for addr in addrs}
    if ctx.json:
        emit_json(result[addrs[0]] if ctx.args.broker else result)
        return 0
    for addr, cfg in result.items():
        print(f"============{addr}============")
        for k, v in cfg.items():
            print(f"{k:<50}=  {v}")
    return 0


def _setup_update_broker_config(p: argparse.ArgumentParser) -> None:
    _target_flags(p, required=True, what="update the config")
    p.add_argument("-k", "--key", required=True, help="config key")
    p.add_argument("-v", "--value", required=True, help="config value")
    p.add_argument(
        "-a", "--updateAllBroker", action="store_true", help="with -c: slaves too, not only masters"
    )


@command("updateBrokerConfig", "Update broker's config", _setup_update_broker_config)
async def _update_broker_config(ctx: Ctx) -> int:
    a = ctx.args
    admin = await ctx.admin()
    addrs = await _target_addrs(ctx, masters_only=not a.updateAllBroker)
    key, value = a.key.strip(), a.value.strip()
    for addr in addrs:
        await admin.update_broker_config(addr, {key: value})
        if not ctx.json:
            print(f"update broker config success, {addr}")
    if ctx.json:
        emit_json({"brokers": addrs, "key": key, "value": value})
    return 0


# --- consumers --------------------------------------------------------------------------------


def _setup_consumer_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("-g", "--groupName", dest="group", help="consumer group (omit: all groups)")
    p.add_argument("-t", "--topicName", dest="topic", help="only this topic")
    p.add_argument("-s", "--showClientIP", action="store_true", help="accepted for compatibility")


async def _allocation(ctx: Ctx, group: str) -> dict[Any, str]:
    """MessageQueue -> client IP, from the running info of each online consumer."""
    from ledgermq.client.message import MessageQueue

    admin = await ctx.admin()
    out: dict[Any, str] = {}
    try:
        conn = await admin.consumer_connection(group)
    except Exception:
        return out
    for c in conn.get("connectionSet") or []:
        client_id = c.get("clientId", "")
        ip = str(c.get("clientAddr", "")).rsplit(":", 1)[0]
        try:
            info = await admin.consumer_running_info(group, client_id)
        except Exception as exc:
            log.debug("running info of %s unavailable: %s", client_id, exc)
            continue
        for mq in info.get("mqTable") or {}:
            if isinstance(mq, MessageQueue):
                out[mq] = ip
    return out


async def _consumer_progress_group(ctx: Ctx, group: str) -> int:
    admin = await ctx.admin()
    stats = await admin.consume_stats(group, ctx.args.topic)
    if not stats.offset_table:
        raise CommandError(
            f"no consume stats for group {group}: it has not consumed any message"
            + (f" of topic {ctx.args.topic}" if ctx.args.topic else "")
        )
    alloc = await _allocation(ctx, group)
    rows = []
    diff_total = 0
    for mq, w in sorted(stats.offset_table.items()):
        diff = w.broker_offset - w.consumer_offset
        diff_total += diff
        rows.append(
            {
                "topic": mq.topic,
                "brokerName": mq.broker_name,
                "queueId": mq.queue_id,
                "brokerOffset": w.broker_offset,
                "consumerOffset": w.consumer_offset,
                "clientIP": alloc.get(mq, "NA"),
                "diff": diff,
                "lastTimestamp": w.last_timestamp,
            }
        )
    if ctx.json:
        emit_json(
            {
                "group": group,
                "consumeTps": stats.consume_tps,
                "diffTotal": diff_total,
                "offsetTable": rows,
            }
        )
        return 0
    print(
        f"{'#Topic':<32}  {'#Broker Name':<32}  {'#QID':<4}  {'#Broker Offset':<20}  "
        f"{'#Consumer Offset':<20}  {'#Client IP':<20} {'#Diff':<20}  #LastTime"
    )
    for r in rows:
        print(
            f"{r['topic']:<32}  {r['brokerName']:<32}  {r['queueId']:<4}  "
            f"{r['brokerOffset']:<20}  {r['consumerOffset']:<20}  {r['clientIP']:<20} "
            f"{r['diff']:<20}  {human_s(r['lastTimestamp'])}"
        )
    print()
    print(f"Consume TPS: {stats.consume_tps}")
    print(f"Diff Total: {diff_total}")
    return 0


async def _all_groups(ctx: Ctx) -> list[str]:
    admin = await ctx.admin()
    groups: set[str] = set()
    for t in await admin.topic_list():
        if t.startswith(RETRY_PREFIX):
            groups.add(t[len(RETRY_PREFIX) :])
    for topic_groups in (await _groups_by_topic(ctx)).values():
        groups |= topic_groups
    groups.discard(TOOLS_GROUP)
    return sorted(groups)


@command("consumerProgress", "Query consumer's progress, speed", _setup_consumer_progress)
async def _consumer_progress(ctx: Ctx) -> int:
    if ctx.args.group:
        return await _consumer_progress_group(ctx, ctx.args.group.strip())
    admin = await ctx.admin()
    rows = []
    for group in await _all_groups(ctx):
        row: dict[str, Any] = {
            "group": group,
            "count": 0,
            "version": "OFFLINE",
            "type": "",
            "model": "",
            "tps": 0,
            "diffTotal": 0,
        }
        try:
            stats = await admin.consume_stats(group)
            row["tps"] = int(stats.consume_tps)
            row["diffTotal"] = stats.diff_total
        except Exception as exc:
            log.debug("consume stats of %s: %s", group, exc)
        try:
            conn = await admin.consumer_connection(group)
        except Exception:
            conn = None
        if conn and conn.get("connectionSet"):
            conns = conn["connectionSet"]
            row["count"] = len(conns)
            row["version"] = version_desc(min(_int(c.get("version")) for c in conns))
            passive = conn.get("consumeType") == "CONSUME_PASSIVELY"
            row["type"] = "PUSH" if passive else "PULL"
            row["model"] = conn.get("messageModel", "") if passive else ""
        rows.append(row)
    rows.sort(key=lambda r: (-r["count"], -r["diffTotal"]))
    if ctx.json:
        emit_json(rows)
        return 0
    print(
        f"{'#Group':<32}  {'#Count':<6}  {'#Version':<24} {'#Type':<5}  {'#Model':<14}  "
        f"{'#TPS':<7}  #Diff Total"
    )
    for r in rows:
        print(
            f"{r['group']:<32}  {r['count']:<6}  {r['version']:<24} {r['type']:<5}  "
            f"{r['model']:<14}  {r['tps']:<7}  {r['diffTotal']}"
        )
    return 0


def _setup_group(p: argparse.ArgumentParser) -> None:
    p.add_argument("-g", "--consumerGroup", dest="group", required=True, help="consumer group")


@command(
    "consumerConnection",
    "Query consumer's socket connection, client version and subscription",
    _setup_group,
)
async def _consumer_connection(ctx: Ctx) -> int:
    from ledgermq.client.errors import MQBrokerError
    from ledgermq.remoting.codes import ResponseCode

    group = ctx.args.group.strip()
    admin = await ctx.admin()
    try:
        conn = await admin.consumer_connection(group)
    except MQBrokerError as exc:
        if exc.code == ResponseCode.CONSUMER_NOT_ONLINE:
            raise CommandError(f"consumer group {group} is not online") from None
        raise
    if ctx.json:
        emit_json(conn)
        return 0
    for i, c in enumerate(conn.get("connectionSet") or [], 1):
        print(
            f"{i:03d}  {c.get('clientId', ''):<32} {c.get('clientAddr', ''):<22} "
            f"{c.get('language', ''):<8} {version_desc(c.get('version'))}"
        )
    print()
    print("Below is subscription:")
    for i, (topic, sub) in enumerate(sorted((conn.get("subscriptionTable") or {}).items()), 1):
        print(f"{i:03d}  Topic: {topic:<40} SubExpression: {(sub or {}).get('subString', '')}")
    print()
    print(f"ConsumeType: {conn.get('consumeType', '')}")
    print(f"MessageModel: {conn.get('messageModel', '')}")
    print(f"ConsumeFromWhere: {conn.get('consumeFromWhere', '')}")
    return 0


def _setup_reset_offset(p: argparse.ArgumentParser) -> None:
    p.add_argument("-g", "--group", required=True, help="consumer group")
    p.add_argument("-t", "--topic", required=True, help="topic")
    p.add_argument("-s", "--timestamp", required=True, help="ms, 'now', or yyyy-MM-dd#HH:mm:ss:SSS")
    p.add_argument("-f", "--force", default="true", help="force rollback (true|false)")
    p.add_argument("-c", "--cplus", action="store_true", help="accepted for compatibility")


@command("resetOffsetByTime", "Reset consumer offset by timestamp", _setup_reset_offset)
async def _reset_offset(ctx: Ctx) -> int:
    a = ctx.args
    group, topic = a.group.strip(), a.topic.strip()
    ts = parse_time_arg(a.timestamp)
    force = parse_bool(a.force)
    await _ensure_topic(ctx, topic)
    admin = await ctx.admin()
    table = await admin.reset_offset_by_time(group, topic, ts, force=force)
    rows = [
        {"brokerName": mq.broker_name, "queueId": mq.queue_id, "offset": off}
        for mq, off in sorted(table.items())
    ]
    if ctx.json:
        emit_json(
            {"group": group, "topic": topic, "force": force, "timestamp": ts, "offsetTable": rows}
        )
        return 0
    print(
        f"rollback consumer offset by specified group[{group}], topic[{topic}], "
        f"force[{str(force).lower()}], timestamp(string)[{a.timestamp}], timestamp(long)[{ts}]"
    )
    print(f"{'#brokerName':<40}  {'#queueId':<40}  {'#offset':<40}")
    for r in rows:
        print(f"{r['brokerName']:<40}  {r['queueId']:<40}  {r['offset']:<40}")
    return 0


def _setup_update_sub_group(p: argparse.ArgumentParser) -> None:
    _target_flags(p, required=True, what="create the group")
    p.add_argument("-g", "--groupName", dest="group", required=True, help="consumer group")
    p.add_argument("-s", "--consumeEnable", help="true|false")
    p.add_argument("-m", "--consumeFromMinEnable", help="true|false (default false)")
    p.add_argument("-d", "--consumeBroadcastEnable", help="true|false (default false)")
    p.add_argument("-o", "--consumeMessageOrderly", help="true|false")
    p.add_argument("-q", "--retryQueueNums", type=int, help="retry queue nums")
    p.add_argument("-r", "--retryMaxTimes", type=int, help="retry max times")
    p.add_argument("-i", "--brokerId", type=int, help="consume from which broker id")
    p.add_argument("-w", "--whichBrokerWhenConsumeSlowly", type=int, help="broker id when slow")
    p.add_argument("-a", "--notifyConsumerIdsChanged", help="true|false")
    p.add_argument("--attributes", help="attributes, e.g. +k=v")


@command("updateSubGroup", "Update or create subscription group", _setup_update_sub_group)
async def _update_sub_group(ctx: Ctx) -> int:
    a = ctx.args
    group = a.group.strip()
    if not group:
        raise CommandError("the group name is blank")
    config: dict[str, Any] = {
        "groupName": group,
        "consumeEnable": True,
        "consumeFromMinEnable": False,
        "consumeBroadcastEnable": False,
        "consumeMessageOrderly": False,
        "retryQueueNums": 1,
        "retryMaxTimes": 16,
        "brokerId": 0,
        "whichBrokerWhenConsumeSlowly": 1,
        "notifyConsumerIdsChangedEnable": True,
        "groupSysFlag": 0,
        "consumeTimeoutMinute": 15,
        "attributes": parse_attributes(a.attributes),
    }
    for key, raw in (
        ("consumeEnable", a.consumeEnable),
        ("consumeFromMinEnable", a.consumeFromMinEnable),
        ("consumeBroadcastEnable", a.consumeBroadcastEnable),
        ("consumeMessageOrderly", a.consumeMessageOrderly),
        ("notifyConsumerIdsChangedEnable", a.notifyConsumerIdsChanged),
    ):
        if raw is not None:
            config[key] = parse_bool(raw)
    for key, val in (
        ("retryQueueNums", a.retryQueueNums),
        ("retryMaxTimes", a.retryMaxTimes),
        ("brokerId", a.brokerId),
        ("whichBrokerWhenConsumeSlowly", a.whichBrokerWhenConsumeSlowly),
    ):
        if val is not None:
            if val < 0:
                raise CommandError(f"{key} must not be negative")
            config[key] = val
    admin = await ctx.admin()
    addrs = await _target_addrs(ctx)
    if not addrs:
        raise CommandError(f"cluster {a.cluster} has no master broker")
    for addr in addrs:
        await admin.update_subscription_group(addr, config)
        if not ctx.json:
            print(f"create subscription group to {addr} success.")
    if ctx.json:
        emit_json({"brokers": addrs, "subscriptionGroupConfig": config})
    else:
        print("SubscriptionGroupConfig " + java_map(config))
    return 0


def _setup_delete_sub_group(p: argparse.ArgumentParser) -> None:
    _target_flags(p, required=True, what="delete the group")
    p.add_argument("-g", "--groupName", dest="group", required=True, help="consumer group")
    p.add_argument(
        "-r", "--removeOffset", default="false", help="also remove the group's offsets (true|false)"
    )


@command("deleteSubGroup", "Delete subscription group from broker", _setup_delete_sub_group)
async def _delete_sub_group(ctx: Ctx) -> int:
    from ledgermq.remoting.codec import RemotingCommand
    from ledgermq.remoting.codes import RequestCode

    a = ctx.args
    group = a.group.strip()
    remove_offset = parse_bool(a.removeOffset)
    admin = await ctx.admin()
    addrs = await _target_addrs(ctx)
    for addr in addrs:
        cmd = RemotingCommand(
            code=RequestCode.DELETE_SUBSCRIPTIONGROUP,
            ext_fields={"groupName": group, "removeOffset": str(remove_offset).lower()},
        )
        await admin.instance.invoke_ok(addr, cmd, admin.timeout)
        if not ctx.json:
            where = f"cluster [{a.cluster}]" if a.cluster else f"broker [{addr}]"
            print(f"delete subscription group [{group}] from broker [{addr}] in {where} success.")
    deleted_topics: list[str] = []
    if a.cluster:
        existing = set(await admin.topic_list())
        for topic in (RETRY_PREFIX + group, DLQ_PREFIX + group):
            if topic in existing:
                await admin.delete_topic(topic, cluster=a.cluster)
                deleted_topics.append(topic)
                if not ctx.json:
                    print(f"delete topic [{topic}] from cluster [{a.cluster}] success.")
    if ctx.json:
        emit_json({"group": group, "brokers": addrs, "deletedTopics": deleted_topics})
    return 0


# --- messages ---------------------------------------------------------------------------------


def _setup_query_by_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--msgId", required=True, help="offsetMsgId(s), comma-separated")
    p.add_argument("-t", "--topic", help="topic, to fall back to a UNIQ_KEY lookup")


async def _view_one(ctx: Ctx, msg_id: str, topic: str | None) -> Any:
    from ledgermq.common.message import MessageDecodeError, parse_offset_msg_id

    admin = await ctx.admin()
    try:
        parse_offset_msg_id(msg_id)
    except (MessageDecodeError, ValueError):
        if topic:
            await _ensure_topic(ctx, topic)
            return await admin.query_message_by_unique_key(topic, msg_id)
        raise CommandError(
            f"{msg_id} is not an offsetMsgId (give -t to look it up as UNIQ_KEY)"
        ) from None
    return await admin.view_message(msg_id)


@command("queryMsgById", "Query Message by Id", _setup_query_by_id)
async def _query_by_id(ctx: Ctx) -> int:
    ids = [i.strip() for i in ctx.args.msgId.split(",") if i.strip()]
    if not ids:
        raise CommandError("no message id given")
    topic = ctx.args.topic.strip() if ctx.args.topic else None
    msgs = [await _view_one(ctx, i, topic) for i in ids]
    if ctx.json:
        emit_json(message_json(msgs[0]) if len(msgs) == 1 else [message_json(m) for m in msgs])
        return 0
    for n, m in enumerate(msgs):
        if n:
            print()
        print_message(m)
    return 0


def _setup_query_by_key(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--topic", required=True, help="topic")
    p.add_argument("-k", "--msgKey", dest="key", required=True, help="message key")
    p.add_argument("-b", "--beginTimestamp", type=int, default=0, help="begin timestamp (ms)")
    p.add_argument("-e", "--endTimestamp", type=int, help="end timestamp (ms)")
    p.add_argument("-c", "--maxNum", type=int, default=64, help="max number of messages")


@command("queryMsgByKey", "Query Message by Key", _setup_query_by_key)
async def _query_by_key(ctx: Ctx) -> int:
    a = ctx.args
    topic = a.topic.strip()
    await _ensure_topic(ctx, topic)
    admin = await ctx.admin()
    msgs = await admin.query_message_by_key(
        topic, a.key.strip(), max_num=a.maxNum, begin_ms=a.beginTimestamp, end_ms=a.endTimestamp
    )
    if ctx.json:
        emit_json([message_json(m) for m in msgs])
        return 0
    print(f"{'#Message ID':<50} {'#QID':>4} {'#Offset':>40}")
    for m in msgs:
        print(f"{m.msg_id:<50} {m.queue_id:>4} {m.queue_offset:>40}")
    return 0


def _setup_query_by_unique(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--msgId", required=True, help="UNIQ_KEY (the client's msgId)")
    p.add_argument("-t", "--topic", required=True, help="topic")


@command("queryMsgByUniqueKey", "Query Message by Unique key", _setup_query_by_unique)
async def _query_by_unique(ctx: Ctx) -> int:
    topic = ctx.args.topic.strip()
    await _ensure_topic(ctx, topic)
    admin = await ctx.admin()
    m = await admin.query_message_by_unique_key(topic, ctx.args.msgId.strip())
    if ctx.json:
        emit_json(message_json(m))
    else:
        print_message(m)
    return 0


def _setup_query_by_offset(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--topic", required=True, help="topic")
    p.add_argument("-b", "--brokerName", required=True, help="broker name")
    p.add_argument("-i", "--queueId", type=int, required=True, help="queue id")
    p.add_argument("-o", "--offset", type=int, required=True, help="queue offset")


@command("queryMsgByOffset", "Query Message by offset", _setup_query_by_offset)
async def _query_by_offset(ctx: Ctx) -> int:
    from ledgermq.client.message import MessageQueue

    a = ctx.args
    topic = a.topic.strip()
    route = await _ensure_topic(ctx, topic)
    broker = a.brokerName.strip()
    if route.broker(broker) is None:
        raise CommandError(f"broker {broker} does not serve topic {topic}")
    admin = await ctx.admin()
    m = await admin.query_message_by_queue_offset(MessageQueue(topic, broker, a.queueId), a.offset)
    if ctx.json:
        emit_json(message_json(m))
    else:
        print_message(m)
    return 0


def _setup_send_message(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--topic", required=True, help="topic")
    p.add_argument("-p", "--body", required=True, help="message body (UTF-8)")
    p.add_argument("-k", "--key", help="message keys")
    p.add_argument("-c", "--tags", help="message tags")
    p.add_argument("-b", "--broker", help="send to this broker name (with -i)")
    p.add_argument("-i", "--qid", type=int, help="send to this queue id (with -b)")


@command("sendMessage", "Send a message", _setup_send_message)
async def _send_message(ctx: Ctx) -> int:
    from ledgermq.client.message import Message, MessageQueue
    from ledgermq.client.producer import Producer

    a = ctx.args
    topic = a.topic.strip()
    if (a.broker is None) != (a.qid is None):
        raise CommandError("-b brokerName and -i queueId must be given together")
    queue = MessageQueue(topic, a.broker.strip(), a.qid) if a.broker is not None else None
    if not a.body:
        raise CommandError("the message body is empty")
    producer = Producer(
        f"TOOLS_PRODUCER_{int(time.time() * 1000)}",
        ctx.namesrv,
        send_timeout=ctx.args.timeout,
    )
    await producer.start()
    try:
        result = await producer.send(
            Message(topic, a.body.encode("utf-8"), tags=a.tags, keys=a.key), queue=queue
        )
    finally:
        await producer.shutdown()
    mq = result.message_queue
    out = {
        "brokerName": mq.broker_name,
        "queueId": mq.queue_id,
        "sendStatus": result.status.value,
        "msgId": result.msg_id,
        "offsetMsgId": result.offset_msg_id,
        "queueOffset": result.queue_offset,
    }
    if ctx.json:
        emit_json(out)
        return 0
    print(f"{'#Broker Name':<32}  {'#QID':<4}  {'#Send Result':<20}    #MsgId")
    print(f"{mq.broker_name:<32}  {mq.queue_id:<4}  {result.status.value:<20}    {result.msg_id}")
    return 0


# --- KV config --------------------------------------------------------------------------------


def _setup_update_kv(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--namespace", required=True, help="namespace")
    p.add_argument("-k", "--key", required=True, help="key")
    p.add_argument("-v", "--value", required=True, help="value")


@command("updateKvConfig", "Create or update KV config", _setup_update_kv)
async def _update_kv(ctx: Ctx) -> int:
    a = ctx.args
    admin = await ctx.admin()
    await admin.put_kv_config(a.namespace.strip(), a.key.strip(), a.value.strip())
    if ctx.json:
        emit_json({"namespace": a.namespace, "key": a.key, "value": a.value})
    else:
        print("update kv config in namespace success.")
    return 0


def _setup_delete_kv(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--namespace", required=True, help="namespace")
    p.add_argument("-k", "--key", required=True, help="key")


@command("deleteKvConfig", "Delete KV config", _setup_delete_kv)
async def _delete_kv(ctx: Ctx) -> int:
    a = ctx.args
    admin = await ctx.admin()
    await admin.delete_kv_config(a.namespace.strip(), a.key.strip())
    if ctx.json:
        emit_json({"namespace": a.namespace, "key": a.key, "deleted": True})
    else:
        print("delete kv config from namespace success.")
    return 0


def _setup_get_kv(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--namespace", required=True, help="namespace")
    p.add_argument("-k", "--key", help="key (omit: the whole namespace)")


@command("getKvConfig", "Get KV config (one key or a whole namespace)", _setup_get_kv)
async def _get_kv(ctx: Ctx) -> int:
    a = ctx.args
    ns = a.namespace.strip()
    admin = await ctx.admin()
    if a.key is not None:
        key = a.key.strip()
        value = await admin.get_kv_config(ns, key)
        if value is None:
            raise CommandError(f"no kv config {key} in namespace {ns}")
        if ctx.json:
            emit_json({"namespace": ns, "key": key, "value": value})
        else:
            print(value)
        return 0
    table = dict(sorted((await admin.kv_list(ns)).items()))
    if ctx.json:
        emit_json({"namespace": ns, "table": table})
    else:
        for k, v in table.items():
            print(f"{k:<32}: {v}")
    return 0


# --- entry point ------------------------------------------------------------------------------


def print_commands(file: Any = sys.stdout) -> None:
    print(
        "usage: ledgermq admin <command> [-n namesrvAddr] [options]  (-h for a command's help)",
        file=file,
    )
    print("\nThe commands are:", file=file)
    for name, cmd in sorted(COMMANDS.items(), key=lambda kv: kv[0].lower()):
        print(f"   {name:<24} {cmd.help}", file=file)
    print("\n-n defaults to $NAMESRV_ADDR; every command accepts --json.", file=file)


def build_parser(cmd: Command) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"ledgermq admin {cmd.name}", description=cmd.help)
    p.add_argument(
        "-n",
        "--namesrvAddr",
        dest="namesrv",
        metavar="ADDR",
        default=os.environ.get("NAMESRV_ADDR"),
        help="NameServer address list, ip:port;ip:port (default: $NAMESRV_ADDR)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")
    p.add_argument("--timeout", type=float, default=5.0, help="request timeout in seconds (5)")
    cmd.setup(p)
    return p


def join_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Lets option values start with '-' (`-a -message.type`, `-p -1`), as commons-cli does.

    argparse would read such a value as another option; `-a=-message.type` is unambiguous.
    """
    takes_value = {
        opt
        for action in parser._actions
        if action.nargs is None and action.option_strings
        for opt in action.option_strings
    }
    known = set(parser._option_string_actions)
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if (
            tok in takes_value
            and nxt is not None
            and nxt.startswith("-")
            and nxt.split("=", 1)[0] not in known
        ):
            out.append(f"{tok}={nxt}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def describe_error(exc: BaseException, args: argparse.Namespace, namesrv: str) -> str:
    from ledgermq.client.errors import MQBrokerError, MQClientError
    from ledgermq.common.message import MessageDecodeError
    from ledgermq.remoting.codes import ResponseCode

    if isinstance(exc, CommandError):
        return str(exc)
    if isinstance(exc, MQBrokerError):
        topic = getattr(args, "topic", None)
        if exc.code == ResponseCode.TOPIC_NOT_EXIST and topic:
            return f"topic {topic} does not exist"
        if exc.code == ResponseCode.QUERY_NOT_FOUND:
            return f"not found: {exc.remark or exc}"
        return str(exc)
    if isinstance(exc, MQClientError):
        text = str(exc)
        if text.startswith("no NameServer answered"):
            return f"cannot connect to NameServer {namesrv}: {text}"
        return text
    if isinstance(exc, MessageDecodeError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "request timed out"
    if isinstance(exc, OSError):
        return f"connection failed: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


async def _run(cmd: Command, args: argparse.Namespace, namesrv: str) -> int:
    ctx = Ctx(args, namesrv)
    try:
        return await cmd.handler(ctx)
    finally:
        try:
            await ctx.close()
        except Exception as exc:  # shutting down must not mask the real result
            log.debug("admin client shutdown failed: %s", exc)


def run(command: str, argv: list[str]) -> int:
    """Entry point from `ledgermq admin ...`: argv[0] is the mqadmin command name."""
    del command
    if not argv or argv[0] in ("-h", "--help", "help"):
        if len(argv) >= 2 and argv[0] == "help" and argv[1] in COMMANDS:
            build_parser(COMMANDS[argv[1]]).print_help()
            return 0
        print_commands()
        return 0
    name, rest = argv[0], argv[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        print(f"ledgermq admin: unknown command {name!r}\n", file=sys.stderr)
        print_commands(sys.stderr)
        return 2
    parser = build_parser(cmd)
    args = parser.parse_args(join_dash_values(parser, rest))
    namesrv = (args.namesrv or "").strip()
    prefix = f"ledgermq admin {name}"
    if not namesrv:
        print(
            f"{prefix}: no NameServer address: use -n ip:port or set NAMESRV_ADDR", file=sys.stderr
        )
        return 1
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("LEDGERMQ_DEBUG") else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return run_async(lambda: _run(cmd, args, namesrv))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ledgermq admin topicList | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        except OSError:
            pass
        return 0
    except Exception as exc:
        if os.environ.get("LEDGERMQ_DEBUG"):
            raise
        message = " ".join(describe_error(exc, args, namesrv).split())
        print(f"{prefix}: {message}", file=sys.stderr)
        return 1
