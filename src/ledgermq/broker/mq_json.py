"""Java's fastjson writes maps keyed by MessageQueue with *object* keys:
`{{"brokerName":"b","queueId":0,"topic":"t"}:{...}}`. Java admin tools parse exactly that,
so bodies keyed by queues are emitted in that form."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ledgermq.broker.mq_lock import MessageQueue


def mq_keyed_json(items: Iterable[tuple[MessageQueue, Any]]) -> str:
    parts = [
        json.dumps(mq.to_json(), sort_keys=True, separators=(",", ":"))
        + ":"
        + json.dumps(value, sort_keys=True, separators=(",", ":"))
        for mq, value in items
    ]
    return "{" + ",".join(parts) + "}"
