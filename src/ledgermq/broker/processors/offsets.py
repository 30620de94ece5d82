"""Consumer offsets and queue offsets: codes 14, 15, 29, 30, 31, 32, 43, 45."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ledgermq.dledger.member import MemberError
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import ResponseCode
from ledgermq.remoting.connection import RemotingConnection
from ledgermq.remoting.headers import get_bool, req_int, req_str

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker


def _ok(cmd: RemotingCommand, **ext: object) -> RemotingCommand:
    return cmd.make_response(ResponseCode.SUCCESS, None, {k: str(v) for k, v in ext.items()})


class OffsetProcessor:
    def __init__(self, broker: Broker) -> None:
        self._b = broker

    def query_consumer_offset(self, conn: RemotingConnection, cmd: RemotingCommand):
        group = req_str(cmd, "consumerGroup")
        topic = req_str(cmd, "topic")
        queue_id = req_int(cmd, "queueId")
        offset = self._b.consumer_offsets.query(group, topic, queue_id)
        if offset >= 0:
            return _ok(cmd, offset=offset)
        # RocketMQ answers 0 for a queue that still starts at 0, so a new group with
        # CONSUME_FROM_LAST_OFFSET reads a young topic from the beginning.
        if (
            get_bool(cmd, "setZeroIfNotFound", True)
            and self._b.store.min_offset(topic, queue_id) <= 0
        ):
            return _ok(cmd, offset=0)
        return cmd.make_response(
            ResponseCode.QUERY_NOT_FOUND, "Not found, maybe this group consumer boot first"
        )

    def update_consumer_offset(self, conn: RemotingConnection, cmd: RemotingCommand):
        offset = req_int(cmd, "commitOffset")
        if offset >= 0:
            replicated = self._b.commit_offset(
                req_str(cmd, "consumerGroup"),
                req_str(cmd, "topic"),
                req_int(cmd, "queueId"),
                offset,
                wait=True,
            )
            if replicated is not None:
                return _answer_when_replicated(cmd, replicated)
        return cmd.make_response(ResponseCode.SUCCESS)

    def get_max_offset(self, conn: RemotingConnection, cmd: RemotingCommand):
        return _ok(
            cmd, offset=self._b.store.max_offset(req_str(cmd, "topic"), req_int(cmd, "queueId"))
        )

    def get_min_offset(self, conn: RemotingConnection, cmd: RemotingCommand):
        return _ok(
            cmd, offset=self._b.store.min_offset(req_str(cmd, "topic"), req_int(cmd, "queueId"))
        )

    def search_offset(self, conn: RemotingConnection, cmd: RemotingCommand):
        upper = (cmd.ext_fields.get("boundaryType") or "LOWER").upper() == "UPPER"
        offset = self._b.store.offset_by_time(
            req_str(cmd, "topic"), req_int(cmd, "queueId"), req_int(cmd, "timestamp"), upper
        )
        return _ok(cmd, offset=offset)

    def earliest_store_time(self, conn: RemotingConnection, cmd: RemotingCommand):
        topic = req_str(cmd, "topic")
        queue_id = req_int(cmd, "queueId")
        store = self._b.store
        ts = store.store_timestamp(topic, queue_id, store.min_offset(topic, queue_id))
        if ts is None:
            return cmd.make_response(ResponseCode.SYSTEM_ERROR, "no message in the queue")
        return _ok(cmd, timestamp=ts)

    def get_all_consumer_offsets(self, conn: RemotingConnection, cmd: RemotingCommand):
        body = json.dumps(self._b.consumer_offsets.to_json()).encode()
        return cmd.make_response(ResponseCode.SUCCESS, body=body)

    def get_all_delay_offsets(self, conn: RemotingConnection, cmd: RemotingCommand):
        body = json.dumps(self._b.schedule.to_json()).encode()
        return cmd.make_response(ResponseCode.SUCCESS, body=body)


async def _answer_when_replicated(cmd: RemotingCommand, replicated: Awaitable[None]):
    # a DLedger group acknowledges the commit once a majority has it (see
    # replicated_metadata.py); otherwise the consumer commits again later
    try:
        await replicated
    except MemberError as exc:
        return cmd.make_response(
            ResponseCode.SERVICE_NOT_AVAILABLE, f"offset not replicated: {exc.message}"
        )
    return cmd.make_response(ResponseCode.SUCCESS)
