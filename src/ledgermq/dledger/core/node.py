"""A sans-I/O Raft node in the style of etcd's raft: tick / step / propose -> Ready -> advance.

The node never touches disks, sockets, clocks or randomness. Logical time arrives through
``tick()``; the randomized election timeout comes from the injected ``rng`` (anything with
``randrange``). Beyond the Raft paper it implements PreVote, CheckQuorum with leader
stickiness, fast log backtracking, a no-op on election (so only current-term entries are
committed by counting), pipelined replication with a bounded in-flight window and
leadership transfer via TimeoutNow, DLedger's preferred leader and ReadIndex; log
compaction with chunked, checksummed snapshot transfer; learners and single-server
membership changes; a bound on proposals waiting to commit.

API (one object per member of one group; a process may hold many):
    node = RaftNode(id, peers, storage_view, config, rng, applied=None)
    node.tick()                      # one unit of logical time
    node.step(msg)                   # a Message from a peer
    node.propose(data) -> index | ProposeError
    node.propose_many([data, ...]) -> first index | ProposeError   # all or none
    node.propose_config_change(ConfigChange(...)) -> index | ProposeError
    node.read_index(ctx) -> None | ProposeError    # answer: Ready.read_states
    node.transfer_leadership(to) -> None | ProposeError
    node.snapshot_meta() -> SnapshotMeta           # for a snapshot at node.applied
    node.compactable_index() -> int                # how far compaction is cheap
    if node.has_ready():
        rd = node.ready()            # persist rd.snapshot, rd.entries, rd.hard_state,
        ...                          # then send rd.messages, then apply rd.snapshot and
        node.advance(rd)             # rd.committed_entries, then advance (principle 2)

Leader writes in parallel (a deliberate refinement of DESIGN principle 2, per the Raft
thesis 10.2.1): a leader may send its appends before its own write of the same entries
is durable. ``Ready.early`` counts the messages at the front of ``Ready.messages`` that
may go before step 1 (APPEND and HEARTBEAT of a leader whose term and vote are already
on disk); the rest still wait for the persist. The commit rule stays "a quorum of
durable copies": the leader's own match index moves only in ``advance()`` (to the last
persisted entry), never when it appends. A leader that dies before its write finishes
may leave entries on followers only; Raft handles that like any unreplicated tail.
Sending everything after persisting remains correct (just slower).

Storage: the node reads stable entries through ``storage_view`` (see storage.py) when it
needs them and keeps only unpersisted entries plus a small cache (``max_cache_bytes``) in
memory. A view with only ``hard_state()`` and ``entries()`` (the first API) still works:
the node then copies it and keeps the whole log in memory, as before.

Snapshots and compaction (the driver's side):
  * taking one: right after ``advance()``, with the state machine at ``node.applied``:
    ``meta = node.snapshot_meta()``; serialize the state machine to ``data``; store
    ``Snapshot(meta, data)`` (``MemoryStorage.create_snapshot``); then optionally compact
    the stored log up to any index <= meta.index (``MemoryStorage.compact``), e.g.
    ``min(meta.index, node.compactable_index())`` to avoid forcing a snapshot transfer on
    followers that are only briefly behind. The node needs no notification: it reads
    ``first_index()`` from storage.
  * sending one: when a follower needs an entry below ``first_index()``, the leader calls
    ``storage_view.snapshot()`` and streams its data in ``snapshot_chunk_bytes`` chunks
    (INSTALL_SNAPSHOT, at most ``max_snapshot_inflight`` unacknowledged), each carrying
    the meta and the crc32 of the whole snapshot.
  * receiving one: the follower reassembles the chunks in memory, verifies size order and
    crc32 and then hands the snapshot out once as ``Ready.snapshot``: persist it first
    (replacing the whole stored log), then the Ready's entries and hard state; then send;
    then reset the state machine from ``snapshot.data`` before applying
    ``committed_entries`` (empty in that Ready); then ``advance()``. The log continues at
    ``snapshot.meta.index + 1`` and ``node.applied`` becomes the snapshot index.
  * starting: load the newest stored snapshot into the state machine; the node assumes
    ``applied = storage_view.snapshot_meta().index`` unless ``applied=`` says otherwise
    (a state machine that persists its own progress passes its applied index).

Membership (Raft dissertation 4.1, single-server changes): a ConfigChange becomes an
ENTRY_CONFIG entry whose data holds the whole new configuration; every node uses the
newest config entry in its log as soon as it is appended (leader and followers alike),
and goes back to the previous one if that entry is cut. The leader accepts a change only
after committing an entry of its own term and only when no earlier config entry is
uncommitted. Learners replicate but never vote, campaign or count in a quorum; a removed
leader keeps leading (without counting itself) until the change commits, then steps
down and hands a TimeoutNow to an up-to-date voter. A node not in the voter set never
campaigns, so a new node is started with ``peers=[]`` (or the current voters) and
learns the configuration from the leader's log or snapshot. ``node.conf`` is the
configuration in effect; ``Ready.conf_state`` reports every change of it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import Enum

from .log import RaftLog
from .storage import MemoryStorage, StorageView
from .types import (
    ENTRY_CONFIG,
    ENTRY_NOOP,
    CommittedEntryConflict,
    ConfigChange,
    ConfState,
    Entry,
    ErrorCode,
    HardState,
    Message,
    MsgType,
    ProposeError,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    decode_config,
    encode_config,
)


@dataclass(frozen=True, slots=True)
class Config:
    election_ticks: int = 10  # base election timeout; the real one is in [e, 2e)
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_entries: int = 64
    max_msg_bytes: int = 1 << 20
    max_inflight: int = 16  # append messages in flight per follower in replicate state
    # DLedger's preferred leader: a leader that is not it hands leadership over once
    # per election timeout, when the preferred node is reachable and less than
    # max_transfer_lag entries behind
    preferred_leader: str | None = None
    max_transfer_lag: int = 1000
    # DLedger's 10,000 pending appends: propose answers LEADER_PENDING_FULL (503) while
    # this many entries of the leader's log are not committed yet
    max_pending_proposals: int = 10000
    snapshot_chunk_bytes: int = 1 << 20  # data per INSTALL_SNAPSHOT message
    max_snapshot_inflight: int = 4  # unacknowledged snapshot chunks per follower
    # stable entries kept in memory after they are persisted (data bytes + 64 per entry);
    # older ones are read from storage when needed
    max_cache_bytes: int = 4 << 20
    max_apply_bytes: int = 64 << 20  # committed entry data per Ready (at least one entry)

    def __post_init__(self) -> None:
        assert self.heartbeat_ticks < self.election_ticks, (
            "heartbeats must come faster than elections or followers keep campaigning"
        )
        assert self.snapshot_chunk_bytes > 0 and self.max_snapshot_inflight > 0


# what a leader may send before its own write of the same Ready is durable
_EARLY = frozenset({MsgType.APPEND, MsgType.HEARTBEAT})


class ProgressState(Enum):
    PROBE = "probe"  # one append at a time until the match point is found
    REPLICATE = "replicate"  # match known: stream appends, at most max_inflight unacked
    SNAPSHOT = "snapshot"  # the entries it needs are compacted: streaming a snapshot


class Progress:
    __slots__ = (
        "commit_sent",
        "heard_tick",
        "inflight",
        "match",
        "next",
        "paused",
        "read_ack",
        "recent_active",
        "snap",
        "snap_acked",
        "snap_crc",
        "snap_last_sent",
        "snap_next",
        "snap_rewound",
        "snap_tick",
        "state",
    )

    def __init__(self, next_index: int, now: int = 0) -> None:
        # invariant: match < next (match = highest index known to be on the follower)
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.paused = False  # probe: an append is outstanding
        # replicate: (last index, tick sent) of each unacked append, oldest first
        self.inflight: list[tuple[int, int]] = []
        self.recent_active = False
        self.heard_tick = now  # leader tick of the last message from this follower
        self.read_ack = 0  # highest ReadIndex sequence this follower answered
        self.commit_sent = 0  # highest commit index told to this follower
        # snapshot state: the snapshot being sent, its crc32, the next byte to send,
        # the bytes the follower confirmed, whether the last chunk went out, the offset
        # of the last rewind (a burst of gap reports causes one resend) and the tick of
        # the last progress
        self.snap: Snapshot | None = None
        self.snap_crc = 0
        self.snap_next = 0
        self.snap_acked = 0
        self.snap_last_sent = False
        self.snap_rewound = -1
        self.snap_tick = 0

    def blocked(self, max_inflight: int) -> bool:
        if self.state is ProgressState.PROBE:
            return self.paused
        if self.state is ProgressState.SNAPSHOT:
            return True
        return len(self.inflight) >= max_inflight

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.paused = False
        self.inflight.clear()
        self.snap = None
        self.next = self.match + 1

    def become_snapshot(self, snap: Snapshot, crc: int, now: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.paused = False
        self.inflight.clear()
        self.snap = snap
        self.snap_crc = crc
        self.rewind_snapshot(0)
        self.snap_rewound = -1
        self.snap_tick = now

    def rewind_snapshot(self, offset: int) -> None:
        self.snap_next = self.snap_acked = offset
        self.snap_last_sent = False
        self.snap_rewound = offset

    def free_to(self, index: int) -> None:
        self.inflight = [f for f in self.inflight if f[0] > index]


class _SnapshotRx:
    """A snapshot being received: chunks must arrive in order from one leader."""

    __slots__ = ("buf", "crc", "key")

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.buf = bytearray()
        self.crc = 0


def _as_storage_view(view) -> tuple[StorageView, bool]:
    if hasattr(view, "first_index"):
        return view, False
    copy = MemoryStorage()
    copy.append(list(view.entries()))
    copy.set_hard_state(view.hard_state())
    return copy, True


class RaftNode:
    def __init__(
        self,
        id: str,
        peers: list[str],
        storage_view: StorageView,
        config: Config | None = None,
        rng=None,
        *,
        applied: int | None = None,
    ) -> None:
        assert rng is not None, "pass a random.Random-like object: the core owns no randomness"
        self.id = id
        self.config = config or Config()
        self.rng = rng
        storage, legacy = _as_storage_view(storage_view)
        hs = storage.hard_state()
        self.log = RaftLog(
            storage,
            hs.commit,
            applied=applied,
            # a copied legacy view never sees the driver's writes: keep everything
            max_cache_bytes=(1 << 62) if legacy else self.config.max_cache_bytes,
        )
        # invariant: term never decreases; vote is for at most one node per term
        self.term = hs.term
        self.vote = hs.vote
        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        # membership: conf_history = [(index, term, conf)] oldest first; item 0 is the
        # newest configuration at or below the applied index (the snapshot's or the
        # bootstrap one), the rest are the config entries above it, all in the log.
        meta = storage.snapshot_meta()
        base = meta.conf if meta.conf.voters else ConfState.of(peers)
        self.conf_history: list[tuple[int, int, ConfState]] = [(meta.index, meta.term, base)]
        for e in storage.config_entries():
            self.conf_history.append((e.index, e.term, decode_config(e.data)[1]))
        self.conf = base
        self._voter_set: frozenset[str] = frozenset()
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.votes: dict[str, bool] = {}
        self.progress: dict[str, Progress] = {}
        # leader: index of its term's no-op (its own proposals follow)
        self._term_start = 0
        self.transferee: str | None = None
        self.transfer_elapsed = 0
        self.leader_ticks = 0  # ticks spent as leader; ages in-flight appends
        self.msgs: list[Message] = []
        # ReadIndex: requests wait for a quorum to answer a heartbeat sent after them.
        # invariant: pending_reads is ordered by sequence number; each index <= commit
        self.read_seq = 0
        self.pending_reads: list[tuple[int, int, bytes]] = []  # (seq, index, ctx)
        self.read_states: list[ReadState] = []
        self._snap_rx: _SnapshotRx | None = None
        self._crc_cache: tuple[Snapshot, int] | None = None
        self.snapshots_rejected = 0  # received snapshots that failed verification
        self._set_conf(self.conf_history[-1][2])
        self._prev_conf = self._ready_conf = self.conf
        self._prev_hs = hs
        self._outstanding: Ready | None = None
        self._reset_timeout()

    # ---- queries -------------------------------------------------------------------

    @property
    def peers(self) -> list[str]:
        """The voters (sorted), as in the first API where membership was fixed."""
        return list(self.conf.voters)

    @property
    def quorum(self) -> int:
        return len(self.conf.voters) // 2 + 1

    @property
    def commit(self) -> int:
        return self.log.commit

    @property
    def applied(self) -> int:
        return self.log.applied

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit)

    def promotable(self) -> bool:
        """May this node campaign? Only voters of its current configuration may."""
        return self.id in self._voter_set

    def pending_proposals(self) -> int:
        """Entries this leader proposed in its term that are not committed yet (what
        max_pending_proposals bounds). Entries from before its term do not count: a
        member that just took over (an election, a leadership transfer) may not know yet
        how far they were committed, and they are not its clients' proposals."""
        return self.log.last_index() - max(self.log.commit, self._term_start - 1)

    def snapshot_meta(self) -> SnapshotMeta:
        """Metadata for a snapshot of the state machine as of ``applied`` (call it after
        ``advance()``, when the state machine has applied exactly that much)."""
        index = self.log.applied
        assert self.log.snapshot is None, "a received snapshot is not installed yet"
        term = self.log.term(index)
        assert term is not None, f"applied index {index} is below the compaction point"
        return SnapshotMeta(index, term, self._conf_at(index))

    def compactable_index(self) -> int:
        """How far the driver can compact without forcing a snapshot on anyone: the
        applied index, and on a leader no further than the match of every follower heard
        from within two election timeouts (followers already being sent a snapshot and
        silent ones do not hold compaction back). Never below the compaction point."""
        floor = self.log.applied
        if self.role is Role.LEADER:
            recent = 2 * self.config.election_ticks
            for p, pr in self.progress.items():
                if (
                    p != self.id
                    and pr.state is not ProgressState.SNAPSHOT
                    and self.leader_ticks - pr.heard_tick <= recent
                ):
                    floor = min(floor, pr.match)
        return max(floor, self.log.first_index() - 1)

    def _in_lease(self) -> bool:
        """Leader stickiness: we heard from a live leader within the election timeout."""
        return (
            self.config.check_quorum
            and self.leader_id is not None
            and self.election_elapsed < self.config.election_ticks
        )

    # ---- inputs --------------------------------------------------------------------

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
            self._maybe_step_down_removed()
            return
        self.election_elapsed += 1
        # a non-voter never campaigns, and its elapsed time keeps growing so that a
        # leader it no longer hears from does not keep a lease on its vote
        if self.election_elapsed >= self.randomized_timeout and self.promotable():
            self.election_elapsed = 0
            self.campaign(transfer=False)

    def _check_can_append(self, n: int = 1) -> ProposeError | None:
        if self.role is not Role.LEADER:
            return ProposeError(ErrorCode.NOT_LEADER, self.leader_id, f"{self.id} is not leader")
        if self.transferee is not None:
            return ProposeError(
                ErrorCode.LEADER_TRANSFERRING, self.id, f"transferring to {self.transferee}"
            )
        if self.pending_proposals() + n > self.config.max_pending_proposals:
            return ProposeError(
                ErrorCode.LEADER_PENDING_FULL,
                self.id,
                f"{self.pending_proposals()} entries wait for commit "
                f"(max_pending_proposals {self.config.max_pending_proposals})",
            )
        return None

    def propose(self, data: bytes) -> int | ProposeError:
        err = self._check_can_append()
        if err is not None:
            return err
        index = self.log.last_index() + 1
        self.log.append_new([Entry(index, self.term, bytes(data))])
        self._after_leader_append()
        return index

    def propose_many(self, datas: list[bytes]) -> int | ProposeError:
        """Propose several entries at once, all or none: the index of the first (they are
        consecutive). One round of appends to the followers for the lot, instead of one
        per entry."""
        assert datas, "propose_many needs at least one entry"
        err = self._check_can_append(len(datas))
        if err is not None:
            return err
        first = index = self.log.last_index() + 1
        term = self.term
        entries = []
        for data in datas:
            entries.append(Entry(index, term, bytes(data)))
            index += 1
        self.log.append_new(entries)
        self._after_leader_append()
        return first

    def propose_config_change(self, change: ConfigChange) -> int | ProposeError:
        """Append a single-server membership change; it takes effect at once (on every
        node as it appends it). Refused with LEADER_NOT_READY while the previous change
        (or the leader's first entry of its term) is not committed, and with
        ILLEGAL_MEMBER_STATE when it makes no sense for the current configuration."""
        err = self._check_can_append()
        if err is not None:
            return err
        if self.log.term(self.log.commit) != self.term:
            # a new leader must commit in its term first, or a change of a deposed leader
            # that it never saw could combine with this one into disjoint majorities
            return ProposeError(
                ErrorCode.LEADER_NOT_READY, self.id, "no entry of this term committed yet"
            )
        last_conf = self.conf_history[-1][0]
        if last_conf > self.log.commit:
            return ProposeError(
                ErrorCode.LEADER_NOT_READY,
                self.id,
                f"the configuration change at {last_conf} is not committed yet",
            )
        new = change.apply_to(self.conf)
        if isinstance(new, str):
            return ProposeError(ErrorCode.ILLEGAL_MEMBER_STATE, self.id, new)
        index = self.log.last_index() + 1
        self.log.append_new([Entry(index, self.term, encode_config(change, new), ENTRY_CONFIG)])
        self.conf_history.append((index, self.term, new))
        self._set_conf(new)
        self._after_leader_append()
        return index

    def transfer_leadership(self, to: str) -> ProposeError | None:
        if self.role is not Role.LEADER:
            return ProposeError(ErrorCode.NOT_LEADER, self.leader_id, f"{self.id} is not leader")
        if to not in self._voter_set:
            if to in self.conf.learners:
                return ProposeError(ErrorCode.ILLEGAL_MEMBER_STATE, self.id, f"{to} is a learner")
            return ProposeError(ErrorCode.UNKNOWN_MEMBER, self.id, f"{to} is not a member")
        if to == self.id:
            return None
        self.transferee = to
        self.transfer_elapsed = 0
        pr = self.progress[to]
        if pr.match == self.log.last_index():
            self._send(to, MsgType.TIMEOUT_NOW)
        elif pr.state is not ProgressState.SNAPSHOT:
            # resend from the match point now rather than wait for lost appends to age out
            pr.become_probe()
            self._send_append(to)
        return None

    def read_index(self, ctx: bytes) -> ProposeError | None:
        """Ask for a linearizable read point; the answer comes as a ``ReadState`` in a
        later Ready. The leader records its commit index, then confirms with a round of
        heartbeats that it still leads (no log write). Before it has committed an entry of
        its own term its commit index may be stale, so it refuses with LEADER_NOT_READY."""
        if self.role is not Role.LEADER:
            return ProposeError(ErrorCode.NOT_LEADER, self.leader_id, f"{self.id} is not leader")
        if self.log.term(self.log.commit) != self.term:
            return ProposeError(
                ErrorCode.LEADER_NOT_READY, self.id, "no entry of this term committed yet"
            )
        if self.conf.voters == (self.id,):
            self.read_states.append(ReadState(ctx, self.log.commit))
            return None
        self.read_seq += 1
        self.pending_reads.append((self.read_seq, self.log.commit, ctx))
        self._broadcast_heartbeat()
        return None

    def step(self, m: Message) -> None:
        assert m.dst == self.id, f"message for {m.dst} delivered to {self.id}"
        # messages from nodes outside our configuration are processed too: a new member
        # hears from a leader it does not know yet, and votes are only counted for voters
        leaderish = (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.INSTALL_SNAPSHOT)
        if m.term > self.term:
            if m.type in (MsgType.PRE_VOTE, MsgType.VOTE) and not m.force and self._in_lease():
                return  # a live leader exists: do not let a disruptive node raise our term
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes carry a future term; they never change ours
            elif m.type in leaderish:
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if m.type in leaderish:
                # tell a stale leader about the newer term so it steps down
                self._send(m.src, MsgType.APPEND_RESP, reject=True, index=m.index)
            elif m.type is MsgType.PRE_VOTE:
                self._send(m.src, MsgType.PRE_VOTE_RESP, reject=True)
            return

        if m.type in (MsgType.PRE_VOTE, MsgType.VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
            self._maybe_step_down_removed()
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    # ---- outputs -------------------------------------------------------------------

    def has_ready(self) -> bool:
        if self.msgs or self.read_states:
            return True
        log = self.log
        hs = self._prev_hs
        return (
            log.unstable < log.offset + len(log.tail)  # unstable entries
            or log.snapshot is not None
            or log.applied < log.commit
            or hs.commit != log.commit
            or hs.term != self.term
            or hs.vote != self.vote
            or self.conf is not self._prev_conf
        )

    def ready(self) -> Ready:
        assert self._outstanding is None, "call advance() with the previous Ready first"
        hs = self.hard_state()
        msgs = self.msgs
        early = 0
        prev = self._prev_hs
        if self.role is Role.LEADER and msgs and hs.term == prev.term and hs.vote == prev.vote:
            # a leader whose term and vote are on disk may replicate before its own
            # write finishes (its match moves only in advance(), see _leader_persisted)
            term = self.term
            first = [m for m in msgs if m.type in _EARLY and m.term == term]
            early = len(first)
            if early and early != len(msgs):
                msgs = first + [m for m in msgs if not (m.type in _EARLY and m.term == term)]
        rd = Ready(
            entries=self.log.unstable_entries(),
            hard_state=hs if hs != self._prev_hs else None,
            messages=msgs,
            early=early,
            committed_entries=self.log.next_committed(self.config.max_apply_bytes),
            read_states=self.read_states,
            role=self.role,
            leader_id=self.leader_id,
            snapshot=self.log.snapshot,
            conf_state=self.conf if self.conf != self._prev_conf else None,
        )
        self.msgs = []
        self.read_states = []
        self._outstanding = rd
        self._ready_conf = self.conf
        return rd

    def advance(self, rd: Ready) -> None:
        assert rd is self._outstanding, "advance() must get the Ready that ready() returned"
        self._outstanding = None
        if rd.snapshot is not None:
            self.log.stable_snapshot(rd.snapshot)
            self.log.applied = max(self.log.applied, rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER:
                self._leader_persisted()
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        self._prev_conf = self._ready_conf
        if rd.committed_entries:
            top = rd.committed_entries[-1].index
            assert top == self.log.applied + len(rd.committed_entries), "apply out of order"
            self.log.applied = top
        # forget configurations older than the newest one at or below applied
        hist = self.conf_history
        k = 0
        while k + 1 < len(hist) and hist[k + 1][0] <= self.log.applied:
            k += 1
        if k:
            del hist[:k]

    # ---- membership ----------------------------------------------------------------

    def _set_conf(self, conf: ConfState) -> None:
        self.conf = conf
        self._voter_set = frozenset(conf.voters)
        if self.role is not Role.LEADER:
            return
        members = set(conf.members())
        for p in sorted(members):
            if p not in self.progress:
                self.progress[p] = Progress(self.log.last_index() + 1, self.leader_ticks)
        for p in list(self.progress):
            if p not in members and p != self.id:
                del self.progress[p]
        if self.transferee is not None and self.transferee not in self._voter_set:
            self.transferee = None

    def _conf_at(self, index: int) -> ConfState:
        conf = None
        for i, _, c in self.conf_history:
            if i > index:
                break
            conf = c
        assert conf is not None, f"no configuration known at {index}"
        return conf

    def _sync_conf(self, appended: tuple[Entry, ...]) -> None:
        """After a follower append: drop configurations whose entries were cut, then
        take the config entries the append brought."""
        hist = self.conf_history
        before = hist[-1]
        while len(hist) > 1 and hist[-1][0] > self.log.commit:
            i, t, _ = hist[-1]
            if self.log.term(i) == t:
                break
            hist.pop()
        for e in appended:
            if e.kind == ENTRY_CONFIG and e.index > hist[-1][0]:
                hist.append((e.index, e.term, decode_config(e.data)[1]))
        if hist[-1] is not before:
            self._set_conf(hist[-1][2])

    def _maybe_step_down_removed(self) -> None:
        """A leader that is no longer a voter leads until that change commits, then
        steps down and lets the most up-to-date voter campaign at once."""
        if (
            self.role is not Role.LEADER
            or self.id in self._voter_set
            or self.conf_history[-1][0] > self.log.commit
        ):
            return
        last = self.log.last_index()
        heir = None
        for p in self.conf.voters:
            pr = self.progress.get(p)
            if pr is not None and pr.match == last:
                heir = p
                break
        self._become_follower(self.term, None)
        if heir is not None:
            self._send(heir, MsgType.TIMEOUT_NOW)

    # ---- role changes --------------------------------------------------------------

    def _reset_timeout(self) -> None:
        e = self.config.election_ticks
        self.randomized_timeout = self.rng.randrange(e, 2 * e)

    def _reset(self, term: int) -> None:
        if term != self.term:
            assert term > self.term, f"term must not go back from {self.term} to {term}"
            self.term = term
            self.vote = None
            self._snap_rx = None
        self.leader_id = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.votes = {}
        self.transferee = None
        self.progress = {}
        for _, _, ctx in self.pending_reads:  # leadership is gone: these reads failed
            self.read_states.append(ReadState(ctx, 0, ok=False))
        self.pending_reads = []
        self._reset_timeout()

    def _become_follower(self, term: int, leader: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader

    def campaign(self, transfer: bool) -> None:
        """Start an election. With PreVote (and not on a transfer) first ask at term+1
        without changing our own term, so a node cut off from the others cannot inflate
        terms and depose a healthy leader when it comes back. Non-voters never campaign."""
        if not self.promotable():
            return
        if self.config.pre_vote and not transfer:
            self._reset(self.term)
            self.role = Role.PRE_CANDIDATE
            self.votes[self.id] = True
            if self._tally() == "won":
                self._real_campaign(force=False)
                return
            self._request_votes(MsgType.PRE_VOTE, self.term + 1, force=False)
        else:
            self._real_campaign(force=transfer)

    def _real_campaign(self, force: bool) -> None:
        self._reset(self.term + 1)
        self.role = Role.CANDIDATE
        self.vote = self.id
        self.votes[self.id] = True
        if self._tally() == "won":
            self._become_leader()
            return
        self._request_votes(MsgType.VOTE, self.term, force=force)

    def _request_votes(self, type: MsgType, term: int, force: bool) -> None:
        last, last_term = self.log.last_index(), self.log.last_term()
        for p in self.conf.voters:
            if p != self.id:
                self.msgs.append(
                    Message(type, self.id, p, term, index=last, log_term=last_term, force=force)
                )

    def _become_leader(self) -> None:
        assert self.role is Role.CANDIDATE, "only a candidate can become leader"
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        last = self.log.last_index()
        for p in sorted(set(self.conf.members()) | {self.id}):
            pr = Progress(last + 1, self.leader_ticks)
            if p == self.id:
                pr.match = self.log.unstable - 1  # what is on our disk (all, normally)
                pr.state = ProgressState.REPLICATE
            self.progress[p] = pr
        # a no-op of our own term: committing it commits every earlier entry safely
        self.log.append_new([Entry(last + 1, self.term, b"", ENTRY_NOOP)])
        self._term_start = last + 1
        self._after_leader_append()

    def _tally(self) -> str:
        voters = self._voter_set
        granted = sum(1 for p, v in self.votes.items() if v and p in voters)
        rejected = sum(1 for p, v in self.votes.items() if not v and p in voters)
        if granted >= self.quorum:
            return "won"
        if rejected >= self.quorum:
            return "lost"
        return "pending"

    # ---- votes ---------------------------------------------------------------------

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is MsgType.PRE_VOTE
        resp_type = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        can_vote = (
            self.vote == m.src
            or (self.vote is None and self.leader_id is None)
            or (pre and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # a granted pre-vote answers at the asked term so the pre-candidate counts it
            self._send(m.src, resp_type, term=m.term)
            if not pre:
                self.vote = m.src
                self.election_elapsed = 0
        else:
            self._send(m.src, resp_type, reject=True)

    def _step_candidate(self, m: Message) -> None:
        if m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.INSTALL_SNAPSHOT):
            # m.term == self.term here: someone else won this term
            self._become_follower(m.term, m.src)
            self._step_follower(m)
            return
        want = MsgType.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if m.type is not want:
            return
        self.votes.setdefault(m.src, not m.reject)
        result = self._tally()
        if result == "won":
            if self.role is Role.PRE_CANDIDATE:
                self._real_campaign(force=False)
            else:
                self._become_leader()
        elif result == "lost":
            self._become_follower(self.term, None)

    # ---- follower ------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        if m.type is MsgType.APPEND:
            self.election_elapsed = 0
            self.leader_id = m.src
            self._handle_append(m)
        elif m.type is MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self.leader_id = m.src
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(m.src, MsgType.HEARTBEAT_RESP, context=m.context)
        elif m.type is MsgType.INSTALL_SNAPSHOT:
            self.election_elapsed = 0
            self.leader_id = m.src
            self._handle_snapshot(m)
        elif m.type is MsgType.TIMEOUT_NOW:
            self.campaign(transfer=True)

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.commit:
            # Entries at or below our commit must be the ones we committed. Under Raft's
            # fault model they always are; if not, a majority lost acknowledged entries
            # (e.g. power loss in flush-interval mode) and acking our commit would
            # let the leader count entries we do not hold.
            commit = self.log.commit
            for e in m.entries:
                if e.index > commit:
                    break
                have = self.log.term(e.index)
                if have is not None and have != e.term:
                    raise CommittedEntryConflict(
                        f"leader {m.src} (term {m.term}) sent entry {e.index} of term "
                        f"{e.term}, but this node committed entry {e.index} of term {have}"
                    )
            self._send(m.src, MsgType.APPEND_RESP, index=self.log.commit)
            return
        if self.log.matches(m.index, m.log_term):
            last_new = self.log.merge(m.index, m.entries)
            if m.entries:
                self._sync_conf(m.entries)
            self.log.commit_to(min(m.commit, last_new))
            self._send(m.src, MsgType.APPEND_RESP, index=last_new)
            return
        hint_index, hint_term = self.log.conflict_hint(m.index, m.log_term)
        self._send(
            m.src,
            MsgType.APPEND_RESP,
            index=m.index,
            reject=True,
            hint_index=hint_index,
            hint_term=hint_term,
        )

    def _handle_snapshot(self, m: Message) -> None:
        meta = m.snapshot
        assert meta is not None, "INSTALL_SNAPSHOT without metadata"
        resp = MsgType.INSTALL_SNAPSHOT_RESP
        if meta.index <= self.log.commit:
            # we already hold (committed) everything it covers
            self._snap_rx = None
            self._send(m.src, resp, index=self.log.commit, done=True)
            return
        key = (m.src, m.term, meta, m.checksum)
        rx = self._snap_rx
        if m.offset == 0 and (rx is None or rx.key != key):
            rx = self._snap_rx = _SnapshotRx(key)
        if rx is None or rx.key != key:
            self._send(m.src, resp, index=meta.index, offset=0, reject=True)
            return
        have = len(rx.buf)
        if m.offset != have:
            # a duplicate (behind us: just report progress) or a gap (resend from have)
            self._send(m.src, resp, index=meta.index, offset=have, reject=m.offset > have)
            return
        rx.buf += m.data
        rx.crc = zlib.crc32(m.data, rx.crc)
        if not m.done:
            self._send(m.src, resp, index=meta.index, offset=len(rx.buf))
            return
        self._snap_rx = None
        if not self._verify_snapshot(rx, m):
            # corrupted on the way or at the source: never apply it; start over
            self.snapshots_rejected += 1
            self._send(m.src, resp, index=meta.index, offset=0, reject=True)
            return
        if self.log.matches(meta.index, meta.term):
            # our log already holds the snapshot's last entry: keep the log, commit to it
            self.log.commit_to(meta.index)
        else:
            self.log.restore(Snapshot(meta, bytes(rx.buf)))
            self.conf_history = [(meta.index, meta.term, meta.conf)]
            self._set_conf(meta.conf)
        self._send(m.src, resp, index=meta.index, done=True)

    @staticmethod
    def _verify_snapshot(rx: _SnapshotRx, last: Message) -> bool:
        return rx.crc == last.checksum

    # ---- leader --------------------------------------------------------------------

    def _tick_leader(self) -> None:
        self.leader_ticks += 1
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            self._maybe_hand_to_preferred()
            if self.config.check_quorum:
                active = sum(
                    1
                    for p, pr in self.progress.items()
                    if p in self._voter_set and (p == self.id or pr.recent_active)
                )
                for pr in self.progress.values():
                    pr.recent_active = False
                if active < self.quorum:
                    self._become_follower(self.term, None)
                    return
        if self.transferee is not None:
            self.transfer_elapsed += 1
            if self.transfer_elapsed >= self.config.election_ticks:
                self.transferee = None  # the transfer did not finish in time: give up
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _broadcast_heartbeat(self) -> None:
        for p, pr in self.progress.items():
            if p != self.id:
                self._heartbeat(p, pr)

    def _heartbeat(self, peer: str, pr: Progress) -> None:
        commit = min(pr.match, self.log.commit)
        pr.commit_sent = max(pr.commit_sent, commit)
        self._send(peer, MsgType.HEARTBEAT, commit=commit, context=self.read_seq)

    def _maybe_hand_to_preferred(self) -> None:
        to = self.config.preferred_leader
        if to is None or to == self.id or to not in self._voter_set or self.transferee:
            return
        pr = self.progress.get(to)
        if (
            pr is not None
            and pr.recent_active
            and self.log.last_index() - pr.match < self.config.max_transfer_lag
        ):
            self.transfer_leadership(to)

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.heard_tick = self.leader_ticks
        if m.type is MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.paused = False
            if m.context > pr.read_ack:
                pr.read_ack = m.context
                self._release_reads()
            if pr.state is ProgressState.SNAPSHOT:
                if self.leader_ticks - pr.snap_tick > self.config.election_ticks:
                    # no progress for an election timeout: resend from the confirmed part
                    pr.rewind_snapshot(pr.snap_acked)
                    pr.snap_tick = self.leader_ticks
                    self._send_snapshot_chunks(m.src, pr)
                return
            if pr.inflight and self.leader_ticks - pr.inflight[0][1] > self.config.election_ticks:
                # the follower is alive but an append went unanswered for an election
                # timeout: it was lost, so find the match point again and resend from it
                pr.become_probe()
            if pr.match < self.log.last_index():
                self._send_append(m.src)
        elif m.type is MsgType.APPEND_RESP:
            pr.recent_active = True
            if m.reject:
                self._handle_reject(m.src, pr, m)
            else:
                self._handle_ack(m.src, pr, m.index)
        elif m.type is MsgType.INSTALL_SNAPSHOT_RESP:
            pr.recent_active = True
            self._handle_snapshot_resp(m.src, pr, m)

    def _handle_reject(self, peer: str, pr: Progress, m: Message) -> None:
        if pr.state is ProgressState.SNAPSHOT:
            return  # an answer to an append from before the snapshot started
        if pr.state is ProgressState.REPLICATE:
            if m.index <= pr.match:
                return  # stale: we already know it matches further
        elif m.index != pr.next - 1:
            return  # stale probe answer
        # fast backtracking: skip every index the follower's hint rules out, and the
        # entries of our own terms above the follower's hinted term
        idx, _ = self.log.conflict_hint(m.hint_index, m.hint_term)
        pr.become_probe()
        pr.next = max(pr.match + 1, min(idx + 1, m.index))
        self._send_append(peer)

    def _handle_ack(self, peer: str, pr: Progress, index: int) -> None:
        if pr.state is ProgressState.SNAPSHOT:
            if index > pr.match:
                pr.match = index
                if self._maybe_commit():
                    self._broadcast_append()
            if pr.match + 1 < self.log.first_index():
                return  # still needs the snapshot
            pr.become_probe()  # it can continue from entries after all
        pr.free_to(index)
        if index > pr.match:
            pr.match = index
            pr.next = max(pr.next, index + 1)
            if pr.state is ProgressState.PROBE:
                pr.state = ProgressState.REPLICATE
                pr.paused = False
                pr.inflight.clear()
            if self._maybe_commit():
                self._broadcast_append()
            if peer == self.transferee and pr.match == self.log.last_index():
                self._send(peer, MsgType.TIMEOUT_NOW)
        elif pr.state is ProgressState.PROBE:
            pr.paused = False
        while pr.next <= self.log.last_index() and not pr.blocked(self.config.max_inflight):
            if not self._send_append(peer):
                break
        if pr.commit_sent < min(pr.match, self.log.commit):
            # the ack came after the commit moved: tell this follower now, not at the
            # next heartbeat, so its state machine is not a heartbeat behind. With
            # nothing in flight, as an empty append: a driver may hold that back for a
            # moment and merge it into the next append to this follower
            if pr.state is ProgressState.REPLICATE and not pr.inflight:
                self._send_append(peer)
            else:
                self._heartbeat(peer, pr)

    def _handle_snapshot_resp(self, peer: str, pr: Progress, m: Message) -> None:
        if pr.state is not ProgressState.SNAPSHOT or pr.snap is None:
            if m.done and not m.reject:
                self._handle_ack(peer, pr, m.index)
            return
        if m.done and not m.reject:
            if m.index < pr.snap.meta.index and m.index + 1 < self.log.first_index():
                pr.match = max(pr.match, m.index)  # a late answer to an older transfer
                return
            # installed (or not needed): continue with entries after m.index
            pr.become_probe()
            pr.next = max(pr.match, m.index) + 1
            self._handle_ack(peer, pr, m.index)
            return
        if m.index != pr.snap.meta.index:
            return  # about another snapshot
        if m.reject:
            if m.offset != pr.snap_rewound and (m.offset < pr.snap_next or m.offset == 0):
                if m.offset == 0:
                    # the follower lost the transfer or the checksum failed: start over,
                    # with the newest snapshot
                    newest = self._snapshot_to_send()
                    if newest is not None and newest is not pr.snap:
                        pr.become_snapshot(newest, self._crc(newest), self.leader_ticks)
                pr.rewind_snapshot(m.offset)
                pr.snap_tick = self.leader_ticks
        elif m.offset > pr.snap_acked:
            pr.snap_acked = m.offset
            pr.snap_rewound = -1
            pr.snap_tick = self.leader_ticks
        self._send_snapshot_chunks(peer, pr)

    def _release_reads(self) -> None:
        acks = sorted(
            (
                self.read_seq if p == self.id else pr.read_ack
                for p, pr in self.progress.items()
                if p in self._voter_set
            ),
            reverse=True,
        )
        if len(acks) < self.quorum:
            return
        confirmed = acks[self.quorum - 1]
        while self.pending_reads and self.pending_reads[0][0] <= confirmed:
            _, index, ctx = self.pending_reads.pop(0)
            self.read_states.append(ReadState(ctx, index))

    def _maybe_commit(self) -> bool:
        voters = self._voter_set
        matches = sorted((pr.match for p, pr in self.progress.items() if p in voters), reverse=True)
        if len(matches) < self.quorum:
            return False
        n = matches[self.quorum - 1]
        # Raft 5.4.2 (Figure 8): counting replicas only commits entries of our own term
        if n > self.log.commit and self.log.term(n) == self.term:
            return self.log.commit_to(n)
        return False

    def _after_leader_append(self) -> None:
        # the followers get new entries at once; the leader's own copy counts toward the
        # commit quorum only when it is on disk (advance() -> _leader_persisted)
        self._broadcast_append()

    def _leader_persisted(self) -> None:
        """The driver persisted the leader's log up to ``log.unstable - 1``: its own
        match moves there, which may commit (thesis 10.2.1: the leader writes its log
        in parallel with replicating it; commit = a quorum of durable copies)."""
        me = self.progress.get(self.id)
        durable = self.log.unstable - 1
        if me is not None and durable > me.match:
            me.match = durable
            me.next = durable + 1
            if self._maybe_commit():
                self._broadcast_append()

    def _broadcast_append(self) -> None:
        for p, pr in self.progress.items():
            if p != self.id:
                while not pr.blocked(self.config.max_inflight):
                    if not self._send_append(p):
                        break

    def _send_append(self, peer: str) -> bool:
        """Send one append (possibly empty, to carry the commit index), or start sending
        a snapshot when the entries it needs are compacted. False if nothing was sent."""
        pr = self.progress[peer]
        if pr.blocked(self.config.max_inflight):
            return False
        log = self.log
        last = log.last_index()
        if pr.next > last + 1:
            pr.next = last + 1
        if pr.state is ProgressState.REPLICATE and pr.next > last and pr.inflight:
            return False  # nothing new to stream; heartbeats carry the commit
        if pr.next < log.first_index():
            return self._start_snapshot(peer, pr)
        prev = pr.next - 1
        prev_term = log.term(prev)
        assert prev_term is not None, f"progress of {peer} points past our log"
        cfg = self.config
        batch = log.slice(pr.next, min(last + 1, pr.next + cfg.max_msg_entries), cfg.max_msg_bytes)
        self._send(
            peer,
            MsgType.APPEND,
            index=prev,
            log_term=prev_term,
            entries=tuple(batch),
            commit=log.commit,
        )
        pr.commit_sent = max(pr.commit_sent, min(log.commit, prev + len(batch)))
        if pr.state is ProgressState.PROBE:
            pr.paused = True
        elif batch:
            pr.next = batch[-1].index + 1
            pr.inflight.append((batch[-1].index, self.leader_ticks))
        else:
            return False
        return True

    # ---- snapshot sending ------------------------------------------------------------

    def _snapshot_to_send(self) -> Snapshot | None:
        snap = self.log.snapshot or self.log.storage.snapshot()
        if snap is None or snap.meta.index < self.log.first_index() - 1:
            return None  # temporarily unavailable: try again on a later heartbeat
        return snap

    def _crc(self, snap: Snapshot) -> int:
        cached = self._crc_cache
        if cached is None or cached[0] is not snap:
            cached = self._crc_cache = (snap, snap.checksum())
        return cached[1]

    def _start_snapshot(self, peer: str, pr: Progress) -> bool:
        snap = self._snapshot_to_send()
        if snap is None:
            return False
        pr.become_snapshot(snap, self._crc(snap), self.leader_ticks)
        self._send_snapshot_chunks(peer, pr)
        return True

    def _send_snapshot_chunks(self, peer: str, pr: Progress) -> None:
        snap = pr.snap
        assert snap is not None
        data = snap.data
        size = len(data)
        chunk = self.config.snapshot_chunk_bytes
        window = chunk * self.config.max_snapshot_inflight
        while not pr.snap_last_sent and pr.snap_next - pr.snap_acked < window:
            start = pr.snap_next
            end = min(size, start + chunk)
            done = end == size
            self._send(
                peer,
                MsgType.INSTALL_SNAPSHOT,
                snapshot=snap.meta,
                data=bytes(data[start:end]),
                offset=start,
                done=done,
                checksum=pr.snap_crc,
            )
            pr.snap_next = end
            pr.snap_last_sent = done

    # ---- plumbing ------------------------------------------------------------------

    def _send(self, to: str, type: MsgType, term: int | None = None, **fields) -> None:
        self.msgs.append(Message(type, self.id, to, self.term if term is None else term, **fields))
