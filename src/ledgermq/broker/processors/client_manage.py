"""Client membership: HEART_BEAT (34), UNREGISTER_CLIENT (35), consumer list (38),
CHECK_CLIENT_CONFIG (46), connection lists (203, 204)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ledgermq.broker.client_manager import ClientChannel
from ledgermq.broker.heartbeat import HeartbeatError, parse_heartbeat
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import ResponseCode
from ledgermq.remoting.connection import RemotingConnection
from ledgermq.remoting.errors import RemotingError, RemotingException
from ledgermq.remoting.headers import get_str, req_str

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker


class ClientManageProcessor:
    def __init__(self, broker: Broker) -> None:
        self._b = broker

    def heartbeat(self, conn: RemotingConnection, cmd: RemotingCommand):
        try:
            hb = parse_heartbeat(cmd.body)
        except HeartbeatError as exc:
            raise RemotingError(ResponseCode.SYSTEM_ERROR, str(exc)) from None
        b = self._b
        now = b.clock_ms()
        conn.attributes["clientId"] = hb.client_id
        for consumer in hb.consumers:
            group_cfg = b.subscription_groups.find_or_create(consumer.group_name)
            if group_cfg is not None:
                # Consumers read their retry topic too; it must exist before they pull it.
                b.topic_config.create_system_group_topic(
                    "%RETRY%" + consumer.group_name, max(1, group_cfg.retry_queue_nums), 6
                )
            b.clients.register_consumer(
                consumer, ClientChannel(conn, hb.client_id, cmd.language, cmd.version, now)
            )
        for group in hb.producer_groups:
            b.clients.register_producer(
                group, ClientChannel(conn, hb.client_id, cmd.language, cmd.version, now)
            )
        return cmd.make_response(ResponseCode.SUCCESS)

    def unregister(self, conn: RemotingConnection, cmd: RemotingCommand):
        producer = get_str(cmd, "producerGroup")
        consumer = get_str(cmd, "consumerGroup")
        if producer:
            self._b.clients.unregister_producer(producer, conn)
        if consumer:
            self._b.clients.unregister_consumer(consumer, conn)
        return cmd.make_response(ResponseCode.SUCCESS)

    def consumer_list(self, conn: RemotingConnection, cmd: RemotingCommand):
        group = req_str(cmd, "consumerGroup")
        info = self._b.clients.consumer_group(group)
        if info is None:
            return cmd.make_response(
                ResponseCode.SYSTEM_ERROR, f"no consumer for this group, {group}"
            )
        body = json.dumps({"consumerIdList": info.client_ids()}).encode()
        return cmd.make_response(ResponseCode.SUCCESS, body=body)

    def check_client_config(self, conn: RemotingConnection, cmd: RemotingCommand):
        return cmd.make_response(ResponseCode.SUCCESS)

    def consumer_connections(self, conn: RemotingConnection, cmd: RemotingCommand):
        group = req_str(cmd, "consumerGroup")
        info = self._b.clients.consumer_group(group)
        if info is None or not info.channels:
            return cmd.make_response(
                ResponseCode.CONSUMER_NOT_ONLINE, "the consumer group not online"
            )
        body = {
            "connectionSet": [c.to_json() for c in info.channels.values()],
            "subscriptionTable": {t: s.to_json() for t, s in info.subscriptions.items()},
            "consumeType": info.consume_type,
            "messageModel": info.message_model,
            "consumeFromWhere": info.consume_from_where,
        }
        return cmd.make_response(ResponseCode.SUCCESS, body=json.dumps(body).encode())

    def producer_connections(self, conn: RemotingConnection, cmd: RemotingCommand):
        group = req_str(cmd, "producerGroup")
        channels = self._b.clients.producer_channels(group)
        if not channels:
            return cmd.make_response(ResponseCode.SYSTEM_ERROR, "the producer group not exist")
        body = {"connectionSet": [c.to_json() for c in channels]}
        return cmd.make_response(ResponseCode.SUCCESS, body=json.dumps(body).encode())

    async def consumer_running_info(
        self, conn: RemotingConnection, cmd: RemotingCommand
    ) -> RemotingCommand:
        """GET_CONSUMER_RUNNING_INFO (307) from an admin tool: forwarded to the consumer
        on its own connection, and its answer relayed (mqadmin consumerProgress uses it
        to show which client holds which queue)."""
        group = req_str(cmd, "consumerGroup")
        client_id = req_str(cmd, "clientId")
        info = self._b.clients.consumer_group(group)
        channel = None
        if info is not None:
            channel = next((c for c in info.channels.values() if c.client_id == client_id), None)
        if channel is None or not channel.conn.is_open:
            raise RemotingError(
                ResponseCode.CONSUMER_NOT_ONLINE,
                f"the consumer <{group}> <{client_id}> not online",
            )
        forward = RemotingCommand(code=cmd.code, ext_fields=dict(cmd.ext_fields))
        try:
            answer = await channel.conn.request(forward, timeout=5.0)
        except RemotingException as exc:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"consumer {client_id} did not answer: {exc}"
            ) from None
        return cmd.make_response(answer.code, answer.remark, dict(answer.ext_fields), answer.body)
