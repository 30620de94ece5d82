"""A sans-I/O Raft node in the style of etcd's raft: tick / step / propose -> Ready -> advance.

The node never touches disks, sockets, clocks or randomness. Logical time arrives through
``tick()``; the randomized election timeout comes from the injected ``rng`` (anything with
``randrange``). Beyond the Raft paper it implements PreVote, CheckQuorum with leader
stickiness, fast log backtracking, a no-op on election (so only current-term entries are
committed by counting), pipelined replication with a bounded in-flight window and
leadership transfer via TimeoutNow, DLedger's preferred leader and ReadIndex.

API (one object per member of one group; a process may hold many):
    node = RaftNode(id, peers, storage_view, config, rng)
    node.tick()                      # one unit of logical time
    node.step(msg)                   # a Message from a peer
    node.propose(data) -> index | ProposeError
    node.read_index(ctx) -> None | ProposeError    # answer: Ready.read_states
    node.transfer_leadership(to) -> None | ProposeError
    if node.has_ready():
        rd = node.ready()            # persist rd.entries + rd.hard_state, then send
        ...                          # rd.messages, then apply rd.committed_entries,
        node.advance(rd)             # then advance (DESIGN principle 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .log import RaftLog
from .storage import StorageView
from .types import (
    ENTRY_NOOP,
    Entry,
    ErrorCode,
    HardState,
    Message,
    MsgType,
    ProposeError,
    ReadState,
    Ready,
    Role,
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

    def __post_init__(self) -> None:
        assert self.heartbeat_ticks < self.election_ticks, (
            "heartbeats must come faster than elections or followers keep campaigning"
        )


class ProgressState(Enum):
    PROBE = "probe"  # one append at a time until the match point is found
    REPLICATE = "replicate"  # match known: stream appends, at most max_inflight unacked


class Progress:
    __slots__ = (
        "commit_sent",
        "inflight",
        "match",
        "next",
        "paused",
        "read_ack",
        "recent_active",
        "state",
    )

    def __init__(self, next_index: int) -> None:
        # invariant: match < next (match = highest index known to be on the follower)
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.paused = False  # probe: an append is outstanding
        # replicate: (last index, tick sent) of each unacked append, oldest first
        self.inflight: list[tuple[int, int]] = []
        self.recent_active = False
        self.read_ack = 0  # highest ReadIndex sequence this follower answered
        self.commit_sent = 0  # highest commit index told to this follower

    def blocked(self, max_inflight: int) -> bool:
        if self.state is ProgressState.PROBE:
            return self.paused
        return len(self.inflight) >= max_inflight

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.paused = False
        self.inflight.clear()
        self.next = self.match + 1

    def free_to(self, index: int) -> None:
        self.inflight = [f for f in self.inflight if f[0] > index]


class RaftNode:
    def __init__(
        self,
        id: str,
        peers: list[str],
        storage_view: StorageView,
        config: Config | None = None,
        rng=None,
    ) -> None:
        assert id in peers, f"{id} must be one of the voters {peers}"
        assert rng is not None, "pass a random.Random-like object: the core owns no randomness"
        self.id = id
        self.peers = sorted(peers)
        self.config = config or Config()
        self.rng = rng
        hs = storage_view.hard_state()
        self.log = RaftLog(storage_view.entries(), hs.commit)
        # invariant: term never decreases; vote is for at most one node per term
        self.term = hs.term
        self.vote = hs.vote
        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.votes: dict[str, bool] = {}
        self.progress: dict[str, Progress] = {}
        self.transferee: str | None = None
        self.transfer_elapsed = 0
        self.leader_ticks = 0  # ticks spent as leader; ages in-flight appends
        self.msgs: list[Message] = []
        # ReadIndex: requests wait for a quorum to answer a heartbeat sent after them.
        # invariant: pending_reads is ordered by sequence number; each index <= commit
        self.read_seq = 0
        self.pending_reads: list[tuple[int, int, bytes]] = []  # (seq, index, ctx)
        self.read_states: list[ReadState] = []
        self._prev_hs = hs
        self._outstanding: Ready | None = None
        self._reset_timeout()

    # ---- queries -------------------------------------------------------------------

    @property
    def quorum(self) -> int:
        return len(self.peers) // 2 + 1

    @property
    def commit(self) -> int:
        return self.log.commit

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit)

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
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self.campaign(transfer=False)

    def propose(self, data: bytes) -> int | ProposeError:
        if self.role is not Role.LEADER:
            return ProposeError(ErrorCode.NOT_LEADER, self.leader_id, f"{self.id} is not leader")
        if self.transferee is not None:
            return ProposeError(
                ErrorCode.LEADER_TRANSFERRING, self.id, f"transferring to {self.transferee}"
            )
        index = self.log.last_index() + 1
        self.log.append_new([Entry(index, self.term, bytes(data))])
        self._after_leader_append()
        return index

    def transfer_leadership(self, to: str) -> ProposeError | None:
        if self.role is not Role.LEADER:
            return ProposeError(ErrorCode.NOT_LEADER, self.leader_id, f"{self.id} is not leader")
        if to not in self.peers:
            return ProposeError(ErrorCode.UNKNOWN_MEMBER, self.id, f"{to} is not a member")
        if to == self.id:
            return None
        self.transferee = to
        self.transfer_elapsed = 0
        pr = self.progress[to]
        if pr.match == self.log.last_index():
            self._send(to, MsgType.TIMEOUT_NOW)
        else:
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
        if len(self.peers) == 1:
            self.read_states.append(ReadState(ctx, self.log.commit))
            return None
        self.read_seq += 1
        self.pending_reads.append((self.read_seq, self.log.commit, ctx))
        self._broadcast_heartbeat()
        return None

    def step(self, m: Message) -> None:
        assert m.dst == self.id, f"message for {m.dst} delivered to {self.id}"
        if m.src not in self.peers:
            return
        if m.term > self.term:
            if m.type in (MsgType.PRE_VOTE, MsgType.VOTE) and not m.force and self._in_lease():
                return  # a live leader exists: do not let a disruptive node raise our term
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes carry a future term; they never change ours
            elif m.type in (MsgType.APPEND, MsgType.HEARTBEAT):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if m.type in (MsgType.APPEND, MsgType.HEARTBEAT):
                # tell a stale leader about the newer term so it steps down
                self._send(m.src, MsgType.APPEND_RESP, reject=True, index=m.index)
            elif m.type is MsgType.PRE_VOTE:
                self._send(m.src, MsgType.PRE_VOTE_RESP, reject=True)
            return

        if m.type in (MsgType.PRE_VOTE, MsgType.VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    # ---- outputs -------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self.msgs
            or self.log.unstable <= self.log.last_index()
            or self.hard_state() != self._prev_hs
            or self.log.applied < self.log.commit
            or self.read_states
        )

    def ready(self) -> Ready:
        assert self._outstanding is None, "call advance() with the previous Ready first"
        hs = self.hard_state()
        rd = Ready(
            entries=self.log.unstable_entries(),
            hard_state=hs if hs != self._prev_hs else None,
            messages=self.msgs,
            committed_entries=self.log.next_committed(),
            read_states=self.read_states,
            role=self.role,
            leader_id=self.leader_id,
        )
        self.msgs = []
        self.read_states = []
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        assert rd is self._outstanding, "advance() must get the Ready that ready() returned"
        self._outstanding = None
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.committed_entries:
            top = rd.committed_entries[-1].index
            assert top == self.log.applied + len(rd.committed_entries), "apply out of order"
            self.log.applied = top

    # ---- role changes --------------------------------------------------------------

    def _reset_timeout(self) -> None:
        e = self.config.election_ticks
        self.randomized_timeout = self.rng.randrange(e, 2 * e)

    def _reset(self, term: int) -> None:
        if term != self.term:
            assert term > self.term, f"term must not go back from {self.term} to {term}"
            self.term = term
            self.vote = None
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
        terms and depose a healthy leader when it comes back."""
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
        for p in self.peers:
            if p != self.id:
                self.msgs.append(
                    Message(
                        type,
                        self.id,
                        p,
                        term,
                        index=self.log.last_index(),
                        log_term=self.log.last_term(),
                        force=force,
                    )
                )

    def _become_leader(self) -> None:
        assert self.role is Role.CANDIDATE, "only a candidate can become leader"
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        last = self.log.last_index()
        for p in self.peers:
            pr = Progress(last + 1)
            if p == self.id:
                pr.match = last
                pr.state = ProgressState.REPLICATE
            self.progress[p] = pr
        # a no-op of our own term: committing it commits every earlier entry safely
        self.log.append_new([Entry(last + 1, self.term, b"", ENTRY_NOOP)])
        self._after_leader_append()

    def _tally(self) -> str:
        granted = sum(1 for v in self.votes.values() if v)
        rejected = len(self.votes) - granted
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
        if m.type in (MsgType.APPEND, MsgType.HEARTBEAT):
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
        elif m.type is MsgType.TIMEOUT_NOW:
            self.campaign(transfer=True)

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.commit:
            self._send(m.src, MsgType.APPEND_RESP, index=self.log.commit)
            return
        if self.log.matches(m.index, m.log_term):
            last_new = self.log.merge(m.index, m.entries)
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
                    1 for p, pr in self.progress.items() if p == self.id or pr.recent_active
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
        if to is None or to == self.id or to not in self.progress or self.transferee:
            return
        pr = self.progress[to]
        if pr.recent_active and self.log.last_index() - pr.match < self.config.max_transfer_lag:
            self.transfer_leadership(to)

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        if m.type is MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.paused = False
            if m.context > pr.read_ack:
                pr.read_ack = m.context
                self._release_reads()
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

    def _handle_reject(self, peer: str, pr: Progress, m: Message) -> None:
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
            # next heartbeat, so its state machine is not a heartbeat behind
            self._heartbeat(peer, pr)

    def _release_reads(self) -> None:
        acks = sorted(
            (self.read_seq if p == self.id else pr.read_ack for p, pr in self.progress.items()),
            reverse=True,
        )
        confirmed = acks[self.quorum - 1]
        while self.pending_reads and self.pending_reads[0][0] <= confirmed:
            _, index, ctx = self.pending_reads.pop(0)
            self.read_states.append(ReadState(ctx, index))

    def _maybe_commit(self) -> bool:
        matches = sorted((pr.match for pr in self.progress.values()), reverse=True)
        n = matches[self.quorum - 1]
        # Raft 5.4.2 (Figure 8): counting replicas only commits entries of our own term
        if n > self.log.commit and self.log.term(n) == self.term:
            return self.log.commit_to(n)
        return False

    def _after_leader_append(self) -> None:
        me = self.progress[self.id]
        me.match = self.log.last_index()
        me.next = me.match + 1
        self._maybe_commit()
        self._broadcast_append()

    def _broadcast_append(self) -> None:
        for p in self.peers:
            if p != self.id:
                pr = self.progress[p]
                while not pr.blocked(self.config.max_inflight):
                    if not self._send_append(p):
                        break

    def _send_append(self, peer: str) -> bool:
        """Send one append (possibly empty, to carry the commit index). False if none sent."""
        pr = self.progress[peer]
        if pr.blocked(self.config.max_inflight):
            return False
        last = self.log.last_index()
        if pr.next > last + 1:
            pr.next = last + 1
        if pr.state is ProgressState.REPLICATE and pr.next > last and pr.inflight:
            return False  # nothing new to stream; heartbeats carry the commit
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        assert prev_term is not None, f"progress of {peer} points past our log"
        batch: list[Entry] = []
        size = 0
        for e in self.log.slice(pr.next, last + 1):
            if batch and (
                len(batch) >= self.config.max_msg_entries
                or size + len(e.data) > self.config.max_msg_bytes
            ):
                break
            batch.append(e)
            size += len(e.data)
        self._send(
            peer,
            MsgType.APPEND,
            index=prev,
            log_term=prev_term,
            entries=tuple(batch),
            commit=self.log.commit,
        )
        pr.commit_sent = max(pr.commit_sent, min(self.log.commit, prev + len(batch)))
        if pr.state is ProgressState.PROBE:
            pr.paused = True
        elif batch:
            pr.next = batch[-1].index + 1
            pr.inflight.append((batch[-1].index, self.leader_ticks))
        else:
            return False
        return True

    # ---- plumbing ------------------------------------------------------------------

    def _send(self, to: str, type: MsgType, term: int | None = None, **fields) -> None:
        self.msgs.append(Message(type, self.id, to, self.term if term is None else term, **fields))
