"""What the node reads at start-up (``StorageView``) and an in-memory implementation.

The node only reads storage when it is constructed; afterwards the driver writes what each
``Ready`` says. A durable store (issue 3, ``dledger/store``) implements the same view.
"""

from __future__ import annotations

from typing import Protocol

from .types import Entry, HardState


class StorageView(Protocol):
    def hard_state(self) -> HardState: ...

    def entries(self) -> list[Entry]:
        """Every stored entry, in index order starting at index 1."""
        ...


class MemoryStorage:
    """Persisted state as a list; models "what survives a crash" in the simulator."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        # invariant: self._entries[i].index == i + 1 (contiguous, starts at 1)
        self._entries: list[Entry] = []

    def hard_state(self) -> HardState:
        return self._hard_state

    def entries(self) -> list[Entry]:
        return list(self._entries)

    def entries_from(self, index: int) -> list[Entry]:
        return self._entries[index - 1 :]

    def last_index(self) -> int:
        return len(self._entries)

    def term(self, index: int) -> int:
        if index == 0:
            return 0
        return self._entries[index - 1].term

    def entry(self, index: int) -> Entry:
        return self._entries[index - 1]

    def append(self, entries: list[Entry]) -> None:
        """Write ``entries``; anything stored at or after the first one's index is cut."""
        if not entries:
            return
        first = entries[0].index
        assert 1 <= first <= len(self._entries) + 1, (
            f"append at {first} would leave a gap after {len(self._entries)}"
        )
        del self._entries[first - 1 :]
        self._entries.extend(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs
