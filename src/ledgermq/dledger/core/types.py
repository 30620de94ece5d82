"""Plain data for the sans-I/O Raft core: entries, hard state, messages, Ready, snapshots
and membership.

Index mapping: the core numbers entries from 1 and uses 0 for "before the first entry"
(term 0), as in the Raft paper. DLedger numbers entries from 0 and calls the empty log's
end index -1 (PROTOCOL.md 5.1). The store and wire layers convert with
``dledger_index = raft_index - 1`` and ``raft_index = dledger_index + 1``.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from enum import Enum, IntEnum

# DLedger's entry magic values (PROTOCOL.md 5.1), reused as the entry kind.
ENTRY_NORMAL = 1
ENTRY_NOOP = 2
ENTRY_CONFIG = 3  # data = encode_config(change, resulting ConfState); see ConfigChange


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
    INSTALL_SNAPSHOT = "install-snapshot"
    INSTALL_SNAPSHOT_RESP = "install-snapshot-resp"


class ErrorCode(IntEnum):
    """DLedger response codes (PROTOCOL.md 5.2) that the core can produce."""

    NOT_LEADER = 404
    UNKNOWN_MEMBER = 401
    LEADER_PENDING_FULL = 503
    ILLEGAL_MEMBER_STATE = 504
    LEADER_NOT_READY = 505
    LEADER_TRANSFERRING = 506


# Not frozen: a frozen dataclass pays an object.__setattr__ per field when built, and
# one is built per appended entry on every replica. Never mutate one: logs and caches
# share them.
@dataclass(slots=True)
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


# ---- membership ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfState:
    """A membership configuration. ``voters`` elect leaders and form every quorum
    (commit, check-quorum, ReadIndex); ``learners`` receive the log but never vote, never
    campaign and never count. Both are sorted, disjoint tuples of node ids."""

    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()

    @staticmethod
    def of(voters, learners=()) -> ConfState:
        v = tuple(sorted(set(voters)))
        return ConfState(v, tuple(sorted(set(learners) - set(v))))

    def members(self) -> tuple[str, ...]:
        return self.voters + self.learners


class ConfChangeType(Enum):
    ADD_LEARNER = "add-learner"  # a new node that only replicates
    PROMOTE = "promote"  # learner -> voter (the safe way to add a voter: catch up first)
    ADD_VOTER = "add-voter"  # a new node straight in as a voter
    REMOVE = "remove"  # drop a voter or a learner


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One single-server membership change (Raft dissertation 4.1). ``address`` is opaque
    to the core; it is recorded in the config entry so drivers learn how to reach a new
    member from the log (``decode_config``)."""

    type: ConfChangeType
    node_id: str
    address: str = ""

    def apply_to(self, conf: ConfState) -> ConfState | str:
        """The configuration after this change, or why it is not a valid change."""
        v, ln, n = set(conf.voters), set(conf.learners), self.node_id
        if self.type is ConfChangeType.ADD_LEARNER:
            if n in v or n in ln:
                return f"{n} is already a member"
            ln.add(n)
        elif self.type is ConfChangeType.ADD_VOTER:
            if n in v or n in ln:
                return f"{n} is already a member (promote a learner instead)"
            v.add(n)
        elif self.type is ConfChangeType.PROMOTE:
            if n not in ln:
                return f"{n} is not a learner"
            ln.discard(n)
            v.add(n)
        elif self.type is ConfChangeType.REMOVE:
            if n not in v and n not in ln:
                return f"{n} is not a member"
            if v == {n}:
                return f"{n} is the last voter"
            v.discard(n)
            ln.discard(n)
        return ConfState.of(v, ln)


