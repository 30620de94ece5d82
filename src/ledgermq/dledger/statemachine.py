"""What a DLedger member applies committed entries to.

The driver calls `apply` for every committed normal entry (not NOOPs), in index order,
on every member, on the event loop thread: keep it quick and deterministic (same entries,
same state, same results on every replica). The value it returns is what the proposing
client gets back. Indexes are DLedger's (0-based).

`snapshot`/`restore` serialize the whole state. Until the core takes snapshots the driver
uses them for one thing: a member that must reload from disk (after a disk error) resets
its state machine to the snapshot taken at start and replays the log.

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
