"""Topic administration: create/update (17), delete (215), get (351), get all (21)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ledgermq.broker import topics as t
from ledgermq.common.route_data import TopicConfig
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import ResponseCode
from ledgermq.remoting.connection import RemotingConnection
from ledgermq.remoting.errors import RemotingError
from ledgermq.remoting.headers import get_bool, get_int, get_str, req_str

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker


def _parse_attributes(raw: str | None) -> dict[str, str]:
    """`+message.type=FIFO,+k=v` -> {message.type: FIFO, ...} (`-k` deletes are ignored)."""
    out: dict[str, str] = {}
    for item in (raw or "").split(","):
        item = item.strip()
        if item.startswith("+") and "=" in item:
            key, _, value = item[1:].partition("=")
            out[key] = value
    return out


class TopicAdminProcessor:
    def __init__(self, broker: Broker) -> None:
        self._b = broker

    def create_or_update(self, conn: RemotingConnection, cmd: RemotingCommand):
        topic = req_str(cmd, "topic")
        error = t.topic_error(topic)
        if error is not None:
            raise RemotingError(ResponseCode.SYSTEM_ERROR, error)
        if topic == self._b.config.broker_cluster_name:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"The topic[{topic}] is conflict with system topic."
            )
        old = self._b.topic_config.get(topic)
        cfg = TopicConfig(
            topic,
            get_int(cmd, "readQueueNums", 8) or 8,
            get_int(cmd, "writeQueueNums", 8) or 8,
            get_int(cmd, "perm", 6) if cmd.ext_fields.get("perm") else 6,  # type: ignore[arg-type]
            get_str(cmd, "topicFilterType", "SINGLE_TAG") or "SINGLE_TAG",
            get_int(cmd, "topicSysFlag", 0) or 0,
            get_bool(cmd, "order", False),
            {**(old.attributes if old else {}), **_parse_attributes(get_str(cmd, "attributes"))},
        )
        if cfg.read_queue_nums <= 0 or cfg.write_queue_nums <= 0:
            raise RemotingError(ResponseCode.SYSTEM_ERROR, "queue nums must be positive")
        self._b.topic_config.update(cfg)
        return cmd.make_response(ResponseCode.SUCCESS)

    def delete(self, conn: RemotingConnection, cmd: RemotingCommand):
        topic = req_str(cmd, "topic")
        b = self._b
        if topic in b.topic_config.system_topics:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"The topic[{topic}] is conflict with system topic."
            )
        b.topic_config.delete(topic)
        b.consumer_offsets.remove_topic(topic)
        b.store.delete_topic(topic)
        return cmd.make_response(ResponseCode.SUCCESS)

    def get(self, conn: RemotingConnection, cmd: RemotingCommand):
        topic = req_str(cmd, "topic")
        cfg = self._b.topic_config.get(topic)
        if cfg is None:
            return cmd.make_response(
                ResponseCode.TOPIC_NOT_EXIST, f"No topic in this broker. topic: {topic}"
            )
        body = {**cfg.to_json(), "mappingDetail": None}
        return cmd.make_response(ResponseCode.SUCCESS, body=json.dumps(body).encode())

    def get_all(self, conn: RemotingConnection, cmd: RemotingCommand):
        wrapper = self._b.topic_config.to_json()
        wrapper["topicQueueMappingInfoMap"] = {}
        wrapper["topicQueueMappingDetailMap"] = {}
        wrapper["mappingDataVersion"] = wrapper["dataVersion"]
        return cmd.make_response(ResponseCode.SUCCESS, body=json.dumps(wrapper).encode())
