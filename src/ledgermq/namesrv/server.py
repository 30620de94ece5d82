"""The NameServer: asyncio shell around the pure `RouteTable` and the KV config.

Many instances may live in one process (tests run whole clusters): all state is on the
instance, the port comes from the config or the constructor (0 = any free port).

Handlers are plain functions returning a reply at once: every NameServer operation is a
short in-memory table update, so no task is created per request. The one disk write
(KV config, an admin operation) happens inline too, which keeps KV updates ordered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

from ledgermq.common import fastjson
from ledgermq.common.config import ConfigError, format_properties, parse_properties, to_properties
from ledgermq.common.route_data import DataVersion, QueueData, TopicConfig
from ledgermq.namesrv.config import NamesrvConfig
from ledgermq.namesrv.kv_config import NAMESPACE_ORDER_TOPIC_CONFIG, KvConfigManager
from ledgermq.namesrv.route_table import BrokerRegistration, RouteTable
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import VERSION_STANDARD_JSON, RequestCode, ResponseCode
from ledgermq.remoting.connection import Dispatcher, RemotingConnection
from ledgermq.remoting.errors import RemotingError
from ledgermq.remoting.headers import get_bool, get_int, get_str, req_int, req_str
from ledgermq.remoting.server import RemotingServer
from ledgermq.storage.disk import Disk

log = logging.getLogger(__name__)

_OK = ResponseCode.SUCCESS


def _monotonic_ms() -> int:
    # Liveness is about elapsed time, so wall-clock jumps must not expire brokers.
    return int(time.monotonic() * 1000)


def _decode_body(cmd: RemotingCommand, what: str) -> Any:
    try:
        return fastjson.decode(cmd.body)
    except fastjson.JsonFormatError as exc:
        raise RemotingError(ResponseCode.SYSTEM_ERROR, f"malformed {what} body: {exc}") from None


def crc32_matches(body: bytes, sent: int) -> bool:
    """RocketMQ sends ``CRC32 & 0x7FFFFFFF`` (UtilAll.crc32); other peers may send the
    full unsigned value or Java's signed int of it. Accept all three spellings."""
    crc = zlib.crc32(body)
    return sent in (crc, crc & 0x7FFFFFFF, crc - (1 << 32))


def parse_register_body(
    body: bytes,
) -> tuple[dict[str, TopicConfig], DataVersion, list[str]]:
    """REGISTER_BROKER body -> (topic configs, data version, filter servers)."""
    if not body:
        return {}, DataVersion(), []
    obj = fastjson.decode(body)
    if not isinstance(obj, dict):
        raise ValueError("body is not a JSON object")
    # Brokers before 3.0.11 sent the TopicConfigSerializeWrapper itself.
    wrapper = obj.get("topicConfigSerializeWrapper", obj) or {}
    if not isinstance(wrapper, dict):
        raise ValueError("topicConfigSerializeWrapper is not an object")
    table = wrapper.get("topicConfigTable") or {}
    if not isinstance(table, dict):
        raise ValueError("topicConfigTable is not an object")
    topics = {
        str(name): TopicConfig.from_json(cfg, str(name))
        for name, cfg in table.items()
        if isinstance(cfg, dict)
    }
    version = DataVersion.from_json(wrapper.get("dataVersion"))
    filters = [str(s) for s in obj.get("filterServerList") or []]
    return topics, version, filters


