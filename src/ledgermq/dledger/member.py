"""One member of one DLedger group: the asyncio shell around a `RaftNode`.

The driver loop (DESIGN principle 2) runs each Ready in a fixed order:

1. persist: cut the stored log at the first conflicting entry, append the new entries,
   save term/vote; in ``durable`` mode fsync once for the whole Ready (group commit). The
   fsync is the store's lean one (the data files only; see `EntryStore.sync`). A small
   Ready is fsynced right on the loop thread (an fdatasync of a few KiB costs less than
   a thread pool round trip and its GIL hand-back); a large one in the executor, so the
   loop keeps taking requests and messages meanwhile;
2. send the Ready's messages (so a follower's ack leaves only once the entries are on
   its disk);
3. apply committed entries to the state machine and complete the proposals and reads
   waiting for them;
4. advance.

Refinements, all within what Raft allows:

* a leader sends ``Ready.early`` messages (its appends and heartbeats) *before* step 1,
  so its own write runs in parallel with the followers' (Raft thesis 10.2.1; the core
  counts the leader's copy toward commit only after advance() says it is durable);
* a leader whose Ready is fsynced in the executor applies the Ready's committed entries
  (already on its own disk, for the same reason) while the fsync runs, so replies do not
  wait for the next write;
* appends arrive through `submit`/`submit_many`, which only queue them: the loop proposes
  everything queued at once (one core call, one round of appends per follower);
* a leader's empty appends (they only carry the commit index to a follower that has
  everything) wait up to ``commit_hold_ms`` for the next append to that follower and ride
  along with it; at low load that halves the messages each entry costs.

Flush modes:

* ``durable`` (default): nothing is acknowledged before it is fsynced. An acknowledged
  entry is on the disk of a majority.
* ``interval``: entries are written at once and fsynced by a background flusher every
  ``flush_interval_ms``; followers ack before the fsync. Weaker: if a majority crashes
  together (power loss), entries acknowledged within the last interval can be lost.
  (DLedger itself works this way, with 10 ms.)

Timing defaults (`MemberConfig`): a tick every 20 ms, heartbeats every 3 ticks (60 ms),
election timeout 15 ticks randomized to [300, 600) ms. After a leader dies, a follower
starts a pre-vote within 0.6 s, so a new leader takes appends well within 1 s.

Indexes in this module's public methods are DLedger's (0-based) unless named ``raft_``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, fields, replace
from typing import Any

from ledgermq.dledger.core import (
    Config,
    Entry,
    Message,
    MsgType,
    ProposeError,
    RaftNode,
    Ready,
    Role,
)
from ledgermq.dledger.core.types import (
    ENTRY_CONFIG,
    ENTRY_NORMAL,
    CommittedEntryConflict,
    ConfChangeType,
    ConfigChange,
    ConfState,
    ErrorCode,
    Snapshot,
    decode_config,
)
from ledgermq.dledger.log_storage import RaftLogStorage
from ledgermq.dledger.protocol import Code, LogEntry
from ledgermq.dledger.snapshot import SnapshotError, decode_context, encode_context
from ledgermq.dledger.statemachine import LogOnlyStateMachine, StateMachine
from ledgermq.dledger.store.entry_codec import HEADER_SIZE
from ledgermq.dledger.store.entry_store import StoreError, StoreFullError
from ledgermq.storage.disk import Disk, DiskError, DiskFullError, OsDisk

log = logging.getLogger(__name__)

FLUSH_MODES = ("durable", "interval")
DEFAULT_SNAPSHOT_THRESHOLD = 1000  # DLedger's snapshotThreshold


@dataclass(frozen=True, slots=True)
class MemberConfig:
    tick_ms: int = 20
    election_ticks: int = 15
    heartbeat_ticks: int = 3
    flush_mode: str = "durable"
    flush_interval_ms: int = 10
    request_timeout: float = 3.0  # server side: a pending append fails with 502 after it
    max_pending: int = 10_000  # more proposals waiting than this: 503
    max_inflight: int = 64  # Raft append messages in flight per follower
    max_msg_entries: int = 256
    max_msg_bytes: int = 1 << 20
    max_get_entries: int = 64
    data_file_size: int = 1 << 30
    index_file_size: int = 1 << 25  # 1 Mi entries of 32 bytes per index file
    # durable mode: keep this much of the data file ahead of the write position
    # written with zeros and fsynced (in a background thread), so the hot-path
    # fdatasync overwrites initialized blocks; 0 = off
    zero_ahead_bytes: int = 4 << 20
    preferred_leader: str | None = None
    # take a snapshot every this many applied entries (DLedger's snapshotThreshold);
    # 0 = never; None = 1000 unless the state machine is the log-only default (whose
    # product is the log itself, so it is never compacted)
    snapshot_threshold: int | None = None
    max_cache_bytes: int = 4 << 20  # stable entries the node keeps in memory
    # durable mode: a Ready with at most this much entry data is fsynced on the loop
    # thread (an fdatasync of a small write is cheaper than a thread pool round trip);
    # larger ones in the executor, so the loop keeps reading meanwhile
    inline_sync_bytes: int = 256 << 10
    # the same for a leader's Readies: above it the leader answers what it committed
    # while its new entries are fsynced in a thread
    leader_inline_sync_bytes: int = 16 << 10
    # a leader's empty appends (they only carry the commit index) wait up to this long
    # for the next append to the same follower and ride along with it: at low load that
    # halves the messages (each is answered); the follower applies that much later
    commit_hold_ms: float = 2.0
    snapshot_chunk_bytes: int = 1 << 20  # data per INSTALL_SNAPSHOT message

    def __post_init__(self) -> None:
        if self.flush_mode not in FLUSH_MODES:
            raise ValueError(f"flush mode {self.flush_mode!r} is not one of {FLUSH_MODES}")
        if self.snapshot_threshold is not None and self.snapshot_threshold < 0:
            raise ValueError(f"snapshot_threshold {self.snapshot_threshold} is negative")

    def raft_config(self) -> Config:
        extra = {}
        if "max_pending_proposals" in {f.name for f in fields(Config)}:
            extra["max_pending_proposals"] = self.max_pending
        return Config(
            election_ticks=self.election_ticks,
            heartbeat_ticks=self.heartbeat_ticks,
            max_inflight=self.max_inflight,
            max_msg_entries=self.max_msg_entries,
            max_msg_bytes=self.max_msg_bytes,
            preferred_leader=self.preferred_leader,
            max_cache_bytes=self.max_cache_bytes,
            snapshot_chunk_bytes=self.snapshot_chunk_bytes,
            **extra,
        )


class MemberError(Exception):
    """A request this member refuses or failed: a DLedger `Code` and why."""

    def __init__(self, code: int, message: str, leader_id: str | None = None) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.leader_id = leader_id


def _error(e: ProposeError) -> MemberError:
    # the core's error codes are DLedger's response codes already
    return MemberError(int(e.code), e.message, e.leader_id)


class _Pending:
    """A proposed entry waiting to be applied."""

    __slots__ = ("deadline", "future", "term")

    def __init__(self, term: int, future: asyncio.Future[Any], deadline: float) -> None:
        self.term = term
        self.future = future
        self.deadline = deadline


class _Queued:
    """Bodies submitted but not proposed yet: the driver proposes everything queued in
    one core call when it wakes. A placed submission (`submit_placed`) also records where
    its first entry must land and in which term, checked when it is proposed; it has one
    future, for its last entry (the others' are one per body)."""

    __slots__ = ("bodies", "deadline", "futures", "placed_at", "term")

    def __init__(
        self,
        bodies: list[bytes],
        futures: list[asyncio.Future[Any]],
        deadline: float,
        placed_at: int = -1,
        term: int = 0,
    ) -> None:
        self.bodies = bodies
        self.futures = futures
        self.deadline = deadline
        self.placed_at = placed_at  # -1: not placed
        self.term = term


SendFn = Callable[[str, Message], None]  # (peer address, message)


def coalesce(messages: list[Message], max_bytes: int) -> list[Message]:
    """Merge what one Ready says to each peer, without changing what the peer concludes.

    Proposals that arrive one by one make the core send one append per entry while the
    in-flight window is open; consecutive appends to one follower, the second continuing
    the first (same term, its previous entry = the first's last), are one append to the
    follower, and its single ack covers both (the leader frees in-flight appends up to
    the acked index). Of several heartbeats to one peer only the last matters: commit and
    ReadIndex context only grow. Any other message to a peer keeps its place: appends
    are never merged across it.
    """
    out: list[Message] = []
    # dst -> position in `out` of the append later ones may join, with what they add:
    # (entries so far, their data bytes, highest commit)
    open_append: dict[str, int] = {}
    grown: dict[int, tuple[list[Entry], int, int]] = {}
    last_heartbeat: dict[str, int] = {}
    for m in messages:
        t = m.type
        if t is MsgType.APPEND:
            at = open_append.get(m.dst)
            if at is not None:
                head = out[at]
                acc = grown.get(at)
                if acc is None:
                    acc = (list(head.entries), sum(len(e.data) for e in head.entries), head.commit)
                entries, size, commit = acc
                end_term = entries[-1].term if entries else head.log_term
                add = sum(len(e.data) for e in m.entries)
                if (
                    head.term == m.term
                    and m.index == head.index + len(entries)
                    and m.log_term == end_term
                    and size + add <= max_bytes
                ):
                    entries.extend(m.entries)
                    grown[at] = (entries, size + add, max(commit, m.commit))
                    continue
            open_append[m.dst] = len(out)
        elif t is MsgType.HEARTBEAT:
            at = last_heartbeat.get(m.dst)
            if at is not None and out[at].term == m.term:
                out[at] = m  # the newer heartbeat takes the older one's place
                continue
            last_heartbeat[m.dst] = len(out)
        else:
            open_append.pop(m.dst, None)
            last_heartbeat.pop(m.dst, None)
        out.append(m)
    for at, (entries, _, commit) in grown.items():
        out[at] = replace(out[at], entries=tuple(entries), commit=commit)
    return out


class Member:
    def __init__(
        self,
        group: str,
        self_id: str,
        peers: dict[str, str],
        store_dir: str,
        *,
        send: SendFn,
        config: MemberConfig | None = None,
        state_machine: StateMachine | None = None,
        disk: Disk | None = None,
        executor: Executor | None = None,
        rng: random.Random | None = None,
        join: bool = False,
        flush: Callable[[], None] | None = None,
    ) -> None:
        """`peers`: id -> address. Normally the group's initial voters, self included.
        With ``join=True`` this member is being added to a running group: `peers` are
        addresses to reach (the current members; self may be among them), and the
        member starts with no configuration and learns it from the leader's log or
        snapshot (the leader adds it with a membership change). Keep passing
        ``join=True`` when restarting a member that was added this way."""
        if self_id not in peers and not join:
            raise ValueError(f"self id {self_id!r} is not among the peers {sorted(peers)}")
        self.group = group
        self.self_id = self_id
        self.join = join
        # every address this member knows (bootstrap peers, config entries, snapshot
        # context); `peers` is the part that belongs to current members
        self._addresses: dict[str, str] = dict(peers)
        self._bootstrap = [] if join else list(peers)
        self.peers = dict(peers)
        self.store_dir = store_dir
        self.config = config or MemberConfig()
        self.state_machine: StateMachine = state_machine or LogOnlyStateMachine()
        self._send = send
        self._flush = flush  # pushes what `send` buffered onto the wire
        self._disk = disk or OsDisk()
        self._executor = executor
        self._rng = rng or random.Random()
        self._loop = asyncio.get_running_loop()
        self.storage: RaftLogStorage | None = None
        self.node: RaftNode | None = None
        self.applied = 0  # raft numbering
        self._initial_state = self.state_machine.snapshot()
        self._pending: dict[int, _Pending] = {}  # raft index -> proposal
        # submitted, proposed by the driver loop all at once: (bodies, futures, deadline)
        self._queued: list[_Queued] = []
        self._queued_n = 0
        # log offset right after everything queued, while all of it is accounted for
        # (placed submissions need it; None: recompute from the log)
        self._queued_end: int | None = None
        # called when placed entries were refused after their bytes were made (their
        # owner must not assume the log continues after them)
        self.on_placement_lost: Callable[[], None] | None = None
        # called as (role, term, leader id) after a Ready in which any of them changed
        self.on_role_change: Callable[[Role, int, str | None], None] | None = None
        self._role_seen: tuple[Role, int, str | None] | None = None
        self._held: list[Message] = []  # commit-only appends waiting (commit_hold_ms)
        self._held_timer: asyncio.TimerHandle | None = None
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._read_seq = 0
        self._apply_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._leader_waiters: list[tuple[str, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._store_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._ticks = 0
        self._disk_trouble: tuple[float, int, str] | None = None  # (until, code, why)
        # set while the store is reopened in place: the old node must not run meanwhile
        self._reloading = False
        self.generation = 0
        # why this replica left service for good (it diverged from the group), or None
        self.diverged: str | None = None
        self._running = False
        threshold = self.config.snapshot_threshold
        if threshold is None:
            log_only = isinstance(self.state_machine, LogOnlyStateMachine)
            threshold = 0 if log_only else DEFAULT_SNAPSHOT_THRESHOLD
        self.snapshot_threshold = threshold
        self._snap_index = 0  # raft index of the newest stored snapshot
        self._snap_task: asyncio.Task[None] | None = None  # saving or compacting
        self._compact_retry_at = 0.0  # loop time of the next compaction attempt (0: none)
        self._applied_conf = ConfState()  # the configuration in effect at `applied`
        self.snapshots_taken = 0
        self.snapshots_installed = 0

    # ---- life cycle ------------------------------------------------------------------

    async def start(self) -> Member:
        self._open()
        self._running = True
        self._task = self._loop.create_task(self._run(), name=f"dledger-{self.group}")
        if self.config.flush_mode == "interval":
            self._flusher = self._loop.create_task(self._flush_loop())
        return self

    def _open(self, durable_limit: int | None = None) -> None:
        """Opens the store and builds the node from it; `durable_limit` (a DLedger
        index) cuts off entries above the last one known to be fsynced."""
        self.storage = RaftLogStorage(
            self._disk,
            self.store_dir,
            self.self_id,
            data_file_size=self.config.data_file_size,
            index_file_size=self.config.index_file_size,
            zero_ahead=self.config.zero_ahead_bytes if self.config.flush_mode == "durable" else 0,
        )
        view = self.storage.open(durable_limit=durable_limit)
        # bumped on every (re)open: the state machine below is rebuilt from the disk, so
        # a read that waited for `applied` before the reload must look again
        self.generation += 1
        snap = view.snapshot() if view.snapshot_meta().index else None
        if view.snapshot_meta().index and snap is None:
            self.storage.close()
            self.storage = None
            raise StoreError(f"{self.group}/{self.self_id}: the newest snapshot is unreadable")
        # addresses: the snapshot's, then those recorded by config entries in the log
        if snap is not None:
            self._addresses.update(decode_context(snap.meta.context)[1])
        for e in view.config_entries():
            self._learn_config_entry(e)
        # a state machine that persists its own progress (applied_index(), DLedger
        # numbering) resumes after it instead of replaying the whole log
        resume = self._resume_index(view.snapshot_meta().index, view.last_index())
        self.node = RaftNode(
            self.self_id,
            self._bootstrap,
            view,
            self.config.raft_config(),
            self._rng,
            applied=resume,
        )
        if snap is not None and resume is None:
            self.state_machine.restore(snap.data)
            self.applied = self._snap_index = snap.meta.index
        elif snap is not None:
            self._snap_index = snap.meta.index
            self.applied = resume  # type: ignore[assignment]
        else:
            if resume is None:
                self.state_machine.restore(self._initial_state)
            self._snap_index = 0
            self.applied = resume or 0
        # the configuration at or below the applied index (the core's history item 0)
        self._applied_conf = self.node.conf_history[0][2]
        self._refresh_peers()
        self._wake.set()  # committed entries from the disk are replayed at once

    def _resume_index(self, snap_index: int, last_index: int) -> int | None:
        """The raft index the state machine says it applied and kept, if it says, within
        what this log can vouch for (a log cut shorter, e.g. by a power loss in
        interval mode, cannot confirm more)."""
        persisted = getattr(self.state_machine, "applied_index", None)
        if persisted is None:
            return None
        index = persisted()
        if index is None or index < 0:
            return None
        return max(snap_index, min(index + 1, last_index))

    async def stop(self) -> None:
        self._running = False
        self._wake.set()
        await self._wait_snapshot_task()
        for task in (self._task, self._flusher):
            if task is None:
                continue
            # let a running persist finish (an fsync cannot be called back from its
            # thread; closing the store under it would fail it)
            try:
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            except TimeoutError:
                task.cancel()
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("%s/%s: driver task failed", self.group, self.self_id)
            if not task.done():
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._fail_all(Code.NETWORK_ERROR, f"member {self.self_id} of {self.group} stopped")
        async with self._store_lock:
            if self.storage is not None:
                self.storage.close()
                self.storage = None

    # ---- inputs ------------------------------------------------------------------------

    def step(self, msg: Message) -> None:
        if self._reloading or self.diverged:
            return  # as if it arrived while this member was down
        try:
            self.node.step(msg)  # type: ignore[union-attr]
        except CommittedEntryConflict as exc:
            self._diverge(exc)
            return
        self._wake.set()

    def tick(self) -> None:
        if self._reloading or self.diverged:
            return
        self.node.tick()  # type: ignore[union-attr]
        self._ticks += 1
        if self._ticks % 5 == 0 and (self._pending or self._queued):
            self._expire_pending()
        self._wake.set()

    # ---- queries -----------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self.node.role  # type: ignore[union-attr]

    @property
    def leader_id(self) -> str | None:
        return self.node.leader_id  # type: ignore[union-attr]

    @property
    def is_leader(self) -> bool:
        return self.node is not None and self.node.role is Role.LEADER

    def _storage(self) -> RaftLogStorage:
        storage = self.storage
        if storage is None:
            raise MemberError(Code.DISK_ERROR, f"{self.self_id} is reopening its store")
        return storage

    def metadata(self) -> dict:
        node = self.node
        storage = self._storage()
        assert node is not None
        return {
            "group": self.group,
            "selfId": self.self_id,
            "leaderId": node.leader_id,
            "leaderAddr": self.peers.get(node.leader_id or ""),
            "term": node.term,
            "role": node.role.value,
            "peers": dict(self.peers),
            "commitIndex": node.commit - 1,
            "appliedIndex": self.applied - 1,
            "lastIndex": storage.last_index,
            "beginIndex": storage.begin_index,
            "snapshotIndex": self._snap_index - 1,
            "voters": list(node.conf.voters),
            "learners": list(node.conf.learners),
            "flushMode": self.config.flush_mode,
            "diverged": self.diverged,
            # the leader's view of each member's log: the highest index known to be
            # there (DLedger numbering; its own is its last index); {} elsewhere
            "matchIndex": (
                {p: pr.match - 1 for p, pr in node.progress.items()}
                | {self.self_id: storage.last_index}
                if node.role is Role.LEADER
                else {}
            ),
        }

    def get(self, index: int, count: int = 1) -> list[LogEntry]:
        """Applied (so committed and stored) entries from DLedger index `index`."""
        top = self.applied - 1
        if index < 0 or index > top:
            raise MemberError(
                Code.INDEX_OUT_OF_RANGE,
                f"index {index} is not committed on {self.self_id} (applied up to {top})",
                self.leader_id,
            )
        count = max(1, min(count, self.config.max_get_entries, top - index + 1))
        storage = self._storage()
        if index < storage.begin_index:
            raise MemberError(
                Code.INDEX_LESS_THAN_LOCAL_BEGIN,
                f"entry {index} is compacted into a snapshot on {self.self_id} (the log "
                f"begins at {storage.begin_index})",
                self.leader_id,
            )
        try:
            return [storage.get(i) for i in range(index, index + count)]
        except StoreError as exc:
            raise MemberError(Code.DISK_ERROR, f"reading entry {index}: {exc}") from exc

    # ---- proposals ---------------------------------------------------------------------

    def submit(self, bodies: list[bytes]) -> list[asyncio.Future[Any]]:
        """Propose `bodies` as consecutive entries; one future per entry resolves to
        (DLedger index, state machine result) once the entry is applied here."""
        (r,) = self.submit_many([bodies])
        if isinstance(r, MemberError):
            raise r
        return r

    def _refusal(self, node: RaftNode) -> MemberError | None:
        """Why this member cannot take proposals now, if it cannot."""
        if node.role is not Role.LEADER:
            return MemberError(Code.NOT_LEADER, f"{self.self_id} is not the leader", node.leader_id)
        if self._disk_trouble is not None:
            trouble = self._disk_trouble
            if trouble[0] > self._loop.time():
                return MemberError(trouble[1], trouble[2], node.leader_id)
            self._disk_trouble = None
        if node.transferee is not None:
            return MemberError(
                Code.LEADER_TRANSFERRING, f"transferring to {node.transferee}", node.leader_id
            )
        return None

    def _uncommitted(self, node: RaftNode) -> int:
        return max(len(self._pending), node.pending_proposals()) + self._queued_n

    def _full(self, node: RaftNode, uncommitted: int) -> MemberError:
        return MemberError(
            Code.LEADER_PENDING_FULL,
            f"{uncommitted} appends are already waiting on {self.self_id}",
            node.leader_id,
        )

    def submit_many(
        self, batches: list[list[bytes]]
    ) -> list[list[asyncio.Future[Any]] | MemberError]:
        """`submit` for several requests at once (those that arrived in one read): for
        each batch its futures, or the MemberError that refused it."""
        node = self.node
        assert node is not None
        refused = self._refusal(node)
        if refused is not None:
            return [refused] * len(batches)
        # each batch whole or not at all: a batch cut short by the core's own bound would
        # leave the client not knowing which of its entries went in
        uncommitted = self._uncommitted(node)
        limit = self.config.max_pending
        deadline = self._loop.time() + self.config.request_timeout
        create = self._loop.create_future
        queued = self._queued
        out: list[list[asyncio.Future[Any]] | MemberError] = []
        added = 0
        for bodies in batches:
            n = len(bodies)
            if uncommitted + n > limit:
                out.append(self._full(node, uncommitted))
                continue
            # proposed by the driver loop together with everything else submitted before
            # it wakes: one core call and one round of appends for the lot (principle 8)
            futures = [create()] if n == 1 else [create() for _ in bodies]
            queued.append(_Queued(bodies, futures, deadline))
            uncommitted += n
            added += n
            out.append(futures)
        if added:
            self._queued_n += added
            self._queued_end = None
            self._wake.set()
        return out

    def log_end_pos(self) -> int:
        """The log offset right after the last entry this member holds, including
        entries proposed but not yet written (where the next entry's header goes, unless
        it must skip to the next data file)."""
        node, storage = self.node, self.storage
        assert node is not None and storage is not None
        store = storage.store
        end = store.write_pos
        # raft index = DLedger index + 1: entries above the store's last are unwritten
        for e in node.log.slice(store.last_index + 2, node.log.last_index() + 1):
            size = HEADER_SIZE + len(e.data)
            end = store.place(end, size) + size
        return end

    def submit_placed(
        self, sizes: list[int], encode: Callable[[list[int]], list[bytes]]
    ) -> asyncio.Future[Any]:
        """Propose entries whose bytes depend on where they land (a broker's CommitLog
        record carries its own physical offset, its entry's pos + 48).

        `sizes` are the body lengths; `encode(positions)` gets each entry's pos (the
        offset of its 48-byte header, the same on every replica) and returns the bodies,
        of exactly those lengths. It runs now, synchronously, so the caller may assign
        other sequence numbers (queue offsets) in log order inside it. Returns one future,
        for the last entry: (its DLedger index, result) once applied here; entries apply
        in order, so the others are then applied too. Raises MemberError when refused
        (nothing was encoded then). If the log moves under the entries before they are
        proposed (a new term in between), the future fails with TERM_CHANGED and
        `on_placement_lost` is called."""
        node = self.node
        assert node is not None
        refused = self._refusal(node)
        if refused is not None:
            raise refused
        uncommitted = self._uncommitted(node)
        if uncommitted + len(sizes) > self.config.max_pending:
            raise self._full(node, uncommitted)
        store = self.storage.store  # type: ignore[union-attr]
        end = self._queued_end
        if end is None:
            end = self.log_end_pos()
            for q in self._queued:
                for b in q.bodies:
                    size = HEADER_SIZE + len(b)
                    end = store.place(end, size) + size
        positions: list[int] = []
        for n in sizes:
            size = HEADER_SIZE + n
            at = store.place(end, size)
            positions.append(at)
            end = at + size
        bodies = encode(positions)
        if [len(b) for b in bodies] != list(sizes):
            raise ValueError("encode() returned bodies of other lengths than announced")
        future = self._loop.create_future()
        deadline = self._loop.time() + self.config.request_timeout
        self._queued.append(_Queued(bodies, [future], deadline, positions[0], node.term))
        self._queued_n += len(bodies)
        self._queued_end = end
        self._wake.set()
        return future

    def _propose_queued(self, node: RaftNode) -> None:
        queued, self._queued = self._queued, []
        self._queued_n = 0
        self._queued_end = None
        if any(q.placed_at >= 0 for q in queued):
            queued = self._check_placement(node, queued)
            if not queued:
                return
        bodies = queued[0].bodies if len(queued) == 1 else [b for q in queued for b in q.bodies]
        r = node.propose_many(bodies)
        if isinstance(r, ProposeError):
            exc = _error(r)
            for q in queued:
                for fut in q.futures:
                    if not fut.done():
                        fut.set_exception(exc)
            if any(q.placed_at >= 0 for q in queued) and self.on_placement_lost is not None:
                self.on_placement_lost()
            return
        term = node.term
        pending = self._pending
        index = r
        for q in queued:
            deadline = q.deadline
            # a placed submission has one future, for its last entry
            index += len(q.bodies) - len(q.futures)
            for fut in q.futures:
                stale = pending.get(index)
                if stale is not None and not stale.future.done():
                    # lost and regained leadership between two Readies: that entry is gone
                    stale.future.set_exception(
                        MemberError(Code.TERM_CHANGED, f"entry {index - 1} was replaced", node.id)
                    )
                pending[index] = _Pending(term, fut, deadline)
                index += 1

    def _check_placement(self, node: RaftNode, queued: list[_Queued]) -> list[_Queued]:
        """Drops the placed submissions that would not land where their bytes say."""
        store = self.storage.store  # type: ignore[union-attr]
        end = self.log_end_pos()
        keep: list[_Queued] = []
        lost = False
        for q in queued:
            if q.placed_at >= 0:
                first = store.place(end, HEADER_SIZE + len(q.bodies[0]))
                if first != q.placed_at or q.term != node.term:
                    lost = True
                    exc = MemberError(
                        Code.TERM_CHANGED,
                        f"the log moved before entries placed at {q.placed_at} were proposed",
                        node.leader_id,
                    )
                    for fut in q.futures:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
            for b in q.bodies:
                size = HEADER_SIZE + len(b)
                end = store.place(end, size) + size
            keep.append(q)
        if lost and self.on_placement_lost is not None:
            self.on_placement_lost()
        return keep

    async def propose(self, data: bytes) -> tuple[int, object]:
        """Propose one entry; (DLedger index, state machine result) once applied."""
        (fut,) = self.submit([data])
        return await fut

    def _expire_pending(self) -> None:
        now = self._loop.time()
        late = [q for q in self._queued if q.deadline <= now]
        if late:  # never proposed: the loop was busy (e.g. reopening the store)
            self._queued = [q for q in self._queued if q.deadline > now]
            self._queued_n = sum(len(q.bodies) for q in self._queued)
            self._queued_end = None
            if any(q.placed_at >= 0 for q in late) and self.on_placement_lost is not None:
                self.on_placement_lost()
            for q in late:
                for fut in q.futures:
                    if not fut.done():
                        fut.set_exception(
                            MemberError(
                                Code.WAIT_QUORUM_ACK_TIMEOUT,
                                f"not proposed within {self.config.request_timeout}s",
                                self.leader_id,
                            )
                        )
        expired = [i for i, p in self._pending.items() if p.deadline <= now]
        for i in expired:
            p = self._pending.pop(i)
            if not p.future.done():
                p.future.set_exception(
                    MemberError(
                        Code.WAIT_QUORUM_ACK_TIMEOUT,
                        f"entry {i - 1} not committed within {self.config.request_timeout}s "
                        "(it may still be committed later)",
                        self.leader_id,
                    )
                )

    # ---- linearizable reads ------------------------------------------------------------

    async def read_index(self, timeout: float | None = None) -> int:
        """Wait until a read served from this member's state machine is linearizable
        (ReadIndex: the leader confirms it still leads, then applies up to its commit
        index as of the request). Returns that index (raft numbering)."""
        timeout = self.config.request_timeout if timeout is None else timeout
        deadline = self._loop.time() + timeout
        async with asyncio.timeout(timeout):
            while True:
                node = self.node
                assert node is not None
                self._read_seq += 1
                ctx = self._read_seq.to_bytes(8, "big")
                err = node.read_index(ctx)
                if err is None:
                    fut: asyncio.Future[int] = self._loop.create_future()
                    self._reads[ctx] = fut
                    self._wake.set()
                    try:
                        index = await fut
                    finally:
                        self._reads.pop(ctx, None)
                    break
                if err.code is not ErrorCode.LEADER_NOT_READY:
                    raise _error(err)
                # a new leader has not committed its no-op yet: that takes one round trip
                if self._loop.time() + self.config.tick_ms / 1000 > deadline:
                    raise _error(err)
                await asyncio.sleep(self.config.tick_ms / 1000)
            await self.wait_applied(index)
        return index

    def ensure_fresh(self, generation: int, raft_index: int) -> None:
        """Raises (a retryable LEADER_NOT_READY) unless the state machine is still the
        one a read started on (`generation`) and has applied `raft_index`: a reload from
        disk while the read waited may have put it back to an older state."""
        if self.generation != generation or self.applied < raft_index:
            raise MemberError(
                Code.LEADER_NOT_READY,
                f"{self.self_id} reloaded its state during the read; retry",
                self.leader_id,
            )

    async def wait_applied(self, raft_index: int) -> None:
        if self.applied >= raft_index:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._apply_waiters.append((raft_index, fut))
        await fut

    # ---- leadership transfer -------------------------------------------------------------

    async def transfer_leadership(self, to: str, timeout: float | None = None) -> None:
        node = self.node
        assert node is not None
        if to not in self.peers:
            raise MemberError(Code.UNKNOWN_MEMBER, f"{to!r} is not a member of {self.group}")
        if node.leader_id == to:
            return
        err = node.transfer_leadership(to)
        if err is not None:
            raise _error(err)
        self._wake.set()
        fut: asyncio.Future[None] = self._loop.create_future()
        entry = (to, fut)
        self._leader_waiters.append(entry)
        timeout = timeout or 2 * self.config.election_ticks * self.config.tick_ms / 1000 + 0.5
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise MemberError(
                Code.TAKE_LEADERSHIP_FAILED,
                f"{to} did not take leadership of {self.group} within {timeout:.1f}s",
                node.leader_id,
            ) from None
        finally:
            if entry in self._leader_waiters:
                self._leader_waiters.remove(entry)

    # ---- the driver loop -----------------------------------------------------------------

    async def _run(self) -> None:
        wake = self._wake
        while self._running:
            await wake.wait()
            wake.clear()
            node = self.node
            assert node is not None
            try:
                if self._queued:
                    self._propose_queued(node)
                while self._running and node.has_ready():
                    rd = node.ready()
                    # (a membership change first teaches the address map its new
                    # members in persist: then everything waits for it)
                    early = rd.early if rd.conf_state is None else 0
                    if early:
                        # a leader's appends go out before its own write (thesis 10.2.1;
                        # the core counts its copy once advance() says it is durable)
                        self._send_all(rd.messages[:early])
                        inline = self._inline(rd, self.config.leader_inline_sync_bytes)
                        if not inline and self._answer_early(rd):
                            # what a leader commits is on its own disk already: answer
                            # it while this Ready's entries are written in a thread
                            self._apply(rd)
                            await self._persist(rd, inline)
                            self._send_all(rd.messages[early:])
                        else:
                            await self._persist(rd, inline)
                            self._send_all(rd.messages[early:])
                            self._apply(rd)
                    else:
                        await self._persist(rd, self._inline(rd, self.config.inline_sync_bytes))
                        self._send_all(rd.messages)
                        self._apply(rd)
                    node.advance(rd)
                    self._after_ready(node)
                    if self._queued:
                        self._propose_queued(node)
            except (StoreError, DiskError) as exc:
                await self._reload_after(exc)
            except Exception as exc:
                # a bug, not the disk: never leave the group hanging with a dead loop
                log.exception("%s/%s: driver loop failed", self.group, self.self_id)
                await self._reload_after(exc)

    @staticmethod
    def _answer_early(rd: Ready) -> bool:
        """May a leader apply this Ready's committed entries before its own write?
        Yes: its match counts only once durable, so they are on its disk already; but
        keep membership changes in the usual order."""
        if not rd.committed_entries or rd.snapshot is not None or rd.conf_state is not None:
            return False
        return all(e.kind != ENTRY_CONFIG for e in rd.committed_entries)

    def _inline(self, rd: Ready, limit: int) -> bool:
        """Write and fsync this Ready on the loop thread (else the fsync goes to the
        executor)? Always in interval mode (no fsync); in durable mode when small."""
        if self.config.flush_mode != "durable":
            return True
        size = 0
        for e in rd.entries:
            size += len(e.data)
            if size > limit:
                return False
        return True

    async def _persist(self, rd: Ready, inline: bool = True) -> None:
        storage = self.storage
        assert storage is not None
        if rd.snapshot is not None or rd.conf_state is not None:
            await self._persist_snapshot_and_conf(rd)  # snapshot first; learn addresses
        if not rd.entries:
            if rd.hard_state is not None:
                # term/vote: its own small file, fsynced; commit alone: kept in memory
                storage.save_hard_state(rd.hard_state)
            return
        durable = self.config.flush_mode == "durable"
        lock = self._store_lock
        if inline and not lock.locked():
            # no one is using the store and nothing here awaits: no lock needed. The
            # lean sync fsyncs the data only (the store's index and checkpoint follow
            # later; recovery rebuilds them from the data)
            storage.append(rd.entries)
            if rd.hard_state is not None:
                storage.save_hard_state(rd.hard_state)
            if durable:
                storage.sync(full=False)
            return
        # the lock keeps the interval flusher's fsync (in a thread) off the store while
        # the loop thread writes to it
        async with lock:
            storage.append(rd.entries)
            if rd.hard_state is not None:
                storage.save_hard_state(rd.hard_state)
            if durable:
                await self._loop.run_in_executor(self._executor, storage.sync, False)

    def _send_all(self, messages: list[Message], hold: bool = True) -> None:
        if self._held:
            messages = self._held + messages
            self._held = []
        if len(messages) > 1:
            messages = coalesce(messages, self.config.max_msg_bytes)
        if hold and self.config.commit_hold_ms > 0:
            messages = self._hold_commit_only(messages)
        peers = self.peers
        send = self._send
        for m in messages:
            addr = peers.get(m.dst)
            if addr is not None:
                send(addr, m)
        if self._flush is not None:
            self._flush()

    def _hold_commit_only(self, messages: list[Message]) -> list[Message]:
        """Keep back the empty appends to followers this batch says nothing else to;
        they go out with the next messages to them, or when the hold time is up."""
        held = [m for m in messages if m.type is MsgType.APPEND and not m.entries]
        if not held:
            return messages
        busy = {m.dst for m in messages if m.type is not MsgType.APPEND or m.entries}
        now: list[Message] = []
        if busy:
            held = [m for m in held if m.dst not in busy]
            if not held:
                return messages
            now = [m for m in messages if m.dst in busy]
        self._held = held
        if self._held_timer is None:
            self._held_timer = self._loop.call_later(
                self.config.commit_hold_ms / 1000, self._send_held
            )
        return now

    def _send_held(self) -> None:
        self._held_timer = None
        if self._held and self._running:
            self._send_all([], hold=False)

    def _apply(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            # a snapshot from the leader replaced the log: reset the state machine to it
            # (committed_entries is empty in this Ready)
            self.state_machine.restore(rd.snapshot.data)
            self.applied = rd.snapshot.meta.index
            self._applied_conf = rd.snapshot.meta.conf
            self._refresh_peers()
        entries: list[Entry] = rd.committed_entries
        if entries:
            sm = self.state_machine
            pending = self._pending
            for e in entries:
                result: object = None
                error: Exception | None = None
                if e.kind == ENTRY_NORMAL:
                    try:
                        result = sm.apply(e.index - 1, e.data)
                    except Exception as exc:  # noqa: BLE001 - the proposer gets the error
                        who = f"{self.group}/{self.self_id}"
                        log.exception("%s: apply of entry %d failed", who, e.index - 1)
                        error = MemberError(Code.INTERNAL_ERROR, f"apply failed: {exc}")
                elif e.kind == ENTRY_CONFIG:
                    self._apply_config(e)
                self.applied = e.index
                p = pending.pop(e.index, None) if pending else None
                if p is None or p.future.done():
                    continue
                if p.term != e.term:
                    p.future.set_exception(
                        MemberError(
                            Code.TERM_CHANGED,
                            f"entry {e.index - 1} was replaced by another leader's entry",
                            self.leader_id,
                        )
                    )
                elif error is not None:
                    p.future.set_exception(error)
                else:
                    p.future.set_result((e.index - 1, result))
            batch_done = getattr(sm, "applied_batch", None)
            if batch_done is not None:
                try:
                    batch_done()
                except Exception:  # noqa: BLE001 - like a failed apply: logged, not fatal
                    log.exception("%s/%s: applied_batch failed", self.group, self.self_id)
        for rs in rd.read_states:
            fut = self._reads.pop(rs.ctx, None)
            if fut is None or fut.done():
                continue
            if rs.ok:
                fut.set_result(rs.index)
            else:
                fut.set_exception(
                    MemberError(Code.NOT_LEADER, "leadership lost during the read", None)
                )
        if self._apply_waiters:
            keep = []
            for index, fut in self._apply_waiters:
                if fut.done():
                    continue
                if index <= self.applied:
                    fut.set_result(None)
                else:
                    keep.append((index, fut))
            self._apply_waiters = keep

    def _after_ready(self, node: RaftNode) -> None:
        seen = (node.role, node.term, node.leader_id)
        if seen != self._role_seen:
            self._role_seen = seen
            if self.on_role_change is not None:
                try:
                    self.on_role_change(*seen)
                except Exception:  # noqa: BLE001 - a listener must not stop the driver
                    log.exception("%s/%s: role listener failed", self.group, self.self_id)
        if node.role is not Role.LEADER and self._pending:
            self._fail_pending(
                Code.TERM_CHANGED,
                f"{self.self_id} lost leadership; the entry may or may not be committed",
            )
        if self._leader_waiters:
            for to, fut in self._leader_waiters:
                if node.leader_id == to and not fut.done():
                    fut.set_result(None)
        threshold = self.snapshot_threshold
        if (
            threshold
            and node.applied - self._snap_index >= threshold
            and self._snap_task is None
            and node.log.snapshot is None  # no received snapshot waiting to be stored
        ):
            self._take_snapshot(node)
        elif (
            self._compact_retry_at
            and self._snap_task is None
            and self._loop.time() >= self._compact_retry_at
            and self.storage is not None
        ):
            # a follower held compaction back; it may have caught up or gone silent
            self._compact_retry_at = 0.0
            self._snap_task = self._loop.create_task(self._compact_task(self.storage))

    # ---- snapshots -------------------------------------------------------------------------

    def _take_snapshot(self, node: RaftNode) -> None:
        """Right after advance(): the state machine is at node.applied. Serialize it here
        (on the loop, so it is consistent), write the files in a worker thread, then
        compact the log."""
        storage = self.storage
        if storage is None:
            return
        meta = node.snapshot_meta()
        try:
            boundary = storage.boundary(meta.index)
        except StoreError as exc:
            log.error("%s/%s: no snapshot: %s", self.group, self.self_id, exc)
            return
        addresses = {m: self._addresses[m] for m in meta.conf.members() if m in self._addresses}
        meta = replace(meta, context=encode_context(boundary, addresses))
        snap = Snapshot(meta, self.state_machine.snapshot())
        self._snap_index = meta.index  # the next one is due `threshold` entries later
        self._snap_task = self._loop.create_task(self._store_snapshot(storage, snap))

    async def _store_snapshot(self, storage: RaftLogStorage, snap: Snapshot) -> None:
        try:
            saved = await self._loop.run_in_executor(
                self._executor, storage.save_snapshot_files, snap
            )
            if saved:
                self.snapshots_taken += 1
                await self._compact(storage)
        except (SnapshotError, StoreError, DiskError) as exc:
            who = f"{self.group}/{self.self_id}"
            log.error("%s: snapshot %d failed: %s", who, snap.meta.index - 1, exc)
        finally:
            self._snap_task = None

    async def _compact(self, storage: RaftLogStorage) -> None:
        """Drop the log prefix that every kept snapshot covers (so any of them can still
        be completed by the log: the fallback when the newest is damaged), but never
        what a recently active follower still needs (`compactable_index`)."""
        async with self._store_lock:
            node = self.node
            if self.storage is not storage or node is None:
                return
            kept = storage.snapshots.indexes()
            if not kept:
                return
            target = min(kept[0], node.compactable_index())
            if storage.compact(target):
                log.debug("%s/%s: log compacted up to %d", self.group, self.self_id, target - 1)
            if target < kept[0]:
                # try again after a follower had time to catch up or to count as silent
                wait = 2 * self.config.election_ticks * self.config.tick_ms / 1000
                self._compact_retry_at = self._loop.time() + wait

    async def _compact_task(self, storage: RaftLogStorage) -> None:
        try:
            await self._compact(storage)
        except (StoreError, DiskError) as exc:
            log.error("%s/%s: compaction failed: %s", self.group, self.self_id, exc)
        finally:
            self._snap_task = None

    async def _wait_snapshot_task(self) -> None:
        task = self._snap_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 30.0)
            except (TimeoutError, asyncio.CancelledError):
                pass

    async def _persist_snapshot_and_conf(self, rd: Ready) -> None:
        """Part of persist: a received snapshot is stored before anything else (its
        files, then the log restarts after it), and a membership change updates the
        address map before this Ready's messages go out."""
        snap = rd.snapshot
        if snap is not None:
            storage = self.storage
            assert storage is not None
            self._addresses.update(decode_context(snap.meta.context)[1])
            await self._wait_snapshot_task()  # one writer of snapshot/ at a time
            await self._loop.run_in_executor(self._executor, storage.save_snapshot_files, snap)
            async with self._store_lock:
                storage.install_snapshot(snap)
            self._snap_index = max(self._snap_index, snap.meta.index)
            self.snapshots_installed += 1
            log.info(
                "%s/%s: installed snapshot %d (term %d) from the leader",
                self.group,
                self.self_id,
                snap.meta.index - 1,
                snap.meta.term,
            )
        if rd.conf_state is not None:
            for e in rd.entries:
                if e.kind == ENTRY_CONFIG:
                    self._learn_config_entry(e)
            self._refresh_peers(rd.conf_state)

    # ---- membership -----------------------------------------------------------------------

    def _learn_config_entry(self, e: Entry) -> None:
        try:
            change, _ = decode_config(e.data)
        except (ValueError, KeyError, TypeError):
            log.warning("%s/%s: undecodable config entry %d", self.group, self.self_id, e.index)
            return
        if change.address:
            self._addresses[change.node_id] = change.address

    def _refresh_peers(self, conf: ConfState | None = None) -> None:
        """`peers` = the members of the configuration in effect (`conf`, the newest in
        the log) and of the committed one (a member being removed still talks to the
        group until its removal commits: a removed leader needs the acks), with their
        addresses, and self. Before a joining member knows any configuration: every
        address it was given."""
        conf = conf or self.conf
        if not conf.voters:
            self.peers = dict(self._addresses)
            return
        book = self._addresses
        ids = [*conf.members(), *self._applied_conf.members(), self.self_id]
        peers = {m: book[m] for m in ids if m in book}
        missing = [m for m in conf.members() if m not in book]
        if missing:
            log.warning("%s/%s: no address known for members %s", self.group, self.self_id, missing)
        self.peers = peers

    def _apply_config(self, e: Entry) -> None:
        """A config entry committed: members it removed are dropped from `peers` now."""
        try:
            self._applied_conf = decode_config(e.data)[1]
        except (ValueError, KeyError, TypeError):
            return
        self._refresh_peers()

    @property
    def conf(self) -> ConfState:
        node = self.node
        assert node is not None
        return node.conf

    async def change_membership(
        self, change: ConfigChange, timeout: float | None = None
    ) -> tuple[int, ConfState]:
        """Propose a single-server membership change on the leader and wait until it is
        committed and applied here: (DLedger index of the config entry, the
        configuration now). A promotion first waits (within `timeout`) until the
        learner holds everything committed when it was asked (417 otherwise)."""
        timeout = self.config.request_timeout if timeout is None else timeout
        loop = self._loop
        deadline = loop.time() + timeout
        pause = self.config.tick_ms / 1000
        adding = change.type in (ConfChangeType.ADD_LEARNER, ConfChangeType.ADD_VOTER)
        if adding and not change.address:
            raise MemberError(
                Code.UNEXPECTED_ARGUMENT, f"adding {change.node_id} needs its address"
            )
        node = self._leader_node()
        if change.type is ConfChangeType.PROMOTE and change.node_id in node.conf.learners:
            goal = node.commit
            while True:
                node = self._leader_node()
                pr = node.progress.get(change.node_id)
                if pr is None or pr.match >= goal:
                    break
                if loop.time() + pause > deadline:
                    raise MemberError(
                        Code.FALL_BEHIND_TOO_MUCH,
                        f"learner {change.node_id} holds {pr.match - 1}, not yet "
                        f"{goal - 1}: not promoted",
                        node.leader_id,
                    )
                await asyncio.sleep(pause)
        while True:
            node = self._leader_node()
            if change.address:
                # before the entry's Ready goes out, so the first append reaches it
                self._addresses[change.node_id] = change.address
            r = node.propose_config_change(change)
            if not isinstance(r, ProposeError):
                break
            if r.code is not ErrorCode.LEADER_NOT_READY or loop.time() + pause > deadline:
                raise _error(r)
            await asyncio.sleep(pause)  # the previous change (or the no-op) is committing
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending[r] = _Pending(node.term, fut, deadline)
        self._wake.set()
        await fut
        return r - 1, self.conf

    def _leader_node(self) -> RaftNode:
        node = self.node
        if node is None:
            raise MemberError(Code.DISK_ERROR, f"{self.self_id} is reopening its store")
        if node.role is not Role.LEADER:
            raise MemberError(Code.NOT_LEADER, f"{self.self_id} is not the leader", node.leader_id)
        return node

    # ---- failures ------------------------------------------------------------------------

    def _fail_pending(self, code: int, why: str) -> None:
        pending, self._pending = self._pending, {}
        queued, self._queued = self._queued, []
        self._queued_n = 0
        self._queued_end = None
        leader = self.node.leader_id if self.node is not None else None
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(MemberError(code, why, leader))
        if any(q.placed_at >= 0 for q in queued) and self.on_placement_lost is not None:
            self.on_placement_lost()
        for q in queued:
            for fut in q.futures:
                if not fut.done():
                    fut.set_exception(MemberError(code, why, leader))

    def _fail_all(self, code: int, why: str) -> None:
        self._fail_pending(code, why)
        for fut in self._reads.values():
            if not fut.done():
                fut.set_exception(MemberError(code, why))
        self._reads.clear()
        for _, fut in self._apply_waiters:
            if not fut.done():
                fut.set_exception(MemberError(code, why))
        self._apply_waiters = []

    def _diverge(self, exc: Exception) -> None:
        """This replica can no longer follow the group (see CommittedEntryConflict):
        take it out of service with a clear reason instead of applying anything more."""
        why = (
            f"{self.group}/{self.self_id} left service: {exc}; "
            "rebuild this member from a healthy one"
        )
        log.error("%s", why)
        self.diverged = why
        self._disk_trouble = (float("inf"), Code.INTERNAL_ERROR, why)
        self._fail_all(Code.INTERNAL_ERROR, why)

    async def _reload_after(self, exc: Exception) -> None:
        """A write or fsync failed: whatever this Ready held may be half on disk, so do
        what a crash would, in place: reopen the store (its recovery cuts a torn tail)
        and rebuild the node from what is on disk. Raft treats it as a restart.

        After a failed fsync the page cache cannot be trusted (Linux marks the failed
        pages clean, so reading them back and fsyncing again "succeeds"): the log is cut
        after the last entry fsynced before the failure. Never raises: the driver loop
        must survive anything, or clients would wait on a dead member."""
        self._reloading = True
        try:
            full = isinstance(exc, StoreFullError | DiskFullError) or isinstance(
                exc.__cause__, DiskFullError
            )
            disk = isinstance(exc, StoreError | DiskError)
            code = Code.DISK_FULL if full else Code.DISK_ERROR if disk else Code.INTERNAL_ERROR
            what = "disk full" if full else "disk error" if disk else "internal error"
            why = f"{self.group}/{self.self_id}: {what}: {exc}"
            log.error("%s; reloading the member from disk", why)
            # refuse appends for a moment instead of failing each one on the disk again
            self._disk_trouble = (self._loop.time() + 1.0, code, why)
            self._fail_all(code, why + " (the entry may or may not be committed)")
            await self._wait_snapshot_task()
            async with self._store_lock:
                durable: int | None = None
                if self.storage is not None:
                    durable = self.storage.durable_index()
                    with contextlib.suppress(Exception):
                        self.storage.close()
                    self.storage = None
                delay = 0.1
                while self._running:
                    try:
                        self._open(durable_limit=durable)
                        return
                    except Exception as again:  # noqa: BLE001 - keep trying, loudly
                        log.exception("%s/%s: reopen failed: %s", self.group, self.self_id, again)
                        if self.storage is not None:
                            with contextlib.suppress(Exception):
                                self.storage.close()
                            self.storage = None
                        self._fail_all(Code.DISK_ERROR, f"{why}; reopen failed: {again}")
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
        except Exception:  # noqa: BLE001 - the loop must not die
            log.exception("%s/%s: reload failed", self.group, self.self_id)
        finally:
            self._reloading = False

    async def _flush_loop(self) -> None:
        interval = self.config.flush_interval_ms / 1000
        while self._running:
            await asyncio.sleep(interval)
            if not self._running:
                break
            storage = self.storage
            if storage is None or not storage.needs_sync():
                continue
            try:
                async with self._store_lock:
                    if self.storage is storage:
                        await self._loop.run_in_executor(self._executor, storage.sync, False)
            except (StoreError, DiskError) as exc:
                log.error("%s/%s: background flush failed: %s", self.group, self.self_id, exc)
