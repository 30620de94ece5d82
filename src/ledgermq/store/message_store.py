"""MessageStore: CommitLog + ConsumeQueues + index, one writer on the event loop.

Writes are synchronous (`put_message`), so queue offsets are assigned in commit order with
no locks. Durability runs beside them: a flusher task fsyncs the CommitLog in a thread
(periodically for ASYNC_FLUSH; on demand for SYNC_FLUSH, completing every waiter covered
by one fsync: group commit), and a checkpoint task fsyncs ConsumeQueues and the index and
records how far everything is durable. Recovery scans the CommitLog only from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

from ledgermq.common.message import (
    MAGIC_V1,
    MAGIC_V2,
    MAX_PROPERTIES_LENGTH,
    MAX_TOPIC_LENGTH,
    MAX_V1_TOPIC_LENGTH,
    PROPERTY_KEYS,
    PROPERTY_TAGS,
    PROPERTY_UNIQ_KEY,
    PROPERTY_WAIT,
    SYSFLAG_BORNHOST_V6,
    SYSFLAG_STOREHOST_V6,
    BatchItem,
    MessageDecodeError,
    MessageExt,
    decode_record,
    encode_properties,
    encode_record_parts,
    host_sys_flag,
    offset_msg_id_prefix,
    pack_host,
    record_head,
    record_size,
    record_store_timestamp,
    tags_code,
)
from ledgermq.storage.disk import Disk, DiskError, DiskFullError, Segment
from ledgermq.store.commitlog import CommitLog
from ledgermq.store.consume_queue import ConsumeQueue
from ledgermq.store.index_file import IndexService, build_key

log = logging.getLogger(__name__)

ASYNC_FLUSH = "ASYNC_FLUSH"
SYNC_FLUSH = "SYNC_FLUSH"
# How many CQ units one pull may scan when a tag filter skips messages (RocketMQ: 16000 B).
_MIN_SCAN_UNITS = 800
_SPACE_CHECK_INTERVAL_MS = 1000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class StoreConfig:
    store_path_root_dir: str
    store_path_commit_log: str = ""  # "" -> <root>/commitlog
    mapped_file_size_commitlog: int = 1024 * 1024 * 1024
    mapped_file_size_consume_queue: int = 300_000  # units (20 bytes each)
    flush_disk_type: str = ASYNC_FLUSH
    flush_interval_commitlog_ms: int = 500
    flush_interval_consume_queue_ms: int = 1000  # also the checkpoint cadence
    sync_flush_timeout_ms: int = 5000
    max_message_size: int = 4 * 1024 * 1024
    # Retention (RocketMQ's fileReservedTime, deleteWhen, diskMaxUsedSpaceRatio): a
    # CommitLog file expires `file_reserved_time_hours` after it was last written; expired
    # files are deleted at the hours of `delete_when` ("04", "04;05"), or at any hour
    # while disk usage is above `disk_max_used_space_ratio` percent.
    file_reserved_time_hours: float = 72
    delete_when: str = "04"
    disk_max_used_space_ratio: int = 75
    # Above this one unexpired files go too, oldest first (diskSpaceCleanForciblyRatio).
    disk_space_clean_forcibly_ratio: int = 85
    # Writes are refused above this one (RocketMQ's diskSpaceWarningLevelRatio, 0.90).
    disk_space_warning_level_ratio: int = 90
    # CommitLog files deleted per cleanup round at most (deleteFileBatchMax).
    delete_file_batch_max: int = 10
    clean_interval_ms: int = 10_000  # 0 disables the periodic cleanup task
    max_hash_slot_num: int = 5_000_000
    max_index_num: int = 20_000_000
    message_index_enable: bool = True
    store_host: tuple[str, int] = ("127.0.0.1", 10911)

    @property
    def commit_log_dir(self) -> str:
        return self.store_path_commit_log or os.path.join(self.store_path_root_dir, "commitlog")

    def __post_init__(self) -> None:
        if self.flush_disk_type not in (ASYNC_FLUSH, SYNC_FLUSH):
            raise ValueError(
                f"flush_disk_type must be ASYNC_FLUSH or SYNC_FLUSH, not {self.flush_disk_type!r}"
            )
        delete_hours(self.delete_when)  # raises ValueError on a malformed value


def delete_hours(delete_when: str) -> frozenset[int]:
    """The hours of day named by deleteWhen ("04", "04;05"); ValueError if malformed."""
    hours: set[int] = set()
    for part in delete_when.split(";"):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 0 <= int(part) <= 23:
            raise ValueError(f"deleteWhen: {part!r} is not an hour of day (00-23)")
        hours.add(int(part))
    return frozenset(hours)


def _local_hour(now_ms: int) -> int:
    return time.localtime(now_ms / 1000).tm_hour


class PutMessageStatus(Enum):
    PUT_OK = "PUT_OK"
    FLUSH_DISK_TIMEOUT = "FLUSH_DISK_TIMEOUT"
    FLUSH_SLAVE_TIMEOUT = "FLUSH_SLAVE_TIMEOUT"
    SLAVE_NOT_AVAILABLE = "SLAVE_NOT_AVAILABLE"
    SERVICE_NOT_AVAILABLE = "SERVICE_NOT_AVAILABLE"
    CREATE_MAPPED_FILE_FAILED = "CREATE_MAPPED_FILE_FAILED"
    MESSAGE_ILLEGAL = "MESSAGE_ILLEGAL"
    PROPERTIES_SIZE_EXCEEDED = "PROPERTIES_SIZE_EXCEEDED"
    OS_PAGE_CACHE_BUSY = "OS_PAGE_CACHE_BUSY"
    DISK_FULL = "DISK_FULL"  # RocketMQ reports this as SERVICE_NOT_AVAILABLE + remark
    OS_ERROR = "OS_ERROR"
    UNKNOWN_ERROR = "UNKNOWN_ERROR"


class GetMessageStatus(Enum):
    FOUND = "FOUND"
    NO_MATCHED_MESSAGE = "NO_MATCHED_MESSAGE"
    MESSAGE_WAS_REMOVING = "MESSAGE_WAS_REMOVING"
    OFFSET_FOUND_NULL = "OFFSET_FOUND_NULL"
    OFFSET_OVERFLOW_BADLY = "OFFSET_OVERFLOW_BADLY"
    OFFSET_OVERFLOW_ONE = "OFFSET_OVERFLOW_ONE"
    OFFSET_TOO_SMALL = "OFFSET_TOO_SMALL"
    NO_MATCHED_LOGIC_QUEUE = "NO_MATCHED_LOGIC_QUEUE"
    NO_MESSAGE_IN_QUEUE = "NO_MESSAGE_IN_QUEUE"


@dataclass(slots=True)
class MessageToStore:
    """What the broker hands the store (RocketMQ's MessageExtBrokerInner)."""

    topic: str
    queue_id: int
    body: bytes
    flag: int = 0
    properties: dict[str, str] = field(default_factory=dict)
    sys_flag: int = 0
    born_timestamp: int = 0
    born_host: tuple[str, int] = ("127.0.0.1", 0)
    reconsume_times: int = 0
    prepared_transaction_offset: int = 0
    tags_code: int | None = None  # None -> Java hashCode of TAGS (0 if none)
    # `properties` already encoded, when the sender's own text can be stored as it is
    # (saves re-encoding on the send path). None, or a text that decodes to exactly
    # `properties`; whoever changes `properties` must reset it.
    properties_text: str | None = None


MessageExtBrokerInner = MessageToStore


@dataclass(slots=True)
class BatchToStore:
    """A SEND_BATCH_MESSAGE as the broker hands it over: one topic and queue and the
    producer's shared fields; each item is stored with its own body, flag and properties.
    An item's ``properties_text``, when not None, is its properties already encoded (it
    must decode to exactly ``properties``), so the hot path stores it as it is."""

    topic: str
    queue_id: int
    items: list[BatchItem]
    sys_flag: int = 0
    born_timestamp: int = 0
    born_host: tuple[str, int] = ("127.0.0.1", 0)
    reconsume_times: int = 0


@dataclass(slots=True)
class PutMessageResult:
    status: PutMessageStatus
    msg_id: str = ""  # offsetMsgId; comma-joined for a batch
    queue_offset: int = -1  # first one for a batch
    commit_log_offset: int = -1  # start of the (first) record
    wrote_bytes: int = 0  # all records of a batch
    store_timestamp: int = 0
    remark: str = ""
    msg_ids: list[str] = field(default_factory=list)  # one per record (also for one message)
    queue_offsets: list[int] = field(default_factory=list)
    commit_log_offsets: list[int] = field(default_factory=list)
    # DLedger mode: completes when the put's entries are committed (see wait_durable)
    replicated: asyncio.Future[object] | None = None

    @property
    def ok(self) -> bool:
        return self.status is PutMessageStatus.PUT_OK

    @property
    def end_offset(self) -> int:
        return self.commit_log_offset + self.wrote_bytes


@dataclass(slots=True)
class GetMessageResult:
    status: GetMessageStatus
    next_begin_offset: int
    min_offset: int
    max_offset: int
    messages: list[bytes] = field(default_factory=list)  # raw CommitLog records
    queue_offsets: list[int] = field(default_factory=list)

    @property
    def message_count(self) -> int:
        return len(self.messages)

    @property
    def buffer_total_size(self) -> int:
        return sum(len(m) for m in self.messages)


ArrivalListener = Callable[[str, int, int, int, dict[str, str]], None]

# Checkpoint: magic, physic (commitlog fsynced) offset, logics (CQ+index fsynced) offset, crc
_CKPT = struct.Struct(">8sqqI")
_CKPT_MAGIC = b"LMQCKPT1"


@dataclass(slots=True)
class _Prepared:
    msg: MessageToStore
    topic_b: bytes
    props_b: bytes
    sys_flag: int
    size: int
    tags_code: int


def _sync_all(segments: list[Segment]) -> None:
    for seg in segments:
        if not seg.closed:
            seg.sync()


def _index_entries(
    topic: str, props: dict[str, str], phy: int, ts: int, out: list[tuple[str, int, int]]
) -> None:
    """The index entries of one record: each of its KEYS, and its UNIQ_KEY."""
    raw = props.get(PROPERTY_KEYS)
    if raw:
        out.extend((build_key(topic, k), phy, ts) for k in raw.split())
    uniq = props.get(PROPERTY_UNIQ_KEY)
    if uniq:
        out.append((build_key(topic, uniq), phy, ts))


# plain ints: IntFlag arithmetic is slow on the per-record path
_BORN_V6 = int(SYSFLAG_BORNHOST_V6)
_STORE_V6 = int(SYSFLAG_STOREHOST_V6)

# _prepare remembers this many checked topic names before starting over
_TOPIC_CACHE_MAX = 65536

# put_group appends at most this much at once (see there).
_GROUP_RUN_BYTES = 1 << 20


def _encode_prepared(
    p: _Prepared, queue_offset: int, physical_offset: int, now: int, store_host: tuple[str, int]
) -> bytes:
    """The CommitLog record of a checked message, once its offsets are known."""
    m = p.msg
    return encode_record_parts(
        p.topic_b,
        m.body,
        p.props_b,
        queue_id=m.queue_id,
        flag=m.flag,
        queue_offset=queue_offset,
        physical_offset=physical_offset,
        sys_flag=p.sys_flag,
        born_timestamp=m.born_timestamp,
        born_host=m.born_host,
        store_timestamp=now,
        store_host=store_host,
        reconsume_times=m.reconsume_times,
        prepared_transaction_offset=m.prepared_transaction_offset,
    )


class MessageStore:
    def __init__(
        self,
        config: StoreConfig,
        disk: Disk,
        *,
        clock: Callable[[], int] | None = None,
        tags_code_of: Callable[[MessageExt], int] | None = None,
        hour_of: Callable[[int], int] | None = None,
    ) -> None:
        """`clock` gives epoch ms (store timestamps, file expiry); `tags_code_of`
        recomputes a record's tagsCode during recovery (the broker overrides it for delay
        topics); `hour_of` maps epoch ms to the hour of day deleteWhen is matched against
        (local time by default)."""
        self.config = config
        self.disk = disk
        self._clock = clock or _now_ms
        # offset message ids share the store host's hex prefix (see _append)
        self._id_host: tuple[str, int] | None = None
        self._id_prefix = ""
        # topics that passed _prepare's name check, with their encoding; bounded by the
        # number of topics the broker knows
        self._topic_bytes: dict[str, bytes] = {}
        self._hour_of = hour_of or _local_hour
        self._delete_hours = delete_hours(config.delete_when)
        self._tags_code_of = tags_code_of or (lambda m: tags_code(m.properties.get(PROPERTY_TAGS)))
        root = config.store_path_root_dir
        self._cq_root = os.path.join(root, "consumequeue")
        self._abort_path = os.path.join(root, "abort")
        self._checkpoint_path = os.path.join(root, "checkpoint")
        self.commitlog = CommitLog(disk, config.commit_log_dir, config.mapped_file_size_commitlog)
        self.index = IndexService(
            disk, os.path.join(root, "index"), config.max_hash_slot_num, config.max_index_num
        )
        self._cqs: dict[str, dict[int, ConsumeQueue]] = {}
        self._dirty_cqs: set[ConsumeQueue] = set()
        self._listeners: list[ArrivalListener] = []
        self._running = False
        self._stopping = False
        self._fatal: str | None = None
        self._space_full: str | None = None
        self._last_space_check = -_SPACE_CHECK_INTERVAL_MS
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._flush_wanted: asyncio.Event | None = None
        self._stop_event: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Segments an fsync thread is working on: retention must not close them under it.
        self._in_flight: Counter[Segment] = Counter()
        # CommitLog min offset the ConsumeQueues and index were last cleaned against.
        self._logics_cleaned_to = -1
        self.recovered_from: int = 0  # where the last open() started scanning (for tests/ops)
        self.abnormal_shutdown = False

    # --- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        disk = self.disk
        disk.makedirs(self.config.store_path_root_dir)
        disk.makedirs(self._cq_root)
        disk.makedirs(self.config.commit_log_dir)
        disk.makedirs(os.path.join(self.config.store_path_root_dir, "index"))
        disk.sync_dir(self.config.store_path_root_dir)
        ckpt = self._read_checkpoint()
        self.abnormal_shutdown = disk.exists(self._abort_path)
        cl = self.commitlog
        cl.load()
        self._load_consume_queues()
        if self.config.message_index_enable:
            self.index.load()
        # Start at the checkpoint: below it the CommitLog, ConsumeQueues and index are all
        # fsynced. Without one, rebuild from the first file (slow but always right).
        start = ckpt[1] if ckpt else cl.min_offset
        start = min(max(start, cl.min_offset), cl.end_of_files)
        self.recovered_from = start
        end = cl.scan(start, self._redispatch)
        if end < start:
            end = start
        cl.truncate_to(end)
        for queues in self._cqs.values():
            for cq in queues.values():
                cq.recover(end)
                # Earlier CommitLog files may be gone: serve from the first unit that
                # still points into the log.
                cq.correct_min_offset(cl.min_offset)
                self._dirty_cqs.add(cq)
        # What we re-read may only be in the page cache (process crash, not power loss):
        # make it durable before counting it as flushed.
        to_sync = cl.segments_between(start, end) + self._take_dirty_logics()
        await self._sync_segments(to_sync)
        cl.flushed = end
        await loop.run_in_executor(None, self._write_checkpoint, end, end)
        disk.replace_file(self._abort_path, b"")
        self._flush_wanted = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._stopping = False
        self._running = True
        self._logics_cleaned_to = -1  # the first cleanup also removes leftover CQ files
        self._tasks = [
            loop.create_task(self._flush_loop(), name="store-flush"),
            loop.create_task(self._checkpoint_loop(), name="store-checkpoint"),
        ]
        if self.config.clean_interval_ms > 0:
            self._tasks.append(loop.create_task(self._clean_loop(), name="store-clean"))
        if self.abnormal_shutdown:
            log.warning("store recovered after abnormal shutdown: scanned %d..%d", start, end)

    async def _stop_tasks(self) -> None:
        self._running = False
        self._stopping = True
        assert self._stop_event is not None and self._flush_wanted is not None
        self._stop_event.set()
        self._flush_wanted.set()
        # Let the tasks finish their current fsync rather than cancel them mid-thread.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def close(self) -> None:
        if not self._running:
            return
        await self._stop_tasks()
        try:
            await self.checkpoint()
            self.disk.remove(self._abort_path)
            self.disk.sync_dir(self.config.store_path_root_dir)
        except DiskError as e:
            # A failing disk must not stop the shutdown. The abort file stays, so the
            # next start runs crash recovery and trusts nothing it could not fsync.
            log.error("store closed without a clean checkpoint: %s", e)
        finally:
            self._fail_waiters(DiskError("store closed"))
            self._close_files()

    async def crash_stop(self) -> None:
        """Stops like a killed process, for tests and simulation: no flush, no checkpoint,
        the abort file stays. Pair with `FaultyDisk.crash()` to also lose unsynced data."""
        if not self._running:
            return
        await self._stop_tasks()
        self._fail_waiters(DiskError("store crashed"))
        self._close_files()

    def _close_files(self) -> None:
        self.commitlog.close()
        for queues in self._cqs.values():
            for cq in queues.values():
                cq.close()
        self.index.close()

    def add_arrival_listener(self, listener: ArrivalListener) -> None:
        """Called as `listener(topic, queue_id, queue_offset, tags_code, properties)`."""
        self._listeners.append(listener)

    # --- writes -------------------------------------------------------------------------
    def put_message(self, msg: MessageToStore, *, tags_code: int | None = None) -> PutMessageResult:
        """Stores one message; `tags_code` overrides the message's (e.g. delay time)."""
        if tags_code is not None:
            msg = replace(msg, tags_code=tags_code)
        return self._put([msg])

    def put_messages(self, msgs: list[MessageToStore]) -> PutMessageResult:
        """Stores a batch in one append; each (topic, queue) gets consecutive offsets."""
        if not msgs:
            return PutMessageResult(PutMessageStatus.MESSAGE_ILLEGAL, remark="empty batch")
        return self._put(msgs)

    async def put_message_async(self, msg: MessageToStore) -> PutMessageResult:
        """put_message, then waits for fsync under SYNC_FLUSH unless WAIT=false."""
        res = self.put_message(msg)
        if self._should_wait(msg):
            res = await self.wait_durable(res)
        return res

    async def put_messages_async(self, msgs: list[MessageToStore]) -> PutMessageResult:
        res = self.put_messages(msgs)
        if msgs and self._should_wait(msgs[0]):
            res = await self.wait_durable(res)
        return res

    def _should_wait(self, msg: MessageToStore) -> bool:
        return (
            self.config.flush_disk_type == SYNC_FLUSH
            and msg.properties.get(PROPERTY_WAIT, "true").lower() != "false"
        )

    def _check_writable(self, now: int) -> PutMessageResult | None:
        if not self._running:
            return PutMessageResult(PutMessageStatus.SERVICE_NOT_AVAILABLE, remark="store not open")
        if self._fatal:
            return PutMessageResult(PutMessageStatus.SERVICE_NOT_AVAILABLE, remark=self._fatal)
        if self._space_full or now - self._last_space_check >= _SPACE_CHECK_INTERVAL_MS:
            self._last_space_check = now
            try:
                usage = self.disk.usage(self.config.store_path_root_dir)
            except DiskError:
                usage = None
            limit = self.config.disk_space_warning_level_ratio
            if usage is not None and usage.used_ratio_percent > limit:
                self._space_full = (
                    f"disk full: {usage.used_ratio_percent:.1f}% used > "
                    f"diskSpaceWarningLevelRatio {limit}%"
                )
            else:
                self._space_full = None
        if self._space_full:
            return PutMessageResult(PutMessageStatus.DISK_FULL, remark=self._space_full)
        return None

    def _topic_b(self, topic: str) -> bytes | PutMessageResult:
        """The topic's encoding once it passed the name check (remembered per topic)."""
        topic_b = self._topic_bytes.get(topic)
        if topic_b is None:
            topic_b = topic.encode()
            if (
                not topic_b
                or len(topic_b) > MAX_TOPIC_LENGTH
                or "/" in topic
                or "\\" in topic
                or "\x00" in topic
                or topic in (".", "..")
            ):
                return PutMessageResult(
                    PutMessageStatus.MESSAGE_ILLEGAL, remark=f"bad topic {topic!r}"
                )
            if len(self._topic_bytes) >= _TOPIC_CACHE_MAX:
                self._topic_bytes.clear()
            self._topic_bytes[topic] = topic_b
        return topic_b

    def _prepare(self, msg: MessageToStore) -> _Prepared | PutMessageResult:
        topic_b = self._topic_b(msg.topic)
        if type(topic_b) is PutMessageResult:
            return topic_b
        if msg.queue_id < 0:
            return PutMessageResult(
                PutMessageStatus.MESSAGE_ILLEGAL, remark=f"bad queue id {msg.queue_id}"
            )
        if len(msg.body) > self.config.max_message_size:
            return PutMessageResult(
                PutMessageStatus.MESSAGE_ILLEGAL,
                remark=f"message body {len(msg.body)} bytes > maxMessageSize "
                f"{self.config.max_message_size}",
            )
        text = msg.properties_text
        props_b = (encode_properties(msg.properties) if text is None else text).encode()
        if len(props_b) > MAX_PROPERTIES_LENGTH:
            return PutMessageResult(
                PutMessageStatus.PROPERTIES_SIZE_EXCEEDED,
                remark=f"properties {len(props_b)} bytes > {MAX_PROPERTIES_LENGTH}",
            )
        sys_flag = host_sys_flag(msg.sys_flag, msg.born_host[0], self.config.store_host[0])
        size = record_size(len(msg.body), len(topic_b), len(props_b), sys_flag)
        tc = msg.tags_code
        if tc is None:
            tc = tags_code(msg.properties.get(PROPERTY_TAGS))
        return _Prepared(msg, topic_b, props_b, sys_flag, size, tc)  # type: ignore[arg-type]

    def _cq(self, topic: str, queue_id: int, create: bool) -> ConsumeQueue | None:
        queues = self._cqs.get(topic)
        cq = queues.get(queue_id) if queues else None
        if cq is None and create:
            cq = ConsumeQueue(
                self.disk,
                os.path.join(self._cq_root, topic, str(queue_id)),
                topic,
                queue_id,
                self.config.mapped_file_size_consume_queue,
            )
            self._cqs.setdefault(topic, {})[queue_id] = cq
        return cq

    def put_batch(self, batch: BatchToStore) -> PutMessageResult:
        """Stores a producer's batch all-or-nothing in one append: records packed into
        one buffer, ConsumeQueue units written as one run. The same records as
        `put_messages` would write, with the per-message work hoisted out of the loop."""
        items = batch.items
        if not items:
            return PutMessageResult(PutMessageStatus.MESSAGE_ILLEGAL, remark="empty batch")
        now = self._clock()
        bad = self._check_writable(now)
        if bad is not None:
            return bad
        topic, queue_id = batch.topic, batch.queue_id
        topic_b = self._topic_b(topic)
        if type(topic_b) is PutMessageResult:
            return topic_b
        assert isinstance(topic_b, bytes)
        if queue_id < 0:
            return PutMessageResult(
                PutMessageStatus.MESSAGE_ILLEGAL, remark=f"bad queue id {queue_id}"
            )
        store_host = self.config.store_host
        born_ip, born_port = batch.born_host
        sys_flag = host_sys_flag(batch.sys_flag, born_ip, store_host[0])
        tlen = len(topic_b)
        v2 = tlen > MAX_V1_TOPIC_LENGTH
        base = record_size(0, tlen, 0, sys_flag)
        max_body = self.config.max_message_size
        props: list[bytes] = []
        total = 0
        for it in items:
            if len(it.body) > max_body:
                return PutMessageResult(
                    PutMessageStatus.MESSAGE_ILLEGAL,
                    remark=f"message body {len(it.body)} bytes > maxMessageSize {max_body}",
                )
            text = it.properties_text
            pb = (encode_properties(it.properties) if text is None else text).encode()
            if len(pb) > MAX_PROPERTIES_LENGTH:
                return PutMessageResult(
                    PutMessageStatus.PROPERTIES_SIZE_EXCEEDED,
                    remark=f"properties {len(pb)} bytes > {MAX_PROPERTIES_LENGTH}",
                )
            props.append(pb)
            total += base + len(it.body) + len(pb)
        cl = self.commitlog
        oversize = self._oversize(total)
        if oversize is not None:
            return oversize
        try:
            born_b = pack_host(born_ip, bool(sys_flag & _BORN_V6))
            store_b = pack_host(store_host[0], bool(sys_flag & _STORE_V6))
        except ValueError as e:
            return PutMessageResult(PutMessageStatus.MESSAGE_ILLEGAL, remark=str(e))
        try:
            phy0 = cl.reserve(total)
        except DiskError as e:
            return self._io_failure(e)
        cq = self._cq(topic, queue_id, True)
        assert cq is not None
        qo0 = cq.max_offset
        head = record_head(sys_flag)
        head_pack = head.pack_into
        head_size = head.size
        magic = MAGIC_V2 if v2 else MAGIC_V1
        topic_part = tlen.to_bytes(2 if v2 else 1, "big") + topic_b
        crc32 = zlib.crc32
        buf = bytearray(total)
        units: list[tuple[int, int, int]] = []
        phys: list[int] = []
        pos = 0
        for k, (it, pb) in enumerate(zip(items, props, strict=True)):
            body = it.body
            blen = len(body)
            size = base + blen + len(pb)
            phy = phy0 + pos
            head_pack(
                buf, pos, size, magic, crc32(body) & 0x7FFFFFFF, queue_id, it.flag,
                qo0 + k, phy, sys_flag, batch.born_timestamp, born_b, born_port, now,
                store_b, store_host[1], batch.reconsume_times, 0, blen,
            )  # fmt: skip
            at = pos + head_size
            buf[at : at + blen] = body
            at += blen
            buf[at : at + len(topic_part)] = topic_part
            at += len(topic_part)
            buf[at : at + 2] = len(pb).to_bytes(2, "big")
            buf[at + 2 : at + 2 + len(pb)] = pb
            units.append((phy, size, tags_code(it.properties.get(PROPERTY_TAGS))))
            phys.append(phy)
            pos += size
        assert pos == total, "batch records disagree with their computed sizes"
        try:
            cl.append_at(phy0, buf)
        except DiskError as e:
            return self._io_failure(e)
        try:
            cq.put_run(qo0, units)
            self._dirty_cqs.add(cq)
        except DiskError as e:
            cl.rollback(phy0)
            with contextlib.suppress(DiskError):
                cq.truncate_from(qo0)
            return self._io_failure(e)
        if self.config.message_index_enable:
            entries: list[tuple[str, int, int]] = []
            for it, phy in zip(items, phys, strict=True):
                _index_entries(topic, it.properties, phy, now, entries)
            self._put_index(entries)
        if self._listeners:
            for k, it in enumerate(items):
                self._notify(topic, queue_id, qo0 + k, units[k][2], it.properties)
        ids = self._msg_ids(phys)
        return PutMessageResult(
            PutMessageStatus.PUT_OK,
            msg_id=",".join(ids),
            queue_offset=qo0,
            commit_log_offset=phy0,
            wrote_bytes=total,
            store_timestamp=now,
            msg_ids=ids,
            queue_offsets=list(range(qo0, qo0 + len(items))),
            commit_log_offsets=phys,
        )

    def _msg_ids(self, phys: list[int]) -> list[str]:
        store_host = self.config.store_host
        if self._id_host != store_host:
            self._id_prefix = offset_msg_id_prefix(store_host)
            self._id_host = store_host
        prefix = self._id_prefix
        return [f"{prefix}{at:016X}" for at in phys]

    def put_group(self, msgs: list[MessageToStore]) -> list[PutMessageResult]:
        """Stores independent messages (pipelined sends) with as few appends as possible.

        Unlike a batch, each message stands alone: one that is invalid gets its own
        error and the others are stored. Records go to the commit log in runs of up to
        `_GROUP_RUN_BYTES` (a run never spans two files, so the cap bounds the padding).
        """
        now = self._clock()
        bad = self._check_writable(now)
        if bad is not None:
            return [bad] * len(msgs)
        results: list[PutMessageResult | None] = [None] * len(msgs)
        limit = min(_GROUP_RUN_BYTES, self.commitlog.max_record_size())
        run: list[_Prepared] = []
        at: list[int] = []
        size = 0
        for i, m in enumerate(msgs):
            p = self._prepare(m)
            if type(p) is PutMessageResult:
                results[i] = p
                continue
            if run and size + p.size > limit:  # type: ignore[union-attr]
                self._append_run(run, at, size, now, results)
                run, at, size = [], [], 0
            run.append(p)  # type: ignore[arg-type]
            at.append(i)
            size += p.size  # type: ignore[union-attr]
        if run:
            self._append_run(run, at, size, now, results)
        return results  # type: ignore[return-value]

    def _append_run(
        self,
        run: list[_Prepared],
        at: list[int],
        size: int,
        now: int,
        results: list[PutMessageResult | None],
    ) -> None:
        r = self._append(run, size, now)
        if not r.ok:
            for i in at:
                results[i] = r
            return
        for k, i in enumerate(at):
            msg_id = r.msg_ids[k]
            qo = r.queue_offsets[k]
            phy = r.commit_log_offsets[k]
            results[i] = PutMessageResult(
                PutMessageStatus.PUT_OK,
                msg_id=msg_id,
                queue_offset=qo,
                commit_log_offset=phy,
                wrote_bytes=run[k].size,
                store_timestamp=now,
                msg_ids=[msg_id],
                queue_offsets=[qo],
                commit_log_offsets=[phy],
                # DLedger: the run is one proposal; its last entry answers for all of it
                replicated=r.replicated,
            )

    def _put(self, msgs: list[MessageToStore]) -> PutMessageResult:
        """One message, or a batch that is stored all-or-nothing in one append."""
        now = self._clock()
        bad = self._check_writable(now)
        if bad is not None:
            return bad
        prepared: list[_Prepared] = []
        total = 0
        for m in msgs:
            p = self._prepare(m)
            if type(p) is PutMessageResult:
                return p
            prepared.append(p)  # type: ignore[arg-type]
            total += p.size  # type: ignore[union-attr]
        return self._append(prepared, total, now)

    def _oversize(self, total: int) -> PutMessageResult | None:
        """Records are never split across commit log files, so one append must fit one."""
        cl = self.commitlog
        if total > cl.max_record_size():
            return PutMessageResult(
                PutMessageStatus.MESSAGE_ILLEGAL,
                remark=f"{total} bytes do not fit a commitlog file ({cl.file_size})",
            )
        return None

    def _append(self, prepared: list[_Prepared], total: int, now: int) -> PutMessageResult:
        # The hot path of every send: one pass, no per-record containers beyond the
        # three offset lists the result carries anyway.
        cl = self.commitlog
        oversize = self._oversize(total)
        if oversize is not None:
            return oversize
        try:
            phy0 = cl.reserve(total)
        except DiskError as e:
            return self._io_failure(e)
        store_host = self.config.store_host
        parts: list[bytes] = []
        cqs: list[ConsumeQueue] = []
        queue_offsets: list[int] = []
        phys: list[int] = []
        next_qo: dict[ConsumeQueue, int] | None = {} if len(prepared) > 1 else None
        phy = phy0
        try:
            for p in prepared:
                m = p.msg
                cq = self._cq(m.topic, m.queue_id, True)
                assert cq is not None
                if next_qo is None:
                    qo = cq.max_offset
                else:  # several records of one batch may go to the same queue
                    qo = next_qo.get(cq, cq.max_offset)
                    next_qo[cq] = qo + 1
                parts.append(_encode_prepared(p, qo, phy, now, store_host))
                cqs.append(cq)
                queue_offsets.append(qo)
                phys.append(phy)
                phy += p.size
        except ValueError as e:  # e.g. an unparsable born host
            cl.rollback(phy0)
            return PutMessageResult(PutMessageStatus.MESSAGE_ILLEGAL, remark=str(e))
        try:
            cl.append_at(phy0, parts[0] if len(parts) == 1 else b"".join(parts))
        except DiskError as e:
            return self._io_failure(e)
        # Dispatch. A failed ConsumeQueue write undoes the whole put so what is stored
        # stays consistent; the index is only a hint and never fails a put.
        dirty = self._dirty_cqs
        try:
            for p, cq, qo, at in zip(prepared, cqs, queue_offsets, phys, strict=True):
                cq.put(qo, at, p.size, p.tags_code)
                dirty.add(cq)
        except DiskError as e:
            cl.rollback(phy0)
            first_qo: dict[ConsumeQueue, int] = {}
            for cq, qo in zip(cqs, queue_offsets, strict=True):
                first_qo.setdefault(cq, qo)
            for cq, qo in first_qo.items():
                with contextlib.suppress(DiskError):
                    cq.truncate_from(qo)
            return self._io_failure(e)
        if self.config.message_index_enable:
            self._index_messages(prepared, phys, now)
        if self._listeners:
            for p, qo in zip(prepared, queue_offsets, strict=True):
                m = p.msg
                self._notify(m.topic, m.queue_id, qo, p.tags_code, m.properties)
        ids = self._msg_ids(phys)
        return PutMessageResult(
            PutMessageStatus.PUT_OK,
            msg_id=ids[0] if len(ids) == 1 else ",".join(ids),
            queue_offset=queue_offsets[0],
            commit_log_offset=phy0,
            wrote_bytes=total,
            store_timestamp=now,
            msg_ids=ids,
            queue_offsets=queue_offsets,
            commit_log_offsets=phys,
        )

    def _io_failure(self, e: DiskError) -> PutMessageResult:
        if isinstance(e, DiskFullError):
            log.warning("put rejected, disk full: %s", e)
            return PutMessageResult(PutMessageStatus.DISK_FULL, remark=f"disk full: {e}")
        log.error("put failed: %s", e)
        return PutMessageResult(PutMessageStatus.OS_ERROR, remark=str(e))

    def _index_messages(self, prepared: list[_Prepared], phys: list[int], ts: int) -> None:
        """Index entries for KEYS and UNIQ_KEY of the records just appended, in one go."""
        entries: list[tuple[str, int, int]] = []
        for p, phy in zip(prepared, phys, strict=True):
            _index_entries(p.msg.topic, p.msg.properties, phy, ts, entries)
        self._put_index(entries)

    def _put_index(self, entries: list[tuple[str, int, int]]) -> None:
        if not entries:
            return
        try:
            self.index.put_many(entries)
        except DiskError as e:
            log.warning("index write failed (queries may miss %s..): %s", entries[0][1], e)

    def _notify(self, topic: str, qid: int, qo: int, tc: int, props: dict[str, str]) -> None:
        for listener in self._listeners:
            try:
                listener(topic, qid, qo, tc, props)
            except Exception:
                log.exception("message arrival listener failed")

    # --- durability -----------------------------------------------------------------------
    async def wait_durable(self, result: PutMessageResult) -> PutMessageResult:
        """Completes when fsync covers `result`'s records (group commit: one fsync serves
        every waiter it covers). FLUSH_DISK_TIMEOUT after sync_flush_timeout_ms."""
        if result.status is not PutMessageStatus.PUT_OK:
            return result
        end = result.end_offset
        if end <= self.commitlog.flushed:
            return result
        if self._fatal or not self._running or self._flush_wanted is None:
            return replace(
                result,
                status=PutMessageStatus.FLUSH_DISK_TIMEOUT,
                remark=self._fatal or "store not running",
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (end, next(self._seq), fut))
        self._flush_wanted.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.config.sync_flush_timeout_ms / 1000)
        except TimeoutError:
            return replace(
                result, status=PutMessageStatus.FLUSH_DISK_TIMEOUT, remark="flush timed out"
            )
        except DiskError as e:
            return replace(result, status=PutMessageStatus.FLUSH_DISK_TIMEOUT, remark=str(e))
        return result

    def _advance_flushed(self, offset: int) -> None:
        cl = self.commitlog
        if offset > cl.flushed:
            cl.flushed = offset
        w = self._waiters
        while w and w[0][0] <= cl.flushed:
            fut = heapq.heappop(w)[2]
            if not fut.done():
                fut.set_result(None)

    def _fail_waiters(self, exc: Exception) -> None:
        while self._waiters:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: a timed-out waiter never looks

    async def flush(self) -> None:
        """Fsyncs the CommitLog up to the current write position."""
        cl = self.commitlog
        target = cl.wrote
        if target <= cl.flushed:
            self._advance_flushed(target)
            return
        segs = cl.segments_between(cl.flushed, target)
        try:
            await self._sync_segments(segs)
        except DiskError as e:
            # After a failed fsync the page cache state is unknown (fsyncgate): stop
            # accepting writes rather than acknowledge data that may be gone.
            self._fatal = f"fsync failed, store is read-only: {e}"
            log.error("%s", self._fatal)
            self._fail_waiters(e)
            return
        self._advance_flushed(target)

    async def _flush_loop(self) -> None:
        assert self._flush_wanted is not None
        wanted = self._flush_wanted
        sync_mode = self.config.flush_disk_type == SYNC_FLUSH
        interval = self.config.flush_interval_commitlog_ms / 1000
        while not self._stopping:
            if sync_mode:
                await wanted.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wanted.wait(), interval)
            wanted.clear()
            if self._stopping:
                break
            await self.flush()

    def _checkpoint_interval_ms(self) -> int:
        return self.config.flush_interval_consume_queue_ms

    async def _checkpoint_loop(self) -> None:
        assert self._stop_event is not None
        interval = self._checkpoint_interval_ms() / 1000
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), interval)
            if self._stopping:
                break
            try:
                await self.checkpoint()
            except DiskError as e:
                log.error("checkpoint failed: %s", e)

    async def _sync_segments(self, segs: list[Segment]) -> None:
        """fsyncs `segs` in a thread; retention leaves them open until it returns."""
        if not segs:
            return
        in_flight = self._in_flight
        in_flight.update(segs)
        try:
            await asyncio.get_running_loop().run_in_executor(None, _sync_all, segs)
        finally:
            in_flight.subtract(segs)
            for seg in segs:
                if in_flight[seg] <= 0:
                    del in_flight[seg]

    def _take_dirty_logics(self) -> list[Segment]:
        segs: list[Segment] = []
        for cq in self._dirty_cqs:
            segs.extend(cq.take_dirty())
        self._dirty_cqs.clear()
        if self.config.message_index_enable:
            segs.extend(self.index.prepare_flush())
        return segs

    async def checkpoint(self) -> None:
        """Fsyncs CommitLog, ConsumeQueues and index up to now, then records that offset."""
        loop = asyncio.get_running_loop()
        cl = self.commitlog
        target = cl.wrote
        # Dispatch is synchronous, so every CQ/index entry for records below `target` is
        # already written; snapshot before yielding to the loop.
        segs = cl.segments_between(cl.flushed, target) + self._take_dirty_logics()
        await self._sync_segments(segs)
        self._advance_flushed(target)
        await loop.run_in_executor(None, self._write_checkpoint, cl.flushed, target)

    def _write_checkpoint(self, physic: int, logics: int) -> None:
        body = _CKPT.pack(_CKPT_MAGIC, physic, logics, 0)[:-4]
        self.disk.replace_file(self._checkpoint_path, body + struct.pack(">I", zlib.crc32(body)))

    def _read_checkpoint(self) -> tuple[int, int] | None:
        raw = self.disk.read_file(self._checkpoint_path)
        if raw is None or len(raw) != _CKPT.size:
            return None
        magic, physic, logics, crc = _CKPT.unpack(raw)
        if magic != _CKPT_MAGIC or zlib.crc32(raw[:-4]) != crc or logics < 0:
            log.warning("ignoring corrupt checkpoint file")
            return None
        return physic, logics

    # --- retention ------------------------------------------------------------------------
    def _used_ratio(self) -> float:
        """The fuller of the CommitLog's and the ConsumeQueues' disks, in percent; -1 if
        unknown."""
        ratio = -1.0
        for path in (self.config.commit_log_dir, self._cq_root):
            try:
                ratio = max(ratio, self.disk.usage(path).used_ratio_percent)
            except DiskError as e:
                log.warning("disk usage of %s unknown: %s", path, e)
                return -1.0
        return ratio

    def _busy(self, seg: Segment) -> bool:
        return seg in self._in_flight

    def clean_expired_files(self, now_ms: int | None = None, force: bool = False) -> int:
        """One retention round; returns how many files were removed.

        CommitLog files go oldest first, never the active one, at most
        `delete_file_batch_max` per round:
        - expired ones (last written more than file_reserved_time_hours ago) when the hour
          is in delete_when, when `force` (an operator's request), or when disk usage is
          above disk_max_used_space_ratio (or unknown);
        - unexpired ones too while usage is above disk_space_clean_forcibly_ratio.
        Then ConsumeQueue and index files wholly below the new CommitLog minimum go, and
        each queue's min offset moves to its first unit still in the log.
        """
        cfg = self.config
        now = self._clock() if now_ms is None else now_ms
        ratio = self._used_ratio()
        removed = 0
        if (
            force
            or self._hour_of(now) in self._delete_hours
            or ratio < 0
            or ratio > cfg.disk_max_used_space_ratio
        ):
            removed += self._delete_commitlog_files(now, ratio)
        removed += self._clean_logics()
        if removed:
            self._last_space_check = -_SPACE_CHECK_INTERVAL_MS  # writes may resume now
        return removed

    def _delete_commitlog_files(self, now: int, ratio: float) -> int:
        cfg = self.config
        cl = self.commitlog
        reserved_ms = int(cfg.file_reserved_time_hours * 3_600_000)
        forcibly = ratio > cfg.disk_space_clean_forcibly_ratio
        removed = 0
        while removed < cfg.delete_file_batch_max and cl.segment_count > 1:
            seg = cl.first_segment()
            assert seg is not None
            if cl.min_offset + cl.file_size > cl.flushed or self._busy(seg):
                break  # not yet durable, or an fsync thread holds it: next round
            if not forcibly:
                sealed = cl.sealed_at(0)
                if sealed is None or now < sealed + reserved_ms:
                    break  # files expire in order: nothing after this one is due either
            log.info(
                "removing commitlog file %s (%s)",
                seg.path,
                f"disk {ratio:.1f}% used" if forcibly else "expired",
            )
            cl.remove_first()
            removed += 1
            if forcibly:
                ratio = self._used_ratio()
                forcibly = ratio > cfg.disk_space_clean_forcibly_ratio
        return removed

    def _clean_logics(self) -> int:
        phy_min = self.commitlog.min_offset
        if phy_min <= self._logics_cleaned_to:
            return 0
        blocked = False

        def busy(seg: Segment) -> bool:
            nonlocal blocked
            if self._busy(seg):
                blocked = True
                return True
            return False

        removed = 0
        for queues in self._cqs.values():
            for cq in queues.values():
                removed += cq.delete_files_below(phy_min, busy)
                cq.correct_min_offset(phy_min)
        if self.config.message_index_enable:
            removed += self.index.delete_files_below(phy_min, busy)
        if not blocked:
            self._logics_cleaned_to = phy_min
        return removed

    async def _clean_loop(self) -> None:
        assert self._stop_event is not None
        interval = self.config.clean_interval_ms / 1000
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), interval)
            if self._stopping:
                break
            try:
                n = self.clean_expired_files()
            except DiskError as e:
                log.error("cleaning expired files failed: %s", e)
                continue
            if n:
                log.info("retention removed %d files", n)

    # --- recovery -------------------------------------------------------------------------
    def _load_consume_queues(self) -> None:
        units = self.config.mapped_file_size_consume_queue
        for topic in self.disk.listdir(self._cq_root):
            tdir = os.path.join(self._cq_root, topic)
            if not self.disk.isdir(tdir):
                continue
            for qname in self.disk.listdir(tdir):
                if not qname.isdigit():
                    continue
                cq = ConsumeQueue(self.disk, os.path.join(tdir, qname), topic, int(qname), units)
                cq.load()
                self._cqs.setdefault(topic, {})[int(qname)] = cq

    def _redispatch(self, msg: MessageExt) -> None:
        cq = self._cq(msg.topic, msg.queue_id, True)
        assert cq is not None
        try:
            cq.put(msg.queue_offset, msg.commit_log_offset, msg.store_size, self._tags_code_of(msg))
        except ValueError:
            # Below the queue's first file (already expired): nothing to rebuild.
            return
        if self.config.message_index_enable:
            entries: list[tuple[str, int, int]] = []
            _index_entries(
                msg.topic, msg.properties, msg.commit_log_offset, msg.store_timestamp, entries
            )
            self._put_index(entries)

    # --- reads ----------------------------------------------------------------------------
    def get_messages(
        self,
        topic: str,
        queue_id: int,
        offset: int,
        max_nums: int,
        max_bytes: int = 256 * 1024,
        tag_filter: Callable[[int], bool] | None = None,
    ) -> GetMessageResult:
        cq = self._cq(topic, queue_id, False)
        if cq is None:
            return GetMessageResult(GetMessageStatus.NO_MATCHED_LOGIC_QUEUE, 0, 0, 0)
        lo, hi = cq.min_offset, cq.max_offset
        if hi == 0:
            return GetMessageResult(GetMessageStatus.NO_MESSAGE_IN_QUEUE, 0, lo, hi)
        if offset < lo:
            return GetMessageResult(GetMessageStatus.OFFSET_TOO_SMALL, lo, lo, hi)
        if offset == hi:
            return GetMessageResult(GetMessageStatus.OFFSET_OVERFLOW_ONE, offset, lo, hi)
        if offset > hi:
            return GetMessageResult(GetMessageStatus.OFFSET_OVERFLOW_BADLY, hi, lo, hi)
        res = GetMessageResult(GetMessageStatus.NO_MATCHED_MESSAGE, offset, lo, hi)
        cl = self.commitlog
        size_total = 0
        status = GetMessageStatus.NO_MATCHED_MESSAGE
        for idx, phy, size, tc in cq.iter_units(offset, max(_MIN_SCAN_UNITS, max_nums)):
            if len(res.messages) >= max_nums:
                break
            if res.messages and size_total + size > max_bytes:
                break
            res.next_begin_offset = idx + 1
            if tag_filter is not None and not tag_filter(tc):
                continue
            rec = cl.read(phy, size) if size > 0 else None
            if rec is None:
                status = (
                    GetMessageStatus.MESSAGE_WAS_REMOVING
                    if phy < cl.min_offset
                    else GetMessageStatus.OFFSET_FOUND_NULL
                )
                continue
            res.messages.append(rec)
            res.queue_offsets.append(idx)
            size_total += size
        res.status = GetMessageStatus.FOUND if res.messages else status
        return res

    def get_max_offset(self, topic: str, queue_id: int) -> int:
        cq = self._cq(topic, queue_id, False)
        return cq.max_offset if cq else 0

    def get_min_offset(self, topic: str, queue_id: int) -> int:
        cq = self._cq(topic, queue_id, False)
        return cq.min_offset if cq else 0

    def get_store_timestamp(self, topic: str, queue_id: int, offset: int) -> int | None:
        cq = self._cq(topic, queue_id, False)
        unit = cq.get(offset) if cq else None
        if unit is None:
            return None
        head = self.commitlog.read(unit[0], 80)
        if head is None:
            return None
        try:
            return record_store_timestamp(head)
        except MessageDecodeError:
            return None

    def get_offset_by_time(
        self, topic: str, queue_id: int, timestamp_ms: int, boundary: str = "LOWER"
    ) -> int:
        """LOWER: first offset stored at or after the time (max offset if none).
        UPPER: last offset stored at or before it (min offset if none)."""
        cq = self._cq(topic, queue_id, False)
        if cq is None or cq.max_offset <= cq.min_offset:
            return 0 if cq is None else cq.min_offset
        lo, hi = cq.min_offset, cq.max_offset

        def ts(i: int) -> int:
            t = self.get_store_timestamp(topic, queue_id, i)
            return -1 if t is None else t

        if boundary.upper() == "UPPER":
            a, b = lo, hi  # first index with ts > timestamp
            while a < b:
                mid = (a + b) // 2
                if ts(mid) <= timestamp_ms:
                    a = mid + 1
                else:
                    b = mid
            return max(lo, a - 1)
        a, b = lo, hi  # first index with ts >= timestamp
        while a < b:
            mid = (a + b) // 2
            if ts(mid) < timestamp_ms:
                a = mid + 1
            else:
                b = mid
        return a

    def read_record(self, phy_offset: int) -> bytes | None:
        return self.commitlog.read_record(phy_offset)

    def look_message(self, phy_offset: int) -> MessageExt | None:
        rec = self.commitlog.read_record(phy_offset)
        if rec is None:
            return None
        try:
            return decode_record(rec)[0]
        except MessageDecodeError:
            return None

    def _query(
        self, topic: str, key: str, max_num: int, begin_ts: int, end_ts: int, uniq: bool
    ) -> list[MessageExt]:
        out: list[MessageExt] = []
        if not self.config.message_index_enable or max_num <= 0:
            return out
        for phy in self.index.query(topic, key, max_num, begin_ts, end_ts):
            msg = self.look_message(phy)
            if msg is None or msg.topic != topic or msg.commit_log_offset != phy:
                continue
            if not begin_ts <= msg.store_timestamp <= end_ts:
                continue
            hit = msg.properties.get(PROPERTY_UNIQ_KEY) == key
            if not uniq:
                hit = hit or key in msg.keys
            if hit:
                out.append(msg)
                if len(out) >= max_num:
                    break
        return out

    def query_by_key(
        self, topic: str, key: str, max_num: int = 32, begin_ts: int = 0, end_ts: int = 2**62
    ) -> list[MessageExt]:
        return self._query(topic, key, max_num, begin_ts, end_ts, uniq=False)

    def query_by_unique_key(
        self, topic: str, uniq_key: str, max_num: int = 32, begin_ts: int = 0, end_ts: int = 2**62
    ) -> list[MessageExt]:
        return self._query(topic, uniq_key, max_num, begin_ts, end_ts, uniq=True)

    # --- admin ----------------------------------------------------------------------------
    def delete_topic(self, topic: str) -> None:
        """Drops the topic's ConsumeQueues (CommitLog records age out with their files)."""
        queues = self._cqs.pop(topic, {})
        for cq in queues.values():
            self._dirty_cqs.discard(cq)
            cq.destroy()
        self.disk.rmtree(os.path.join(self._cq_root, topic))

    def topic_queues(self) -> dict[str, list[int]]:
        return {t: sorted(q) for t, q in self._cqs.items()}

    @property
    def max_physical_offset(self) -> int:
        return self.commitlog.wrote

    @property
    def min_physical_offset(self) -> int:
        return self.commitlog.min_offset

    @property
    def flushed_physical_offset(self) -> int:
        return self.commitlog.flushed

    @property
    def running(self) -> bool:
        return self._running
