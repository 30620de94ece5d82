"""The node's in-memory view of its log: persisted entries plus entries not yet on disk."""

from __future__ import annotations

from .types import Entry


class RaftLog:
    def __init__(self, entries: list[Entry], commit: int) -> None:
        for i, e in enumerate(entries):
            assert e.index == i + 1, f"stored log is not contiguous at position {i}: {e}"
        # invariant: self.entries[i].index == i + 1
        self.entries: list[Entry] = list(entries)
        # invariant: entries with index >= unstable are not known to be on disk;
        # 1 <= unstable <= last_index() + 1
        self.unstable = len(self.entries) + 1
        # invariant: applied <= commit <= last_index(); committed entries never change
        assert commit <= len(self.entries), (
            f"persisted commit {commit} is beyond the persisted log {len(self.entries)}: "
            "hard state must be written after the entries it commits"
        )
        self.commit = commit
        self.applied = 0

    def last_index(self) -> int:
        return len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else 0

    def term(self, index: int) -> int | None:
        """Term at ``index``; 0 for index 0; None when the index is past the end."""
        if index == 0:
            return 0
        if 1 <= index <= len(self.entries):
            return self.entries[index - 1].term
        return None

    def matches(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft 5.4.1: is a log ending at (last_index, last_term) at least as new as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi."""
        return self.entries[lo - 1 : hi - 1]

    def append_new(self, entries: list[Entry]) -> None:
        """Leader append: entries must continue the log."""
        assert not entries or entries[0].index == self.last_index() + 1, "leader log gap"
        self.entries.extend(entries)

    def merge(self, prev_index: int, entries: tuple[Entry, ...]) -> int:
        """Follower append after a successful (prev_index, prev_term) match.

        Entries we already hold are skipped; the first conflicting entry and everything
        after it is replaced. Returns the index of the last entry the message covered.
        """
        for e in entries:
            have = self.term(e.index)
            if have == e.term:
                continue
            if have is not None:
                assert e.index > self.commit, (
                    f"leader asked to overwrite committed entry {e.index} (commit "
                    f"{self.commit}): a committed entry must never be truncated"
                )
                del self.entries[e.index - 1 :]
                self.unstable = min(self.unstable, e.index)
            assert e.index == self.last_index() + 1, "append message left a gap"
            self.entries.append(e)
        return prev_index + len(entries)

    def conflict_hint(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term``, with its term.

        Used on both sides of fast backtracking: entries after the hint cannot match.
        """
        i = min(index, self.last_index())
        while i > 0 and self.entries[i - 1].term > term:
            i -= 1
        return i, (self.entries[i - 1].term if i > 0 else 0)

    def commit_to(self, index: int) -> bool:
        if index > self.commit:
            assert index <= self.last_index(), (
                f"commit {index} beyond last index {self.last_index()}"
            )
            self.commit = index
            return True
        return False

    def unstable_entries(self) -> list[Entry]:
        return self.entries[self.unstable - 1 :]

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted entries up to (index, term); ignore if since replaced."""
        if self.term(index) == term and index >= self.unstable:
            self.unstable = index + 1

    def next_committed(self) -> list[Entry]:
        return self.entries[self.applied : self.commit]
