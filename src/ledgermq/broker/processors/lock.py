"""LOCK_BATCH_MQ (41) / UNLOCK_BATCH_MQ (42) for orderly consumers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ledgermq.common.message import MessageQueue
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import ResponseCode
from ledgermq.remoting.connection import RemotingConnection
from ledgermq.remoting.errors import RemotingError

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker


def _parse(body: bytes) -> tuple[str, str, list[MessageQueue]]:
    try:
        obj: dict[str, Any] = json.loads(body)
        mqs = [MessageQueue.from_json(mq) for mq in obj.get("mqSet") or ()]
        return str(obj["consumerGroup"]), str(obj["clientId"]), mqs
    except (ValueError, KeyError, TypeError) as exc:
        raise RemotingError(ResponseCode.SYSTEM_ERROR, f"bad lock request body: {exc}") from None


class LockProcessor:
    def __init__(self, broker: Broker) -> None:
        self._b = broker

    def lock(self, conn: RemotingConnection, cmd: RemotingCommand):
        group, client_id, mqs = _parse(cmd.body)
        granted = self._b.locks.try_lock_batch(group, mqs, client_id)
        body = json.dumps({"lockOKMQSet": [mq.to_json() for mq in granted]}).encode()
        return cmd.make_response(ResponseCode.SUCCESS, body=body)

    def unlock(self, conn: RemotingConnection, cmd: RemotingCommand):
        group, client_id, mqs = _parse(cmd.body)
        self._b.locks.unlock_batch(group, mqs, client_id)
        return cmd.make_response(ResponseCode.SUCCESS)
