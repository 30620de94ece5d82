"""What a DLedger member applies committed entries to.

The driver calls `apply` for every committed normal entry (not NOOPs), in index order,
on every member, on the event loop thread: keep it quick and deterministic (same entries,
same state, same results on every replica). The value it returns is what the proposing
client gets back. Indexes are DLedger's (0-based).

A state machine may also define `applied_batch()`: called after each run of applies
(one per driver step), e.g. to write what the applies buffered in one go; and
`applied_index()`: the last index whose effects it has persisted itself, so that a
restart resumes applying after it instead of replaying the whole log.

`snapshot`/`restore` serialize the whole state (deterministically: replicas compare
equal after a restore). The driver calls `snapshot` right after applying an entry,
every `MemberConfig.snapshot_threshold` entries, stores the bytes in
``snapshot/snapshot_<index>/data`` and compacts the log; `restore` is called with the
newest stored snapshot at start (then the log tail is replayed), with a snapshot
received from the leader when this member fell behind the leader's compacted log, and
with the state taken at construction when there is no snapshot (or after a disk error
forces a reload).

A state machine may also answer USER_DEFINE (59999) requests by implementing
`UserRequestHandler`; the KV example (kv.py) does.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ledgermq.dledger.member import Member


class StateMachine(Protocol):
    def apply(self, index: int, data: bytes) -> object: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


@runtime_checkable
class UserRequestHandler(Protocol):
    def handle_user_request(
        self, member: Member, type_code: int, body: bytes
    ) -> Awaitable[bytes]: ...


class LogOnlyStateMachine:
    """The default: the log is the product (a commit log); nothing to apply."""

    __slots__ = ("last_applied",)

    def __init__(self) -> None:
        self.last_applied = -1

    def apply(self, index: int, data: bytes) -> object:
        self.last_applied = index
        return None

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        self.last_applied = -1
