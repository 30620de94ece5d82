"""Plain data for the sans-I/O Raft core: entries, hard state, messages, Ready.

Index mapping: the core numbers entries from 1 and uses 0 for "before the first entry"
(term 0), as in the Raft paper. DLedger numbers entries from 0 and calls the empty log's
end index -1 (PROTOCOL.md 5.1). The store and wire layers convert with
``dledger_index = raft_index - 1`` and ``raft_index = dledger_index + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

# DLedger's entry magic values (PROTOCOL.md 5.1), reused as the entry kind.
ENTRY_NORMAL = 1
ENTRY_NOOP = 2


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class MsgType(Enum):
    APPEND = "append"
    APPEND_RESP = "append-resp"
    HEARTBEAT = "heartbeat"
    HEARTBEAT_RESP = "heartbeat-resp"
    PRE_VOTE = "pre-vote"
    PRE_VOTE_RESP = "pre-vote-resp"
    VOTE = "vote"
    VOTE_RESP = "vote-resp"
    TIMEOUT_NOW = "timeout-now"


class ErrorCode(IntEnum):
    """DLedger response codes (PROTOCOL.md 5.2) that the core can produce."""

    NOT_LEADER = 404
    UNKNOWN_MEMBER = 401
    LEADER_NOT_READY = 505
    LEADER_TRANSFERRING = 506


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    data: bytes = b""
    kind: int = ENTRY_NORMAL


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message produced alongside it is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    """One Raft message. Field meaning per type:

    APPEND: ``index``/``log_term`` = previous entry, ``entries`` follow it, ``commit``.
    APPEND_RESP: accept -> ``index`` = last index known to match; reject -> ``index`` =
      the rejected previous index, ``hint_index``/``hint_term`` = where the follower's log
      could match (the fast backtracking hint).
    PRE_VOTE/VOTE: ``index``/``log_term`` = the candidate's last entry; ``force`` = sent
      on a leadership transfer (ignores leader stickiness).
    HEARTBEAT: ``commit`` (never above what the follower is known to hold) and
      ``context`` = the leader's latest ReadIndex sequence number, echoed in the response.
    """

    type: MsgType
    src: str
    dst: str
    term: int
    index: int = 0
    log_term: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0
    force: bool = False
    context: int = 0


@dataclass(frozen=True, slots=True)
class ReadState:
    """Answer to ``read_index(ctx)``: once the state machine has applied ``index``, a read
    served locally is linearizable. ``ok`` is False when leadership was lost first."""

    ctx: bytes
    index: int
    ok: bool = True


@dataclass(frozen=True, slots=True)
class ProposeError:
    code: ErrorCode
    leader_id: str | None
    message: str


@dataclass(slots=True)
class Ready:
    """The outputs of the node. Driver order (DESIGN principle 2): persist ``entries``
    (truncating any stored entries at or after the first one's index) and ``hard_state``,
    then send ``messages``, then apply ``committed_entries``, then ``advance(ready)``."""

    entries: list[Entry] = field(default_factory=list)
    hard_state: HardState | None = None
    messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    role: Role = Role.FOLLOWER
    leader_id: str | None = None

    def empty(self) -> bool:
        return not (
            self.entries
            or self.hard_state
            or self.messages
            or self.committed_entries
            or self.read_states
        )
