"""QUERY_MESSAGE (12, by key or by unique key) and VIEW_MESSAGE_BY_ID (33)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import ResponseCode
from ledgermq.remoting.connection import RemotingConnection
from ledgermq.remoting.headers import get_bool, get_int, req_int, req_str

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker


class QueryProcessor:
    def __init__(self, broker: Broker) -> None:
        self._b = broker

    def query_message(self, conn: RemotingConnection, cmd: RemotingCommand):
        topic = req_str(cmd, "topic")
        key = req_str(cmd, "key")
        store = self._b.store
        if get_bool(cmd, "_UNIQUE_KEY_QUERY"):
            records = store.query_by_unique_key(topic, key)
        else:
            max_num = get_int(cmd, "maxNum", self._b.config.default_query_max_num) or 32
            begin = get_int(cmd, "beginTimestamp", 0) or 0
            end = get_int(cmd, "endTimestamp", 1 << 62) or (1 << 62)
            records = store.query_by_key(topic, key, max_num, begin, end)
        if not records:
            return cmd.make_response(
                ResponseCode.QUERY_NOT_FOUND,
                "can not find message, maybe time range not correct",
                {"indexLastUpdateTimestamp": "0", "indexLastUpdatePhyoffset": "0"},
            )
        return cmd.make_response(
            ResponseCode.SUCCESS,
            None,
            {"indexLastUpdateTimestamp": "0", "indexLastUpdatePhyoffset": "0"},
            b"".join(records),
        )

    def view_by_id(self, conn: RemotingConnection, cmd: RemotingCommand):
        offset = req_int(cmd, "offset")
        record = self._b.store.read_record(offset)
        if record is None:
            return cmd.make_response(
                ResponseCode.SYSTEM_ERROR, f"can not find message by the offset, {offset}"
            )
        return cmd.make_response(ResponseCode.SUCCESS, body=record)