def encode_config(change: ConfigChange, conf: ConfState) -> bytes:
    """Data of an ENTRY_CONFIG entry: UTF-8 JSON holding the change and the whole
    resulting configuration (so recovery needs only the newest config entry)."""
    doc = {
        "type": change.type.value,
        "node": change.node_id,
        "address": change.address,
        "voters": list(conf.voters),
        "learners": list(conf.learners),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode_config(data: bytes) -> tuple[ConfigChange, ConfState]:
    doc = json.loads(data)
    change = ConfigChange(ConfChangeType(doc["type"]), doc["node"], doc.get("address", ""))
    return change, ConfState.of(doc["voters"], doc["learners"])


# ---- snapshots -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot covers. ``index`` = last log index whose effect the snapshot holds
    (0 = no snapshot), ``term`` = that entry's term, ``conf`` = the membership in effect
    at ``index`` (the newest config entry at or below it, or the bootstrap config).
    ``context`` is opaque to the core and travels with the snapshot: storage-level facts
    about entry ``index`` that a follower's store needs to continue the log after it
    (for the DLedger entry store: the chainCrc and end offset from ``boundary(index)``,
    so replicas stay byte-identical). The driver fills it in before storing the snapshot
    (``dataclasses.replace(node.snapshot_meta(), context=...)``)."""

    index: int = 0
    term: int = 0
    conf: ConfState = ConfState()
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Application state at ``meta.index`` as opaque bytes produced by the state machine.
    ``data`` may be any bytes-like object supporting ``len()`` and slicing (e.g. an mmap).
    """

    meta: SnapshotMeta
    data: bytes = b""

    def checksum(self) -> int:
        return zlib.crc32(self.data)


# ---- messages and outputs -------------------------------------------------------------


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
    INSTALL_SNAPSHOT: one chunk of a snapshot. ``snapshot`` = its SnapshotMeta (on every
      chunk), ``offset`` = where ``data`` starts in the snapshot bytes, ``done`` = this is
      the last chunk, ``checksum`` = zlib.crc32 of the whole snapshot; the receiver
      verifies it over the reassembled bytes before using them.
    INSTALL_SNAPSHOT_RESP: ``index`` = the snapshot's index, ``offset`` = how many bytes
      of it the receiver holds in order; ``reject`` = resend from ``offset`` (a gap, an
      unknown transfer, or a checksum failure with ``offset`` 0); ``done`` = installed
      (or not needed): the receiver's log now matches up to ``index``.
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
    snapshot: SnapshotMeta | None = None
    data: bytes = b""
    offset: int = 0
    done: bool = False
    checksum: int = 0


@dataclass(frozen=True, slots=True)
class ReadState:
    """Answer to ``read_index(ctx)``: once the state machine has applied ``index``, a read
    served locally is linearizable. ``ok`` is False when leadership was lost first."""

    ctx: bytes
    index: int
    ok: bool = True


class CommittedEntryConflict(Exception):
    """A leader's append conflicts with an entry this node already knows as committed.

    Raft rules this out while every acknowledged entry is durable on a majority; it
    happens when a majority lost acknowledged entries together (power loss under the
    weaker flush-interval mode). The node can no longer follow: its state machine has
    applied entries the group no longer holds. The driver must take it out of service.
    """


@dataclass(frozen=True, slots=True)
class ProposeError:
    code: ErrorCode
    leader_id: str | None
    message: str


@dataclass(slots=True)
class Ready:
    """The outputs of the node. Driver order (DESIGN principle 2):

    1. persist: ``snapshot`` first if set (replace the whole stored log by it:
       ``MemoryStorage.apply_snapshot``), then ``entries`` (truncating any stored entries
       at or after the first one's index), then ``hard_state``;
    2. send ``messages``;
    3. apply: if ``snapshot`` is set, reset the state machine to ``snapshot.data``; then
       apply ``committed_entries`` in order (ENTRY_CONFIG entries carry membership, see
       ``decode_config``; ENTRY_NOOP entries carry nothing);
    4. ``advance(ready)``.

    ``conf_state`` is the membership now in effect when it changed since the previous
    Ready (config entries take effect when appended, before they commit): connect to new
    members, and stop talking to removed ones.

    ``early``: the first ``early`` of ``messages`` may be sent before (or while) step 1
    persists (a leader's appends and heartbeats of its persisted term, Raft thesis
    10.2.1); the rest only after. Sending all of them after persisting is always right.
    """

    entries: list[Entry] = field(default_factory=list)
    hard_state: HardState | None = None
    messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    role: Role = Role.FOLLOWER
    leader_id: str | None = None
    snapshot: Snapshot | None = None
    conf_state: ConfState | None = None
    early: int = 0

    def empty(self) -> bool:
        return not (
            self.entries
            or self.hard_state
            or self.messages
            or self.committed_entries
            or self.read_states
            or self.snapshot
            or self.conf_state
        )