class NameServer:
    def __init__(
        self,
        config: NamesrvConfig | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        disk: Disk | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.config = config if config is not None else NamesrvConfig()
        self.host = host if host is not None else self.config.bind_address
        self._clock = clock or _monotonic_ms
        self.route_table = RouteTable(
            support_acting_master=self.config.support_acting_master,
            delete_topic_with_broker_registration=(
                self.config.delete_topic_with_broker_registration
            ),
            default_timeout_ms=self.config.broker_channel_expired_time,
        )
        self.kv_config = KvConfigManager(self.config.resolved_kv_config_path(), disk)
        self.dispatcher = Dispatcher()
        self._register_processors()
        self.remoting = RemotingServer(
            self.dispatcher,
            self.host,
            self.config.listen_port if port is None else port,
            max_frame_size=self.config.max_frame_size,
            name="namesrv",
        )
        self.remoting.add_close_listener(self._on_connection_closed)
        self._scan_task: asyncio.Task[None] | None = None
        self._started_ms = 0

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self.kv_config.load()
        await self.remoting.start()
        self._started_ms = self._clock()
        self._scan_task = asyncio.get_running_loop().create_task(self._scan_loop())
        log.info("NameServer started at %s", self.address)

    async def stop(self) -> None:
        if self._scan_task is not None:
            self._scan_task.cancel()
            try:
                await self._scan_task
            except asyncio.CancelledError:
                pass
            self._scan_task = None
        await self.remoting.stop()
        log.info("NameServer at %s stopped", self.address)

    @property
    def port(self) -> int:
        return self.remoting.port

    @property
    def address(self) -> str:
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        return f"{host}:{self.port}"

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.scan_not_active_broker_interval / 1000)
            try:
                self.scan_not_active_brokers()
            except Exception:
                log.exception("scanning for inactive brokers failed")

    def scan_not_active_brokers(self) -> int:
        expired = self.route_table.scan_not_active(self._clock())
        for broker in expired:
            channel = broker.channel
            if isinstance(channel, RemotingConnection):
                # Its live entry is gone already, so the close listener finds nothing.
                channel.close()
        return len(expired)

    def _on_connection_closed(self, conn: RemotingConnection) -> None:
        for req in self.route_table.on_channel_destroy(conn):
            log.info(
                "broker %s[%d] at %s unregistered: connection %s closed",
                req.broker_name,
                req.broker_id,
                req.broker_addr,
                conn.remote_address,
            )

    # -- processors -------------------------------------------------------------------

    def _register_processors(self) -> None:
        handlers: dict[int, Callable[[RemotingConnection, RemotingCommand], RemotingCommand]] = {
            RequestCode.PUT_KV_CONFIG: self._put_kv_config,
            RequestCode.GET_KV_CONFIG: self._get_kv_config,
            RequestCode.DELETE_KV_CONFIG: self._delete_kv_config,
            RequestCode.REGISTER_BROKER: self._register_broker,
            RequestCode.UNREGISTER_BROKER: self._unregister_broker,
            RequestCode.GET_ROUTEINFO_BY_TOPIC: self._get_route_info,
            RequestCode.GET_BROKER_CLUSTER_INFO: self._get_cluster_info,
            RequestCode.WIPE_WRITE_PERM_OF_BROKER: self._wipe_write_perm,
            RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER: self._get_all_topic_list,
            RequestCode.DELETE_TOPIC_IN_NAMESRV: self._delete_topic,
            RequestCode.REGISTER_TOPIC_IN_NAMESRV: self._register_topic,
            RequestCode.GET_KVLIST_BY_NAMESPACE: self._get_kv_list,
            RequestCode.GET_TOPICS_BY_CLUSTER: self._get_topics_by_cluster,
            RequestCode.UPDATE_NAMESRV_CONFIG: self._update_config,
            RequestCode.GET_NAMESRV_CONFIG: self._get_config,
            RequestCode.QUERY_DATA_VERSION: self._query_data_version,
            RequestCode.ADD_WRITE_PERM_OF_BROKER: self._add_write_perm,
            RequestCode.GET_BROKER_MEMBER_GROUP: self._get_broker_member_group,
            RequestCode.BROKER_HEARTBEAT: self._broker_heartbeat,
        }
        for code, handler in handlers.items():
            self.dispatcher.register(code, handler)

    # KV config ------------------------------------------------------------------------

    def _put_kv_config(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        namespace, key = req_str(cmd, "namespace"), req_str(cmd, "key")
        value = get_str(cmd, "value")
        if value is None:
            raise RemotingError(ResponseCode.SYSTEM_ERROR, "missing mandatory header field 'value'")
        self.kv_config.put(namespace, key, value)
        return cmd.make_response(_OK)

    def _get_kv_config(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        namespace, key = req_str(cmd, "namespace"), req_str(cmd, "key")
        value = self.kv_config.get(namespace, key)
        if value is None:
            return cmd.make_response(
                ResponseCode.QUERY_NOT_FOUND, f"No config item, Namespace: {namespace} Key: {key}"
            )
        return cmd.make_response(_OK, ext_fields={"value": value})

    def _delete_kv_config(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        self.kv_config.delete(req_str(cmd, "namespace"), req_str(cmd, "key"))
        return cmd.make_response(_OK)

    def _get_kv_list(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        namespace = req_str(cmd, "namespace")
        table = self.kv_config.get_namespace(namespace)
        if table is None:
            return cmd.make_response(
                ResponseCode.QUERY_NOT_FOUND, f"No config item, Namespace: {namespace}"
            )
        return cmd.make_response(_OK, body=fastjson.encode({"table": table}))

    # Broker registration ------------------------------------------------------------

    def _register_broker(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        if get_bool(cmd, "compressed"):
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR,
                "compressed REGISTER_BROKER bodies are not supported; "
                "set compressedRegister=false on the broker",
            )
        crc = get_int(cmd, "bodyCrc32", 0) or 0
        if crc != 0 and not crc32_matches(cmd.body, crc):
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR,
                f"crc32 not match: header bodyCrc32={crc}, body crc32={zlib.crc32(cmd.body)}",
            )
        try:
            topics, version, filters = parse_register_body(cmd.body)
        except (ValueError, TypeError, AttributeError) as exc:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"malformed REGISTER_BROKER body: {exc}"
            ) from None
        enable_acting = cmd.ext_fields.get("enableActingMaster")
        reg = BrokerRegistration(
            cluster=req_str(cmd, "clusterName"),
            broker_addr=req_str(cmd, "brokerAddr"),
            broker_name=req_str(cmd, "brokerName"),
            broker_id=req_int(cmd, "brokerId"),
            ha_server_addr=get_str(cmd, "haServerAddr"),
            zone_name=get_str(cmd, "__ZONE_NAME"),
            timeout_ms=get_int(cmd, "heartbeatTimeoutMillis"),
            enable_acting_master=(
                None if enable_acting in (None, "", "null") else get_bool(cmd, "enableActingMaster")
            ),
            topic_configs=topics,
            data_version=version,
            filter_servers=filters,
        )
        result = self.route_table.register_broker(reg, self._clock(), conn)
        if result is None:
            return cmd.make_response(ResponseCode.SYSTEM_ERROR, "register broker failed")
        log.debug(
            "broker %s %s[%d] at %s registered %d topics (dataVersion %s)",
            reg.cluster,
            reg.broker_name,
            reg.broker_id,
            reg.broker_addr,
            len(topics),
            version,
        )
        headers: dict[str, str] = {}
        if result.ha_server_addr is not None:
            headers["haServerAddr"] = result.ha_server_addr
        if result.master_addr is not None:
            headers["masterAddr"] = result.master_addr
        body = b""
        if self.config.return_order_topic_config_to_broker:
            order = self.kv_config.get_namespace(NAMESPACE_ORDER_TOPIC_CONFIG) or {}
            body = fastjson.encode({"table": order})
        return cmd.make_response(_OK, ext_fields=headers, body=body)

    def _unregister_broker(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        # Java queues these for a batch thread; on one event loop doing it now is
        # equivalent and keeps the table consistent with the reply.
        self.route_table.unregister_broker(
            req_str(cmd, "clusterName"),
            req_str(cmd, "brokerAddr"),
            req_str(cmd, "brokerName"),
            req_int(cmd, "brokerId"),
        )
        return cmd.make_response(_OK)

    def _query_data_version(
        self, conn: RemotingConnection, cmd: RemotingCommand
    ) -> RemotingCommand:
        cluster, addr = req_str(cmd, "clusterName"), req_str(cmd, "brokerAddr")
        req_str(cmd, "brokerName")
        req_int(cmd, "brokerId")
        obj = _decode_body(cmd, "QUERY_DATA_VERSION") if cmd.body else None
        try:
            version = DataVersion.from_json(obj if isinstance(obj, dict) else None)
        except (TypeError, ValueError) as exc:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"malformed QUERY_DATA_VERSION body: {exc}"
            ) from None
        table = self.route_table
        changed = table.is_broker_topic_config_changed(cluster, addr, version)
        table.update_broker_info_update_timestamp(cluster, addr, self._clock())
        stored = table.query_broker_topic_config(cluster, addr)
        return cmd.make_response(
            _OK,
            ext_fields={"changed": "true" if changed else "false"},
            body=fastjson.encode(stored) if stored is not None else b"",
        )

    def _broker_heartbeat(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        self.route_table.update_broker_info_update_timestamp(
            req_str(cmd, "clusterName"), req_str(cmd, "brokerAddr"), self._clock()
        )
        return cmd.make_response(_OK)

    # Routes and listings ------------------------------------------------------------

    def _ready(self) -> bool:
        if not self.config.need_wait_for_service:
            return True
        return self._clock() - self._started_ms >= self.config.wait_seconds_for_service * 1000

    def _get_route_info(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        topic = req_str(cmd, "topic")
        if not self._ready():
            return cmd.make_response(ResponseCode.SYSTEM_ERROR, "name server not ready")
        route = self.route_table.pickup_topic_route_data(topic)
        if route is None:
            return cmd.make_response(
                ResponseCode.TOPIC_NOT_EXIST,
                f"No topic route info in name server for the topic: {topic}",
            )
        if self.config.order_message_enable:
            route.order_topic_conf = self.kv_config.get(NAMESPACE_ORDER_TOPIC_CONFIG, topic)
        standard = cmd.version >= VERSION_STANDARD_JSON or get_bool(cmd, "acceptStandardJsonOnly")
        return cmd.make_response(_OK, body=fastjson.encode(route, standard=standard))

    def _get_cluster_info(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        # Always fastjson's unquoted form: every client parses it (PROTOCOL.md 3.5).
        body = fastjson.encode(self.route_table.cluster_info(), standard=False)
        return cmd.make_response(_OK, body=body)

    def _get_all_topic_list(
        self, conn: RemotingConnection, cmd: RemotingCommand
    ) -> RemotingCommand:
        if not self.config.enable_all_topic_list:
            return cmd.make_response(ResponseCode.SYSTEM_ERROR, "disable")
        body = fastjson.encode({"topicList": self.route_table.all_topics()})
        return cmd.make_response(_OK, body=body)

    def _get_topics_by_cluster(
        self, conn: RemotingConnection, cmd: RemotingCommand
    ) -> RemotingCommand:
        if not self.config.enable_topic_list:
            return cmd.make_response(ResponseCode.SYSTEM_ERROR, "disable")
        topics = self.route_table.topics_by_cluster(req_str(cmd, "cluster"))
        return cmd.make_response(_OK, body=fastjson.encode({"topicList": topics}))

    def _get_broker_member_group(
        self, conn: RemotingConnection, cmd: RemotingCommand
    ) -> RemotingCommand:
        group = self.route_table.broker_member_group(
            req_str(cmd, "clusterName"), req_str(cmd, "brokerName")
        )
        body = fastjson.encode({"brokerMemberGroup": group}, standard=False)
        return cmd.make_response(_OK, body=body)

    # Topic and broker admin ---------------------------------------------------------

    def _delete_topic(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        self.route_table.delete_topic(req_str(cmd, "topic"), get_str(cmd, "clusterName"))
        return cmd.make_response(_OK)

    def _register_topic(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        topic = req_str(cmd, "topic")
        if not cmd.body:
            return cmd.make_response(_OK)
        obj = _decode_body(cmd, "REGISTER_TOPIC_IN_NAMESRV")
        try:
            queue_datas = [QueueData.from_json(q) for q in (obj or {}).get("queueDatas") or []]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"malformed REGISTER_TOPIC_IN_NAMESRV body: {exc}"
            ) from None
        if queue_datas and not self.route_table.register_topic(topic, queue_datas):
            return cmd.make_response(
                ResponseCode.SYSTEM_ERROR,
                f"register topic {topic} refused: its queues name unregistered brokers",
            )
        return cmd.make_response(_OK)

    def _wipe_write_perm(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        name = req_str(cmd, "brokerName")
        count = self.route_table.wipe_write_perm_of_broker(name)
        log.info(
            "wiped write perm of broker %s: %d topics (from %s)", name, count, conn.remote_address
        )
        return cmd.make_response(_OK, ext_fields={"wipeTopicCount": str(count)})

    def _add_write_perm(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        name = req_str(cmd, "brokerName")
        count = self.route_table.add_write_perm_of_broker(name)
        log.info(
            "added write perm of broker %s: %d topics (from %s)", name, count, conn.remote_address
        )
        return cmd.make_response(_OK, ext_fields={"addTopicCount": str(count)})

    # Config ---------------------------------------------------------------------------

    def _update_config(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        if not cmd.body:
            return cmd.make_response(_OK)
        try:
            props = parse_properties(cmd.body.decode("utf-8"))
        except UnicodeDecodeError:
            raise RemotingError(ResponseCode.SYSTEM_ERROR, "config body is not UTF-8") from None
        if props.keys() & self.config.black_listed_keys():
            return cmd.make_response(
                ResponseCode.NO_PERMISSION, "Can not update config in black list."
            )
        try:
            updated = self.config.updated(props)
        except ConfigError as exc:
            raise RemotingError(ResponseCode.SYSTEM_ERROR, str(exc)) from None
        # Copy into the live object: the scan loop and handlers read it on every use.
        for f in dataclasses.fields(updated):
            setattr(self.config, f.name, getattr(updated, f.name))
        self.route_table.support_acting_master = self.config.support_acting_master
        self.route_table.delete_topic_with_broker_registration = (
            self.config.delete_topic_with_broker_registration
        )
        self.route_table.default_timeout_ms = self.config.broker_channel_expired_time
        log.info("NameServer config updated by %s: %s", conn.remote_address, props)
        return cmd.make_response(_OK)

    def _get_config(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        body = format_properties(to_properties(self.config)).encode("utf-8")
        return cmd.make_response(_OK, body=body)
