"""The checker's bookkeeping over the half and op queues (pure; no store, no clock).

Durable state is two offsets of the system group: `half_floor` (every half message below
it is settled, copied further on, or parked) and `op_floor` (every op record below it
only settles half offsets below `half_floor`, so nobody needs it again). On top of them
the broker keeps, in memory, which half offsets the op records from `op_floor` on settle;
it is rebuilt from the op queue after a restart or a failover.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class TransactionProgress:
    half_floor: int
    op_floor: int
    # next half offset the checker looks at; >= half_floor, ahead of it during a round
    cursor: int = -1
    # next op queue offset to read from the store
    op_loaded: int = -1
    # half offset -> op queue offset of the (latest) op record that settled it
    settled: dict[int, int] = field(default_factory=dict)
    # op queue offset -> greatest half offset it settles (-1: none)
    op_reach: dict[int, int] = field(default_factory=dict)
    # chain root (offset of a transaction's first half message) -> offsets of its check
    # copies at or above half_floor
    copies: dict[int, set[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cursor < self.half_floor:
            self.cursor = self.half_floor
        if self.op_loaded < self.op_floor:
            self.op_loaded = self.op_floor

    def note_op(self, op_offset: int, half_offsets: Iterable[int]) -> None:
        """An op record at `op_offset` (read back, or just written) settles these."""
        if op_offset < self.op_floor:
            return
        reach = -1
        for half in half_offsets:
            reach = max(reach, half)
            if self.settled.get(half, -1) < op_offset:
                self.settled[half] = op_offset
        self.op_reach[op_offset] = reach

    def skip_ops_to(self, op_offset: int) -> None:
        """The op records below `op_offset` are gone from the store (files removed)."""
        if op_offset > self.op_floor:
            self.op_floor = op_offset
            self._forget_below(op_offset)
        self.loaded_up_to(op_offset)

    def loaded_up_to(self, next_op_offset: int) -> None:
        self.op_loaded = max(self.op_loaded, next_op_offset)

    def is_settled(self, half_offset: int) -> bool:
        return half_offset in self.settled

    def note_copy(self, root: int, copy_offset: int) -> None:
        if copy_offset >= self.half_floor:
            self.copies.setdefault(root, set()).add(copy_offset)

    def chain(self, half_offset: int, root: int) -> list[int]:
        """Every offset of the transaction `half_offset` belongs to that may still be
        looked at: itself, its first message and the check copies made of it."""
        members = {half_offset, *self.copies.get(root, ())}
        if root >= self.half_floor:
            members.add(root)
        return sorted(members)

    def still_pending(self, chain: list[int]) -> bool:
        """Has the checker yet to pass some member of the chain? If not, it was settled
        or parked long ago and its op records may be forgotten."""
        return max(chain) >= self.cursor

    def passed(self, half_offset: int) -> None:
        """The checker is done with everything below `half_offset`."""
        self.cursor = max(self.cursor, half_offset)

    def commit_point(self) -> tuple[int, int]:
        """Moves the floors as far as the cursor allows, forgets what is below them and
        returns (half_floor, op_floor) to store."""
        self.half_floor = self.cursor
        for root in list(self.copies):
            kept = {o for o in self.copies[root] if o >= self.half_floor}
            if kept:
                self.copies[root] = kept
            else:
                del self.copies[root]
        op = self.op_floor
        while op < self.op_loaded or op in self.op_reach:
            reach = self.op_reach.get(op)
            if reach is None or reach >= self.half_floor:
                # not read yet (a gap) or still needed by an unsettled half offset
                break
            op += 1
        if op != self.op_floor:
            self.op_floor = op
            self._forget_below(op)
        return self.half_floor, self.op_floor

    def _forget_below(self, op_offset: int) -> None:
        for o in [o for o in self.op_reach if o < op_offset]:
            del self.op_reach[o]
        for h in [h for h, o in self.settled.items() if o < op_offset]:
            del self.settled[h]
