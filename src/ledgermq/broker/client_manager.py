"""Which producer and consumer clients are connected, by group, by connection.

Membership changes of a consumer group are reported through `on_consumer_change` so the
broker can tell the group's members to rebalance (NOTIFY_CONSUMER_IDS_CHANGED).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledgermq.broker.heartbeat import ConsumerData
from ledgermq.broker.subscription import SubscriptionData
from ledgermq.remoting.codes import LanguageCode
from ledgermq.remoting.connection import RemotingConnection


@dataclass(slots=True)
class ClientChannel:
    conn: RemotingConnection
    client_id: str
    language: int
    version: int
    last_update_ms: int

    def to_json(self) -> dict[str, Any]:
        try:
            language = LanguageCode(self.language).name
        except ValueError:
            language = "OTHER"
        return {
            "clientId": self.client_id,
            "clientAddr": self.conn.remote_address,
            "language": language,
            "version": self.version,
        }


@dataclass(slots=True)
class ConsumerGroupInfo:
    group_name: str
    consume_type: str = "CONSUME_PASSIVELY"
    message_model: str = "CLUSTERING"
    consume_from_where: str = "CONSUME_FROM_LAST_OFFSET"
    subscriptions: dict[str, SubscriptionData] = field(default_factory=dict)
    channels: dict[RemotingConnection, ClientChannel] = field(default_factory=dict)

    def client_ids(self) -> list[str]:
        return sorted({c.client_id for c in self.channels.values()})


ConsumerChange = Callable[[str, ConsumerGroupInfo], None]


class ClientManager:
    def __init__(self, on_consumer_change: ConsumerChange | None = None) -> None:
        self.producers: dict[str, dict[RemotingConnection, ClientChannel]] = {}
        self.consumers: dict[str, ConsumerGroupInfo] = {}
        self.on_consumer_change = on_consumer_change

    # --- producers -----------------------------------------------------------------
    def register_producer(self, group: str, channel: ClientChannel) -> None:
        channels = self.producers.setdefault(group, {})
        existing = channels.get(channel.conn)
        if existing is not None and existing.client_id == channel.client_id:
            existing.last_update_ms = channel.last_update_ms
        else:
            channels[channel.conn] = channel

    def unregister_producer(self, group: str, conn: RemotingConnection) -> None:
        channels = self.producers.get(group)
        if channels is not None:
            channels.pop(conn, None)
            if not channels:
                del self.producers[group]

    def producer_channels(self, group: str) -> list[ClientChannel]:
        return list(self.producers.get(group, {}).values())

    # --- consumers -----------------------------------------------------------------
    def register_consumer(self, data: ConsumerData, channel: ClientChannel) -> bool:
        """Adds or refreshes a member; True (and a change event) if membership or the
        subscriptions changed."""
        info = self.consumers.get(data.group_name)
        if info is None:
            info = self.consumers[data.group_name] = ConsumerGroupInfo(data.group_name)
        info.consume_type = data.consume_type
        info.message_model = data.message_model
        info.consume_from_where = data.consume_from_where
        existing = info.channels.get(channel.conn)
        changed = existing is None or existing.client_id != channel.client_id
        if changed:
            info.channels[channel.conn] = channel
        else:
            existing.last_update_ms = channel.last_update_ms
        new_subs = {s.topic: s for s in data.subscriptions}
        if {t: s.sub_string for t, s in new_subs.items()} != {
            t: s.sub_string for t, s in info.subscriptions.items()
        }:
            # Members must rebalance when what the group reads changes, too.
            info.subscriptions = new_subs
            changed = True
        if changed and self.on_consumer_change is not None:
            self.on_consumer_change(data.group_name, info)
        return changed

    def unregister_consumer(self, group: str, conn: RemotingConnection) -> None:
        info = self.consumers.get(group)
        if info is None or info.channels.pop(conn, None) is None:
            return
        if not info.channels:
            del self.consumers[group]
        if self.on_consumer_change is not None:
            self.on_consumer_change(group, info)

    def consumer_group(self, group: str) -> ConsumerGroupInfo | None:
        return self.consumers.get(group)

    def find_subscription(self, group: str, topic: str) -> SubscriptionData | None:
        info = self.consumers.get(group)
        return None if info is None else info.subscriptions.get(topic)

    # --- connections -----------------------------------------------------------------
    def connection_closed(self, conn: RemotingConnection) -> None:
        for group in [g for g, chans in self.producers.items() if conn in chans]:
            self.unregister_producer(group, conn)
        for group in [g for g, info in self.consumers.items() if conn in info.channels]:
            self.unregister_consumer(group, conn)

    def expired(self, now_ms: int, timeout_ms: int) -> list[RemotingConnection]:
        """Connections with no heartbeat for `timeout_ms` (they are then dropped)."""
        stale: set[RemotingConnection] = set()
        for chans in self.producers.values():
            stale.update(c.conn for c in chans.values() if now_ms - c.last_update_ms > timeout_ms)
        for info in self.consumers.values():
            stale.update(
                c.conn for c in info.channels.values() if now_ms - c.last_update_ms > timeout_ms
            )
        return list(stale)
