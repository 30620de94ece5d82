"""The message store of a broker in a DLedger group: the CommitLog is the replicated log.

Each CommitLog record is the body of one DLedger entry, so the record's physical offset
is its entry's ``pos + 48`` (PROTOCOL.md section 6) and every replica holds it at the
same offset. Two things differ from the plain store:

* **Writes are proposals.** A put on the leader encodes its records once the member has
  placed them (`Member.submit_placed`: the offset is part of the record's bytes), assigns
  queue offsets in log order from the leader's own table, and is acknowledged only when
  the entries are committed (and, in durable mode, fsynced by a majority) and applied
  here. Followers refuse puts.
* **ConsumeQueues and the index are built from committed entries only**, on every
  replica, by the member's apply: no consumer ever sees a message that a failover could
  take back. Re-applying after a restart is harmless (a unit already present is skipped).

The leader's queue-offset table starts from the ConsumeQueues once everything committed
before its term is applied (`open_for_writes`), and is dropped whenever the log may have
moved under it (lost leadership, refused placement).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ledgermq.common.message import (
    MAGIC_V1,
    MAGIC_V2,
    MessageDecodeError,
    MessageExt,
    decode_for_dispatch,
    record_physical_offset,
)
from ledgermq.dledger.member import Member, MemberError
from ledgermq.dledger.protocol import Code
from ledgermq.dledger.store.entry_codec import HEADER_SIZE
from ledgermq.storage.disk import Disk
from ledgermq.store.consume_queue import ConsumeQueue
from ledgermq.store.message_store import (
    BatchToStore,
    MessageStore,
    MessageToStore,
    PutMessageResult,
    PutMessageStatus,
    StoreConfig,
    _encode_prepared,
    _index_entries,
    _Prepared,
)

log = logging.getLogger(__name__)

_HEAD = struct.Struct(">iI")  # TOTALSIZE, MAGICCODE (unsigned, as MAGIC_V1/V2)
_NO_END = 1 << 62

# A broker-metadata entry in the log (not a message): TOTALSIZE, this magic, a kind byte,
# then the kind's payload. Never a valid CommitLog magic, so no reader mistakes it.
META_MAGIC = 0x4C4D5131  # "LMQ1"
_META_HEAD = struct.Struct(">iIB")


def encode_meta(kind: int, payload: bytes) -> bytes:
    return _META_HEAD.pack(_META_HEAD.size + len(payload), META_MAGIC, kind) + payload


@dataclass(slots=True)
class _Dispatch:
    """What the leader already knows about a record it proposed (saves a decode when
    the record is applied)."""

    cq: ConsumeQueue
    queue_offset: int
    size: int
    tags_code: int
    msg: MessageToStore
    store_timestamp: int
    record: bytes  # what was proposed: only that record may use these facts


class DLedgerLogView:
    """The CommitLog reads the MessageStore makes, answered from the member's entry
    store: the record at physical offset X is the body of the entry whose header is at
    X - 48."""

    def __init__(self, member: Callable[[], Member | None], file_size: int) -> None:
        self._member = member
        self.file_size = file_size
        self.min_offset = 0
        # end of the last record applied here: what consumers can reach, and where
        # read_record stops (past it, entries are not known to be committed)
        self.wrote = 0
        self.flushed = 0

    def max_record_size(self) -> int:
        return self.file_size - HEADER_SIZE

    def read(self, phy: int, size: int) -> bytes | None:
        member = self._member()
        storage = member.storage if member is not None else None
        if storage is None:  # the member is reopening its store
            return None
        return storage.store.read_data(phy, size)

    def read_record(self, phy: int) -> bytes | None:
        """The record at `phy`, if it was applied here. A leader's log also holds
        entries not yet committed, which a new leader may replace: looked up by offset
        (VIEW_MESSAGE_BY_ID), they must not be shown, as consumers never see them."""
        head = self.read(phy, _HEAD.size)
        if head is None:
            return None
        size, magic = _HEAD.unpack(head)
        if magic not in (MAGIC_V1, MAGIC_V2) or size < _HEAD.size or phy + size > self.wrote:
            return None
        return self.read(phy, size)

    def close(self) -> None:
        pass


# how often a member fsyncs its ConsumeQueues and index (see _checkpoint_interval_ms)
DLEDGER_CHECKPOINT_MS = 5000


class DLedgerMessageStore(MessageStore):
    """A MessageStore whose CommitLog is a DLedger group's log; also the group's state
    machine (apply = dispatch to ConsumeQueues and the index)."""

    def __init__(self, config: StoreConfig, disk: Disk, **kw: object) -> None:
        super().__init__(config, disk, **kw)  # type: ignore[arg-type]
        self.member: Member | None = None
        self.commitlog = DLedgerLogView(lambda: self.member, config.mapped_file_size_commitlog)  # type: ignore[assignment]
        # leader only, while writable: next queue offset per queue (None: not writable)
        self._next_offsets: dict[ConsumeQueue, int] | None = None
        self._proposed: dict[int, _Dispatch] = {}  # physical offset -> dispatch facts
        self.not_writable_reason = "this broker is not the master of its DLedger group"
        # told when writes closed because placed entries were refused (see _placement_lost)
        self.on_writes_lost: Callable[[], None] | None = None
        # applies a broker-metadata entry (kind, payload) on every replica, in log order
        self.on_meta: Callable[[int, bytes], None] | None = None
        self._index_pending: list[tuple[str, int, int]] = []  # see applied_batch
        # the DLedger index up to which everything applied is on disk (ConsumeQueues,
        # index, and what `before_checkpoint` persists): a restart resumes after it
        self._applied_path = os.path.join(config.store_path_root_dir, "dledger_applied")
        self._applied_saved = -1
        self.replayed = 0  # entries applied again whose units were there (for tests)
        # persists the broker metadata the applied entries changed (offsets, delays)
        self.before_checkpoint: Callable[[], None] | None = None

    # --- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        """Loads the ConsumeQueues and the index; the member (`attach`) brings them up to
        date by applying what is committed."""
        disk = self.disk
        root = self.config.store_path_root_dir
        disk.makedirs(root)
        disk.makedirs(self._cq_root)
        disk.makedirs(os.path.join(root, "index"))
        disk.sync_dir(root)
        self._applied_saved = self._read_applied()
        self._load_consume_queues()
        for queues in self._cqs.values():
            for cq in queues.values():
                # every written unit counts until `attach` knows where the log ends (the
                # member may apply before that: units it already holds are skipped)
                cq.recover(_NO_END)
        if self.config.message_index_enable:
            self.index.load()
        self._flush_wanted = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._stopping = False
        self._running = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._checkpoint_loop(), name="store-checkpoint")]

    def attach(self, member: Member) -> None:
        """Serve from `member`'s log. Units pointing past its end (entries a power loss
        took in flush-interval mode) are cut first."""
        self.member = member
        member.on_placement_lost = self._placement_lost
        storage = member.storage
        if storage is None:
            return
        # a restart resumes after what it had applied (applied_index): those records
        # are not applied again, yet they are readable and count in the max offset
        applied_end = self._entry_end(member.applied - 1)  # raft index = DLedger + 1
        view = self.commitlog
        if applied_end > view.wrote:  # type: ignore[attr-defined]
            view.wrote = view.flushed = applied_end  # type: ignore[attr-defined]
        end = storage.store.write_pos
        for queues in self._cqs.values():
            for cq in queues.values():
                cq.recover(end)
                self._dirty_cqs.add(cq)

    def _entry_end(self, index: int) -> int:
        """The log offset where DLedger entry `index` ends (0 before the first)."""
        member = self.member
        store = member.storage.store if member is not None and member.storage else None
        if store is None or index < store.begin_index - 1:
            return 0
        return store.boundary(index)[2]

    async def checkpoint(self) -> None:
        """Fsyncs the ConsumeQueues and the index (the log has its own durability), then
        records how far the applied entries are covered."""
        member = self.member
        # everything applied so far was dispatched synchronously: take its writes now
        # (a stopped member still knows how far it applied: the broker stops it first)
        applied = member.applied - 1 if member is not None else -1
        segs = self._take_dirty_logics()
        if self.before_checkpoint is not None:
            self.before_checkpoint()
        await self._sync_segments(segs)
        if applied > self._applied_saved:
            body = f"{applied}\n".encode()
            await asyncio.get_running_loop().run_in_executor(
                None, self.disk.replace_file, self._applied_path, body
            )
            self._applied_saved = applied

    def _checkpoint_interval_ms(self) -> int:
        # Here ConsumeQueues and the index are derived from the replicated log, so a
        # checkpoint only bounds the replay after a crash (5 s of entries: well under a
        # second). Each one rewrites every index slot page touched since the last (MBs
        # of random writes) and makes the next write to each fault again: every 5 s
        # instead of every second was 4% more sends/s on a group of three.
        return max(self.config.flush_interval_consume_queue_ms, DLEDGER_CHECKPOINT_MS)

    def _read_applied(self) -> int:
        raw = self.disk.read_file(self._applied_path)
        try:
            return int(raw.decode().strip()) if raw else -1
        except (UnicodeDecodeError, ValueError):
            log.warning(
                "ignoring a corrupt %s: the log is replayed from its start", self._applied_path
            )
            return -1

    def applied_index(self) -> int:
        """For the member: resume applying after this DLedger index (-1: from the start)."""
        return self._applied_saved

    # --- the master's side -------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        return self._next_offsets is not None

    def open_for_writes(self) -> None:
        """This replica leads and has applied everything committed before its term:
        queue offsets continue from the ConsumeQueues."""
        self._next_offsets = {}
        self._proposed.clear()

    def close_for_writes(self, reason: str) -> None:
        self._next_offsets = None
        self._proposed.clear()
        self.not_writable_reason = reason

    def _placement_lost(self) -> None:
        # queue offsets were handed out for entries that will never be proposed: the
        # table is wrong until everything in flight is applied (the broker reopens it)
        self.close_for_writes("the master is catching up after a refused write")
        if self.on_writes_lost is not None:
            self.on_writes_lost()

    def _check_writable(self, now: int) -> PutMessageResult | None:
        if self._next_offsets is None:
            return PutMessageResult(
                PutMessageStatus.SERVICE_NOT_AVAILABLE, remark=self.not_writable_reason
            )
        return super()._check_writable(now)

    def put_batch(self, batch: BatchToStore) -> PutMessageResult:
        # one entry per record (each record's offset is its entry's): the general path
        msgs = [
            MessageToStore(
                topic=batch.topic,
                queue_id=batch.queue_id,
                body=item.body,
                flag=item.flag,
                properties=item.properties,
                sys_flag=batch.sys_flag,
                born_timestamp=batch.born_timestamp,
                born_host=batch.born_host,
                reconsume_times=batch.reconsume_times,
                properties_text=item.properties_text,
            )
            for item in batch.items
        ]
        if not msgs:
            return PutMessageResult(PutMessageStatus.MESSAGE_ILLEGAL, remark="empty batch")
        return self._put(msgs)

    def _append(self, prepared: list[_Prepared], total: int, now: int) -> PutMessageResult:
        member = self.member
        table = self._next_offsets
        if member is None or table is None:
            return PutMessageResult(
                PutMessageStatus.SERVICE_NOT_AVAILABLE, remark=self.not_writable_reason
            )
        for p in prepared:
            if p.size > self.commitlog.max_record_size():
                return PutMessageResult(
                    PutMessageStatus.MESSAGE_ILLEGAL,
                    remark=f"a record of {p.size} bytes does not fit a data file",
                )
        store_host = self.config.store_host
        queue_offsets: list[int] = []
        phys: list[int] = []

        def encode(positions: list[int]) -> list[bytes]:
            # runs inside submit_placed: queue offsets are handed out in log order, and
            # only once every record of the put encoded (a failure leaves no gap)
            taken: dict[ConsumeQueue, int] = {}
            records: list[bytes] = []
            cqs: list[ConsumeQueue] = []
            for p, pos in zip(prepared, positions, strict=True):
                m = p.msg
                cq = self._cq(m.topic, m.queue_id, True)
                assert cq is not None
                qo = taken.get(cq)
                if qo is None:
                    qo = table.get(cq, cq.max_offset)
                taken[cq] = qo + 1
                phy = pos + HEADER_SIZE
                records.append(_encode_prepared(p, qo, phy, now, store_host))
                cqs.append(cq)
                queue_offsets.append(qo)
                phys.append(phy)
            table.update(taken)
            for p, cq, qo, phy, record in zip(
                prepared, cqs, queue_offsets, phys, records, strict=True
            ):
                self._proposed[phy] = _Dispatch(cq, qo, p.size, p.tags_code, p.msg, now, record)
            return records

        try:
            replicated = member.submit_placed([p.size for p in prepared], encode)
        except MemberError as e:
            return _refused(e)
        except ValueError as e:  # e.g. an unparsable born host
            return PutMessageResult(PutMessageStatus.MESSAGE_ILLEGAL, remark=str(e))
        ids = self._msg_ids(phys)
        return PutMessageResult(
            PutMessageStatus.PUT_OK,
            msg_id=ids[0] if len(ids) == 1 else ",".join(ids),
            queue_offset=queue_offsets[0],
            commit_log_offset=phys[0],
            wrote_bytes=total,
            store_timestamp=now,
            msg_ids=ids,
            queue_offsets=queue_offsets,
            commit_log_offsets=phys,
            replicated=replicated,  # the last entry's: entries apply in order
        )

    async def wait_durable(self, result: PutMessageResult) -> PutMessageResult:
        """Completes when the put's entries are committed and applied here."""
        pending = result.replicated
        if result.status is not PutMessageStatus.PUT_OK or pending is None:
            return result
        timeout = self.config.sync_flush_timeout_ms / 1000
        try:
            await asyncio.wait_for(asyncio.shield(pending), timeout)
        except TimeoutError:
            return _not_replicated(result, f"not committed within {timeout:.1f}s")
        except MemberError as e:
            return _not_replicated(result, e.message)
        return result

    # --- every replica: apply committed entries ------------------------------------------
    def apply(self, index: int, data: bytes) -> object:
        if len(data) < _META_HEAD.size:
            return None
        size, magic = _HEAD.unpack_from(data, 0)
        if magic == META_MAGIC and size == len(data) and size >= _META_HEAD.size:
            if self.on_meta is not None:
                self.on_meta(data[_META_HEAD.size - 1], data[_META_HEAD.size :])
            return None
        if magic not in (MAGIC_V1, MAGIC_V2) or size != len(data):
            return None  # not a message record
        try:
            phy = record_physical_offset(data)
        except MessageDecodeError as e:
            log.error("entry %d is not a readable record, not dispatched: %s", index, e)
            return None
        known = self._proposed.pop(phy, None)
        if known is not None and (known.record is data or known.record == data):
            # (a deposed leader's proposal at this offset may have been replaced by the
            # next leader's record: then only the record itself tells what it is)
            m = known.msg
            self._dispatch(
                known.cq,
                m.topic,
                m.queue_id,
                known.queue_offset,
                phy,
                size,
                known.tags_code,
                m.properties,
                known.store_timestamp,
            )
            return None
        try:
            msg: MessageExt = decode_for_dispatch(data)
        except MessageDecodeError as e:
            log.error("entry %d is not a readable record, not dispatched: %s", index, e)
            return None
        cq = self._cq(msg.topic, msg.queue_id, True)
        assert cq is not None
        self._dispatch(
            cq,
            msg.topic,
            msg.queue_id,
            msg.queue_offset,
            phy,
            size,
            self._tags_code_of(msg),
            msg.properties,
            msg.store_timestamp,
        )
        return None

    def _dispatch(
        self,
        cq: ConsumeQueue,
        topic: str,
        queue_id: int,
        queue_offset: int,
        phy: int,
        size: int,
        tags_code: int,
        properties: dict[str, str],
        store_timestamp: int,
    ) -> None:
        view = self.commitlog
        if phy + size > view.wrote:  # type: ignore[attr-defined]
            view.wrote = view.flushed = phy + size  # type: ignore[attr-defined]
        if queue_offset < cq.max_offset:
            self.replayed += 1
            return  # applied before a restart: the unit is there
        if queue_offset > cq.max_offset:
            log.warning(
                "%s/%d: queue offset %d after %d (a gap)",
                topic,
                queue_id,
                queue_offset,
                cq.max_offset,
            )
        try:
            cq.put(queue_offset, phy, size, tags_code)
        except ValueError:
            return  # below the queue's first file
        self._dirty_cqs.add(cq)
        if self.config.message_index_enable:
            # written once per applied batch (applied_batch): one index write per entry
            # was a third of a follower's time
            _index_entries(topic, properties, phy, store_timestamp, self._index_pending)
        if self._listeners:
            self._notify(topic, queue_id, queue_offset, tags_code, properties)

    def applied_batch(self) -> None:
        """The member applied a run of committed entries: write their index entries."""
        if self._index_pending:
            entries, self._index_pending = self._index_pending, []
            self._put_index(entries)

    def snapshot(self) -> bytes:
        return b""  # the log is the product: never compacted into a snapshot

    def restore(self, data: bytes) -> None:
        # the ConsumeQueues persist; replaying the log over them skips what they hold
        self._proposed.clear()


def _refused(e: MemberError) -> PutMessageResult:
    if e.code == Code.LEADER_PENDING_FULL:
        status = PutMessageStatus.OS_PAGE_CACHE_BUSY
    elif e.code == Code.DISK_FULL:
        status = PutMessageStatus.DISK_FULL
    else:
        status = PutMessageStatus.SERVICE_NOT_AVAILABLE
    return PutMessageResult(status, remark=f"DLedger: {e.message}")


def _not_replicated(result: PutMessageResult, why: str) -> PutMessageResult:
    # the entries may still commit (a new leader keeps what a majority holds): the
    # producer retries and may store the message twice, as after any send timeout
    return PutMessageResult(
        PutMessageStatus.SERVICE_NOT_AVAILABLE,
        remark=f"not replicated to a majority: {why}",
        msg_ids=result.msg_ids,
    )
