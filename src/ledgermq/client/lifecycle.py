"""What every client object shares: `async with` support, getting its ClientInstance
(given, from a registry, or its own), and for consumers the hooks the shared client
instance calls (heartbeat content, topics, rebalance nudges)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Self

from ledgermq.client.errors import MQClientError
from ledgermq.client.instance import ClientInstance, ClientRegistry


class Startable:
    """`async with X(...) as x:` starts x and shuts it down on the way out."""

    async def start(self) -> None:
        raise NotImplementedError

    async def shutdown(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


class InstanceClient(Startable):
    """A producer or consumer: it runs on a ClientInstance while started.

    Subclasses set `namesrv_addr`, `_given_instance`, `_registry`, `_instance_name` and
    `_instance`, and name their `ROLE` for the "not started" error.
    """

    ROLE = "client"
    namesrv_addr: str | list[str]
    _given_instance: ClientInstance | None
    _registry: ClientRegistry | None
    _instance_name: str | None
    _instance: ClientInstance | None

    @property
    def instance(self) -> ClientInstance:
        if self._instance is None:
            raise MQClientError(f"{self.ROLE} is not started")
        return self._instance

    def _acquire_instance(self) -> ClientInstance:
        """The instance to start on: the one given, the registry's shared one, or a new one."""
        if self._given_instance is not None:
            return self._given_instance
        if self._registry is not None:
            return self._registry.get(self.namesrv_addr, self._instance_name or "DEFAULT")
        return ClientInstance(self.namesrv_addr, instance_name=self._instance_name)


class ConsumerBase(InstanceClient):
    """Shared by the push and lite-pull consumers.

    Subclasses set `group`, `message_model`, `consume_from_where`, `subscriptions`,
    `_stopping` and `_rebalance_event`, and name their `CONSUME_TYPE` as Java's
    heartbeat spells it.
    """

    ROLE = "consumer"
    CONSUME_TYPE = ""
    group: str
    message_model: str
    consume_from_where: str
    subscriptions: dict[str, Any]
    _stopping: asyncio.Event
    _rebalance_event: asyncio.Event

    async def _sleep(self, seconds: float) -> bool:
        """Waits unless the consumer stops first; True if it is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    def heartbeat_data(self) -> dict[str, Any]:
        return {
            "groupName": self.group,
            "consumeType": self.CONSUME_TYPE,
            "messageModel": self.message_model,
            "consumeFromWhere": self.consume_from_where,
            "unitMode": False,
            "subscriptionDataSet": [s.to_json() for _, s in sorted(self.subscriptions.items())],
        }

    def subscribed_topics(self) -> set[str]:
        return set(self.subscriptions)

    def on_consumer_ids_changed(self) -> None:
        self._rebalance_event.set()
