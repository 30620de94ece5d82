"""REGISTER_BROKER / UNREGISTER_BROKER towards every NameServer (PROTOCOL.md §2.5)."""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BrokerIdentity:
    cluster_name: str
    broker_name: str
    broker_id: int
    broker_addr: str
    ha_server_addr: str


@dataclass(slots=True)
class RegisterResult:
    namesrv_addr: str
    ha_server_addr: str | None
    master_addr: str | None


class NamesrvRegistrar:
    def __init__(
        self,
        client: RemotingClient,
        namesrv_addrs: Callable[[], list[str]],
        identity: Callable[[], BrokerIdentity],
        topic_wrapper: Callable[[], dict[str, Any]],
        timeout_s: float = 3.0,
    ) -> None:
        self._client = client
        self._namesrv_addrs = namesrv_addrs
        self._identity = identity
        self._topic_wrapper = topic_wrapper
        self.timeout_s = timeout_s

    def _register_command(self) -> RemotingCommand:
        me = self._identity()
        body = json.dumps(
            {
                "topicConfigSerializeWrapper": self._topic_wrapper(),
                "filterServerList": [],
            },
            separators=(",", ":"),
        ).encode()
        return RemotingCommand(
            code=RequestCode.REGISTER_BROKER,
            ext_fields={
                "brokerName": me.broker_name,
                "brokerAddr": me.broker_addr,
                "clusterName": me.cluster_name,
                "haServerAddr": me.ha_server_addr,
                "brokerId": str(me.broker_id),
                "compressed": "false",
                "enableActingMaster": "false",
                "bodyCrc32": str(zlib.crc32(body) & 0x7FFFFFFF),
            },
            body=body,
        )

    async def _register_one(self, addr: str, cmd: RemotingCommand) -> RegisterResult | None:
        # Each NameServer gets its own command: the connection stamps its own opaque.
        request = RemotingCommand(code=cmd.code, ext_fields=dict(cmd.ext_fields), body=cmd.body)
        try:
            reply = await self._client.invoke(addr, request, self.timeout_s)
        except Exception as exc:
            log.warning("register broker to name server %s failed: %s", addr, exc)
            return None
        if reply.code != ResponseCode.SUCCESS:
            log.warning(
                "register broker to name server %s refused: %s %s", addr, reply.code, reply.remark
            )
            return None
        return RegisterResult(
            addr, reply.ext_fields.get("haServerAddr"), reply.ext_fields.get("masterAddr")
        )

    async def register_all(self) -> list[RegisterResult]:
        addrs = self._namesrv_addrs()
        if not addrs:
            return []
        cmd = self._register_command()
        results = await asyncio.gather(*(self._register_one(a, cmd) for a in addrs))
        return [r for r in results if r is not None]

    async def unregister_all(self) -> None:
        me = self._identity()
        header = {
            "brokerName": me.broker_name,
            "brokerAddr": me.broker_addr,
            "clusterName": me.cluster_name,
            "brokerId": str(me.broker_id),
        }

        async def one(addr: str) -> None:
            try:
                reply = await self._client.invoke(
                    addr,
                    RemotingCommand(code=RequestCode.UNREGISTER_BROKER, ext_fields=dict(header)),
                    self.timeout_s,
                )
                if reply.code != ResponseCode.SUCCESS:
                    log.warning("unregister broker from %s refused: %s", addr, reply.remark)
            except Exception as exc:
                log.warning("unregister broker from name server %s failed: %s", addr, exc)

        await asyncio.gather(*(one(a) for a in self._namesrv_addrs()))
