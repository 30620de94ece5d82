"""A slave's copy of its master's metadata (RocketMQ's SlaveSynchronize).

Messages reach a slave through HA replication, but the metadata files do not: topics,
consumer offsets, delay-level progress and subscription groups live only in the master's
config directory. A slave pulls them over remoting (codes 21, 43, 45, 201) about every
10 s, so that when it serves reads, or is promoted, it has the master's view.

A failed round is logged and forgotten: the next round retries, and a slave whose master
is gone must keep running on what it last synced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ledgermq.broker.subscription_group import SubscriptionGroupConfig
from ledgermq.common import fastjson
from ledgermq.common.route_data import DataVersion, TopicConfig
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.errors import RemotingException

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker

log = logging.getLogger(__name__)

# RocketMQ's BrokerOuterAPI uses 3 s for each of these calls.
DEFAULT_TIMEOUT_S = 3.0
# BrokerController schedules syncAll every 10 s.
DEFAULT_INTERVAL_S = 10.0


class SyncBodyError(ValueError):
    """The master answered with a body we cannot read."""


@dataclass(slots=True)
class SlaveSync:
    broker: Broker
    timeout_s: float = DEFAULT_TIMEOUT_S
    rounds: int = 0
    # True where offsets, topics and delay progress reach the slave through a DLedger
    # group's log (copying them too could undo newer changes the log already applied)
    log_replicated: bool = False
    # Only the first failure of a streak is a warning: a master that is down would
    # otherwise log the same thing every 10 s for as long as it stays down.
    _failing: bool = field(default=False, repr=False)

    # --- the loop -----------------------------------------------------------------
    async def run(
        self, master_addr: Callable[[], str | None], interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        """Syncs every `interval_s` while `master_addr()` names a master; never returns
        (cancel the task to stop it)."""
        while True:
            addr = master_addr()
            if addr:
                try:
                    await self.sync_once(addr)
                except Exception:
                    # sync_once catches what it expects; anything else is a bug, but it
                    # must not end the loop and leave the slave unsynced for good.
                    log.exception("slave sync from %s failed unexpectedly", addr)
            await asyncio.sleep(interval_s)

    async def sync_once(self, master_addr: str) -> None:
        """One round: topics, consumer offsets, delay offsets, subscription groups, in
        RocketMQ's order. Each part is independent (a bad body in one does not stop the
        others), but an unreachable master ends the round at once rather than paying
        the connect timeout four times. Never raises, except on cancellation."""
        if master_addr == self.broker.address:
            # We are the master ourselves (e.g. just promoted, NameServer not yet aware).
            return
        parts: tuple[tuple[str, int, Callable[[Any], None]], ...] = (
            ("topic config", RequestCode.GET_ALL_TOPIC_CONFIG, self._apply_topics),
            ("consumer offsets", RequestCode.GET_ALL_CONSUMER_OFFSET, self._apply_offsets),
            ("delay offsets", RequestCode.GET_ALL_DELAY_OFFSET, self._apply_delay_offsets),
            (
                "subscription groups",
                RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
                self._apply_groups,
            ),
        )
        ok = True
        for what, code, apply in parts:
            if self.log_replicated and code != RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG:
                continue
            try:
                body = await self._fetch(master_addr, code)
                apply(body)
            except RemotingException as exc:
                self._report_unreachable(master_addr, exc)
                return
            except (ValueError, TypeError, KeyError) as exc:  # SyncBodyError, JSON errors
                ok = False
                log.warning("slave sync of %s from %s: bad reply: %s", what, master_addr, exc)
            except OSError as exc:
                # Disk trouble while persisting: the in-memory copy is still the master's,
                # and the next round writes again.
                ok = False
                log.warning("slave sync of %s from %s: cannot persist: %s", what, master_addr, exc)
        self.rounds += 1
        if self._failing and ok:
            log.info("slave sync from %s works again", master_addr)
            self._failing = False

    def _report_unreachable(self, master_addr: str, exc: Exception) -> None:
        if self._failing:
            log.debug("slave sync: master %s still unreachable: %s", master_addr, exc)
        else:
            log.warning("slave sync: master %s unreachable: %s", master_addr, exc)
            self._failing = True

    async def _fetch(self, master_addr: str, code: int) -> dict[str, Any]:
        reply = await self.broker.outer_client.invoke(
            master_addr, RemotingCommand(code=code), self.timeout_s
        )
        if reply.code != ResponseCode.SUCCESS:
            raise SyncBodyError(f"response code {reply.code}: {reply.remark or ''}")
        # fastjson, not json: a Java master writes Integer map keys bare ({0:12}).
        obj = fastjson.loads(reply.body or b"")
        if not isinstance(obj, dict):
            raise SyncBodyError("body is not a JSON object")
        return obj

    # --- applying each body -------------------------------------------------------
    def _apply_topics(self, body: dict[str, Any]) -> None:
        raw_table = _object(body, "topicConfigTable")
        table: dict[str, TopicConfig] = {}
        for name, raw in raw_table.items():
            if not isinstance(raw, dict):
                raise SyncBodyError(f"topic {name!r} is not an object")
            # The map key is authoritative; topicName inside may be missing (old masters).
            cfg = TopicConfig.from_json(raw, str(name))
            cfg.topic_name = str(name)
            table[str(name)] = cfg
        if self.broker.topic_config.replace_all(table, _version(body)):
            log.info("slave sync: topic config updated from master (%d topics)", len(table))

    def _apply_offsets(self, body: dict[str, Any]) -> None:
        table = {
            str(key): {int(q): int(o) for q, o in _mapping(queues, key).items()}
            for key, queues in _object(body, "offsetTable").items()
        }
        if self.broker.consumer_offsets.merge_all(table, _version(body)):
            log.debug("slave sync: consumer offsets updated from master")

    def _apply_delay_offsets(self, body: dict[str, Any]) -> None:
        offsets = {int(level): int(o) for level, o in _object(body, "offsetTable").items()}
        if self.broker.schedule.replace_offsets(offsets, _version(body)):
            log.debug("slave sync: delay offsets updated from master")

    def _apply_groups(self, body: dict[str, Any]) -> None:
        table: dict[str, SubscriptionGroupConfig] = {}
        for name, raw in _object(body, "subscriptionGroupTable").items():
            table[str(name)] = SubscriptionGroupConfig.from_json(
                {**_mapping(raw, name), "groupName": str(name)}
            )
        if self.broker.subscription_groups.replace_all(table, _version(body)):
            log.info("slave sync: subscription groups updated from master (%d)", len(table))


def _object(body: dict[str, Any], key: str) -> dict[Any, Any]:
    # Every master wrapper carries its table (Java initialises it, so it is never
    # null); a reply without one is junk, and reading it as "empty" would wipe ours.
    if not isinstance(body.get(key), dict):
        raise SyncBodyError(f"{key} missing or not a JSON object")
    return body[key]


def _mapping(value: Any, what: object) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SyncBodyError(f"{what!s} is not a JSON object")
    return value


def _version(body: dict[str, Any]) -> DataVersion:
    raw = body.get("dataVersion")
    if raw is not None and not isinstance(raw, dict):
        raise SyncBodyError("dataVersion is not a JSON object")
    return DataVersion.from_json(raw)
