"""SEND_MESSAGE (10) long-name and SEND_MESSAGE_V2/BATCH (310/320) one-letter headers."""

from __future__ import annotations

from dataclasses import dataclass

from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.errors import RemotingError

# field -> (V1 key, V2 key)
_KEYS = {
    "producer_group": ("producerGroup", "a"),
    "topic": ("topic", "b"),
    "default_topic": ("defaultTopic", "c"),
    "default_topic_queue_nums": ("defaultTopicQueueNums", "d"),
    "queue_id": ("queueId", "e"),
    "sys_flag": ("sysFlag", "f"),
    "born_timestamp": ("bornTimestamp", "g"),
    "flag": ("flag", "h"),
    "properties": ("properties", "i"),
    "reconsume_times": ("reconsumeTimes", "j"),
    "unit_mode": ("unitMode", "k"),
    "max_reconsume_times": ("maxReconsumeTimes", "l"),
    "batch": ("batch", "m"),
}
_V1 = {field: keys[0] for field, keys in _KEYS.items()}
_V2 = {field: keys[1] for field, keys in _KEYS.items()}


@dataclass(slots=True)
class SendHeader:
    producer_group: str
    topic: str
    default_topic: str
    default_topic_queue_nums: int
    queue_id: int
    sys_flag: int
    born_timestamp: int
    flag: int
    properties: str
    reconsume_times: int
    max_reconsume_times: int | None
    batch: bool


def _int(ext: dict[str, str], key: str, default: int | None) -> int | None:
    raw = ext.get(key)
    if raw is None or raw == "" or raw == "null":
        if default is None:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"missing mandatory header field '{key}'"
            )
        return default
    try:
        return int(raw)
    except ValueError:
        raise RemotingError(
            ResponseCode.SYSTEM_ERROR, f"header field '{key}' is not a number: {raw!r}"
        ) from None


def decode_send_header(code: int, ext: dict[str, str]) -> SendHeader:
    if code != RequestCode.SEND_MESSAGE:
        # SEND_MESSAGE_V2 as clients send it (every field, numbers as digits), read
        # without the general path's per-field calls; anything else falls through to it
        # for the same result or the same error
        get = ext.get
        topic = get("b")
        batch = get("m")
        max_reconsume = get("l")
        if topic is not None and (batch == "true" or batch == "false"):
            try:
                return SendHeader(
                    get("a", ""),
                    topic,
                    get("c") or "TBW102",
                    int(get("d")),  # type: ignore[arg-type]
                    int(get("e")),  # type: ignore[arg-type]
                    int(get("f")),  # type: ignore[arg-type]
                    int(get("g")),  # type: ignore[arg-type]
                    int(get("h")),  # type: ignore[arg-type]
                    get("i") or "",
                    int(get("j")),  # type: ignore[arg-type]
                    None if max_reconsume is None else int(max_reconsume),
                    batch == "true" or code == RequestCode.SEND_BATCH_MESSAGE,
                )
            except (TypeError, ValueError):
                pass
    return _decode_general(code, ext)


def _decode_general(code: int, ext: dict[str, str]) -> SendHeader:
    keys = _V1 if code == RequestCode.SEND_MESSAGE else _V2
    topic = ext.get(keys["topic"])
    if topic is None:
        raise RemotingError(
            ResponseCode.SYSTEM_ERROR, f"missing mandatory header field '{keys['topic']}'"
        )
    max_reconsume = ext.get(keys["max_reconsume_times"])
    return SendHeader(
        producer_group=ext.get(keys["producer_group"], ""),
        topic=topic,
        default_topic=ext.get(keys["default_topic"]) or "TBW102",
        default_topic_queue_nums=_int(ext, keys["default_topic_queue_nums"], 4),  # type: ignore[arg-type]
        queue_id=_int(ext, keys["queue_id"], -1),  # type: ignore[arg-type]
        sys_flag=_int(ext, keys["sys_flag"], 0),  # type: ignore[arg-type]
        born_timestamp=_int(ext, keys["born_timestamp"], 0),  # type: ignore[arg-type]
        flag=_int(ext, keys["flag"], 0),  # type: ignore[arg-type]
        properties=ext.get(keys["properties"]) or "",
        reconsume_times=_int(ext, keys["reconsume_times"], 0),  # type: ignore[arg-type]
        max_reconsume_times=None
        if max_reconsume in (None, "", "null")
        else _int(ext, keys["max_reconsume_times"], None),
        batch=(ext.get(keys["batch"]) or "").lower() == "true"
        or code == RequestCode.SEND_BATCH_MESSAGE,
    )
