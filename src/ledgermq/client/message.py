"""User-facing message types: Message, MessageQueue, SendResult, consume results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ledgermq.common.message import MessageExt, MessageQueue

__all__ = [
    "ConsumeResult",
    "Message",
    "MessageExt",
    "MessageQueue",
    "OrderlyResult",
    "SendResult",
    "SendStatus",
]


@dataclass(slots=True)
class Message:
    topic: str
    body: bytes
    tags: str | None = None
    # One key or several; stored space-separated in the KEYS property.
    keys: str | list[str] | None = None
    properties: dict[str, str] | None = None
    # 1..18 (PROTOCOL.md 3.6); 0 = deliver now.
    delay_level: int = 0
    flag: int = 0

    def keys_text(self) -> str | None:
        if self.keys is None:
            return None
        if isinstance(self.keys, str):
            return self.keys or None
        return " ".join(k for k in self.keys if k) or None


class SendStatus(Enum):
    SEND_OK = "SEND_OK"
    FLUSH_DISK_TIMEOUT = "FLUSH_DISK_TIMEOUT"
    FLUSH_SLAVE_TIMEOUT = "FLUSH_SLAVE_TIMEOUT"
    SLAVE_NOT_AVAILABLE = "SLAVE_NOT_AVAILABLE"


@dataclass(slots=True)
class SendResult:
    status: SendStatus
    # The UNIQ_KEY property (what Java shows as msgId); comma-joined for a batch.
    msg_id: str
    # The broker's id: store host + commit log offset; comma-joined for a batch.
    offset_msg_id: str
    message_queue: MessageQueue
    queue_offset: int
    transaction_id: str | None = None
    region_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class ConsumeResult(Enum):
    """Returned by a concurrent listener (Java: ConsumeConcurrentlyStatus)."""

    SUCCESS = "CONSUME_SUCCESS"
    RECONSUME_LATER = "RECONSUME_LATER"


class OrderlyResult(Enum):
    """Returned by an orderly listener (Java: ConsumeOrderlyStatus)."""

    SUCCESS = "SUCCESS"
    SUSPEND = "SUSPEND_CURRENT_QUEUE_A_MOMENT"
