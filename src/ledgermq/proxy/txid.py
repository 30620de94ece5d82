"""Transaction ids handed to v2 producers (opaque to them).

A half message is resolved with END_TRANSACTION at the broker that stored it, which
needs the broker, the half message's queue offset and commit log offset. Encoding
them into the id keeps the proxy stateless: any proxy, even after a restart, can
forward the producer's EndTransaction.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

PREFIX = "LMQTX1."


class TransactionIdError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TransactionRef:
    broker_name: str
    commit_log_offset: int
    tran_state_table_offset: int
    # The broker's transaction id (the UNIQ_KEY unless the broker gave another).
    broker_transaction_id: str

    def encode(self) -> str:
        raw = json.dumps(
            [
                self.broker_name,
                self.commit_log_offset,
                self.tran_state_table_offset,
                self.broker_transaction_id,
            ],
            separators=(",", ":"),
        ).encode()
        return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> TransactionRef:
        if not text.startswith(PREFIX):
            raise TransactionIdError(f"not a transaction id of this proxy: {text!r}")
        body = text[len(PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            name, commit_offset, queue_offset, broker_txid = json.loads(raw)
        except (ValueError, TypeError) as exc:
            raise TransactionIdError(f"malformed transaction id {text!r}") from exc
        if not (
            isinstance(name, str)
            and isinstance(broker_txid, str)
            and type(commit_offset) is int
            and type(queue_offset) is int
        ):
            raise TransactionIdError(f"malformed transaction id {text!r}")
        return cls(name, commit_offset, queue_offset, broker_txid)
