"""Receipt handles handed to v2 consumers (opaque to them, pure codec).

A handle is the broker's POP_CK (`ckQueueOffset popTime invisibleTime reviveQid
topicType brokerName queueId queueOffset`) followed by the message's commit log
offset, space-separated: the same text the Java proxy hands out, so a handle from
either proxy can be acked through the other. It names the broker, the queue and the
offset, and the commit log offset lets ForwardMessageToDeadLetterQueue find the
message, so any proxy (even after a restart) can act on it without shared state.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledgermq.common.pop_handle import ExtraInfo, HandleError

# A proxy-made handle is about 80 characters; anything much longer is not ours.
_MAX_LENGTH = 1024
NO_COMMIT_LOG_OFFSET = -1


class ReceiptHandleError(ValueError):
    """A receipt handle this proxy cannot decode (clients get 40013)."""


@dataclass(frozen=True, slots=True)
class ReceiptHandle:
    info: ExtraInfo
    commit_log_offset: int = NO_COMMIT_LOG_OFFSET

    @property
    def broker_name(self) -> str:
        return self.info.broker_name

    @property
    def queue_id(self) -> int:
        return self.info.queue_id

    @property
    def queue_offset(self) -> int:
        # decode() only accepts handles that carry it
        return self.info.queue_offset  # type: ignore[return-value]

    @property
    def expires_at_ms(self) -> int:
        """When the broker makes the message visible again unless renewed or acked."""
        return self.info.pop_time + self.info.invisible_time

    def encode(self) -> str:
        return f"{self.info.format()} {self.commit_log_offset}"

    @classmethod
    def decode(cls, text: str) -> ReceiptHandle:
        if not text:
            raise ReceiptHandleError("the receipt handle is empty")
        if len(text) > _MAX_LENGTH or not text.isascii() or not text.isprintable():
            raise ReceiptHandleError(f"not a receipt handle of this proxy: {text[:80]!r}")
        fields = text.split(" ")
        if len(fields) not in (8, 9):
            raise ReceiptHandleError(
                f"a receipt handle has 8 or 9 space-separated fields, got {len(fields)}: "
                f"{text[:80]!r}"
            )
        try:
            info = ExtraInfo.parse(" ".join(fields[:8]))
        except HandleError as exc:
            raise ReceiptHandleError(f"malformed receipt handle: {exc}") from None
        commit_log_offset = NO_COMMIT_LOG_OFFSET
        if len(fields) == 9:
            raw = fields[8]
            if not (raw.isdigit() or (raw == str(NO_COMMIT_LOG_OFFSET))):
                raise ReceiptHandleError(f"malformed receipt handle: bad commit log offset {raw!r}")
            commit_log_offset = int(raw)
            if commit_log_offset >= 1 << 63:
                raise ReceiptHandleError("malformed receipt handle: commit log offset too big")
        return cls(info, commit_log_offset)

    def renewed(self, pop_time: int, invisible_time: int, revive_qid: int) -> ReceiptHandle:
        """The handle after CHANGE_MESSAGE_INVISIBLETIME answered with these fields."""
        info = self.info
        # an orderly handle keeps its batch start; a changed normal one is a one-message
        # checkpoint of its own (the broker wrote it at the message's offset)
        ck_offset = info.ck_queue_offset if info.is_order else self.queue_offset
        return ReceiptHandle(
            ExtraInfo(
                ck_offset,
                pop_time,
                invisible_time,
                revive_qid,
                info.topic_type,
                info.broker_name,
                info.queue_id,
                info.queue_offset,
            ),
            self.commit_log_offset,
        )
