"""`DLedgerClient`: append to, read from and manage one DLedger group (asyncio).

Indexes are DLedger's, 0-based: `append` returns the index `get` reads it back from.

The client keeps a guess of the leader. A NOT_LEADER reply names the leader (and its
address), so the next try goes there; a connection error or timeout moves on to the next
member; while a group is electing (NOT_LEADER without a leader, LEADER_NOT_READY,
LEADER_TRANSFERRING) it retries after a short pause, until the call's `timeout`. All
requests share one connection per member and many may be in flight at once.

A retried append may have been committed by the first try (its reply was lost), so
appends are at-least-once across failovers, like any log without client sessions.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from ledgermq.dledger.kv import (
    KV_REQUEST,
    OP_CAS,
    OP_DELETE,
    OP_GET,
    OP_PUT,
    KVCommand,
    KVResult,
    decode_result,
    encode_command,
)
from ledgermq.dledger.protocol import (
    BodyError,
    Code,
    LogEntry,
    RequestCode,
    code_name,
    decode_append_reply,
    decode_get_reply,
    decode_metadata,
    encode_append_request,
    parse_peers,
)
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand, SharedFields
from ledgermq.remoting.errors import RemotingException, RemotingTimeoutError

# worth another try, after a pause: the group is between leaders
# (not TERM_CHANGED: that entry may be committed anyway, and a retry would write it twice)
_TRANSIENT = frozenset({Code.NOT_LEADER, Code.LEADER_NOT_READY, Code.LEADER_TRANSFERRING})
_PAUSE = 0.05


# bounds of one coalesced APPEND request
COALESCE_MAX_BYTES = 1 << 20
COALESCE_MAX_COUNT = 1024


def _resolve_all(futures: list[asyncio.Future[int]], indexes: list[int]) -> None:
    if len(indexes) != len(futures):
        _fail_all(
            futures,
            DLedgerError(
                Code.UNEXPECTED_ARGUMENT, f"{len(indexes)} indexes for {len(futures)} appends"
            ),
        )
        return
    for future, index in zip(futures, indexes, strict=True):
        if not future.done():  # its caller may have given up
            future.set_result(index)


def _fail_all(futures: list[asyncio.Future[int]], exc: Exception) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)


class DLedgerError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code_name(code)} ({code}): {message}")
        self.code = int(code)
        self.message = message


class DLedgerClient:
    def __init__(
        self,
        group: str,
        peers: str | dict[str, str],
        *,
        timeout: float = 5.0,
        request_timeout: float = 3.0,
        coalesce: bool = True,
    ) -> None:
        """`coalesce`: appends made in the same event-loop iteration share one request
        (each still gets its own index); False sends one request per append."""
        self.group = group
        self.peers = parse_peers(peers) if isinstance(peers, str) else dict(peers)
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.leader_id: str | None = None
        self._remoting = RemotingClient(connect_timeout=1.0)
        self._rotation = itertools.cycle(list(self.peers))
        # extFields of appends to the leader, shared by all of them (never mutated)
        self._leader_fields: dict[str, str] = SharedFields()
        self.coalesce = coalesce
        # appends waiting for the end of this loop iteration (see append())
        self._batch: list[bytes] = []
        self._batch_futures: list[asyncio.Future[int]] = []
        self._batch_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        self._send_batch()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._remoting.close()

    async def __aenter__(self) -> DLedgerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- plumbing ------------------------------------------------------------------------

    def _next_target(self) -> str:
        if self.leader_id in self.peers:
            return self.leader_id  # type: ignore[return-value]
        return next(self._rotation)

    def _learn(self, reply: RemotingCommand) -> None:
        leader = reply.ext_fields.get("leaderId")
        addr = reply.ext_fields.get("leaderAddr")
        if leader:
            if addr and self.peers.get(leader) != addr:
                self.peers[leader] = addr
            self.leader_id = leader

    async def call(
        self,
        code: int,
        ext: dict[str, str] | None = None,
        body: bytes = b"",
        *,
        member: str | None = None,
        leader: bool = True,
        timeout: float | None = None,
    ) -> RemotingCommand:
        """Send one request and return the SUCCESS reply; DLedgerError otherwise.

        `member` pins the request to one member (no redirects); `leader=False` lets any
        member answer (the first reachable one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        last = "no member answered"
        last_code = int(Code.NETWORK_ERROR)
        while True:
            target = member or (self._next_target() if leader else next(self._rotation))
            addr = self.peers.get(target)
            if addr is None:
                raise DLedgerError(Code.UNKNOWN_MEMBER, f"{target!r} is not among the peers")
            fields = {"group": self.group, "remoteId": target}
            if ext:
                fields.update(ext)
            cmd = RemotingCommand(code=int(code), ext_fields=fields, body=body)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DLedgerError(last_code, f"gave up after {timeout or self.timeout}s: {last}")
            try:
                conn = await self._remoting.connection(addr)
                reply = await conn.request(cmd, min(self.request_timeout, remaining))
            except RemotingException as exc:
                last, last_code = f"{target} at {addr}: {exc}", int(Code.NETWORK_ERROR)
                if member is not None:
                    raise DLedgerError(Code.NETWORK_ERROR, last) from None
                if self.leader_id == target:
                    self.leader_id = None
                if not isinstance(exc, RemotingTimeoutError):
                    # a slow member keeps its connection: the other requests on it are
                    # likely fine; a broken one is dropped so the next try reconnects
                    self._remoting.close_connection(addr)
                await asyncio.sleep(min(_PAUSE, max(0.0, deadline - loop.time())))
                continue
            if reply.code == Code.SUCCESS:
                if leader and member is None:
                    self._learn(reply)
                return reply
            remark = reply.remark or ""
            last, last_code = f"{target}: {code_name(reply.code)} {remark}", reply.code
            if member is not None or reply.code not in _TRANSIENT:
                raise DLedgerError(reply.code, remark or code_name(reply.code))
            hinted = reply.ext_fields.get("leaderId")
            if reply.code == Code.NOT_LEADER and hinted and hinted != target:
                self._learn(reply)
                continue  # go straight to the named leader
            self.leader_id = None
            await asyncio.sleep(min(_PAUSE, max(0.0, deadline - loop.time())))

    # ---- the log -------------------------------------------------------------------------

    async def append(self, body: bytes) -> int:
        if not self.coalesce:
            payload = encode_append_request([body])
            reply = await self._append_to_leader(payload)
            if reply is None:
                reply = await self.call(RequestCode.APPEND, body=payload)
            return decode_append_reply(reply.body)[0]
        # Appends made in one loop iteration (e.g. by many tasks woken by one burst of
        # replies) leave as one APPEND request, sent at the end of that iteration: no
        # added wait, one frame to encode and answer instead of one per append.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._send_batch)
        self._batch.append(body)
        self._batch_futures.append(future)
        self._batch_bytes += len(body)
        if self._batch_bytes >= COALESCE_MAX_BYTES or len(self._batch) >= COALESCE_MAX_COUNT:
            self._send_batch()
        return await future

    def _send_batch(self) -> None:
        bodies, futures = self._batch, self._batch_futures
        if not bodies:
            return
        self._batch, self._batch_futures, self._batch_bytes = [], [], 0
        payload = encode_append_request(bodies)
        reply = self._start_append_to_leader(payload)
        if reply is None:
            self._batch_retry(payload, futures)
        else:
            reply.add_done_callback(lambda r: self._batch_answered(r, payload, futures))

    def _start_append_to_leader(self, payload: bytes) -> asyncio.Future[RemotingCommand] | None:
        """The hot path: an APPEND straight to the known leader on its open connection,
        its reply's future; None when that cannot be done now (call() then finds the
        leader, connects and retries)."""
        leader = self.leader_id
        conn = self._remoting.open_connection(self.peers.get(leader, "")) if leader else None
        if conn is None:
            return None
        fields = self._leader_fields
        if fields.get("remoteId") != leader:
            fields = self._leader_fields = SharedFields(group=self.group, remoteId=leader)
        cmd = RemotingCommand(code=RequestCode.APPEND, ext_fields=fields, body=payload)
        try:
            return conn.start_request(cmd, self.request_timeout)
        except RemotingException:
            return None

    def _batch_answered(
        self, reply: asyncio.Future[RemotingCommand], payload: bytes, futures: list
    ) -> None:
        if (
            reply.cancelled()
            or reply.exception() is not None
            or reply.result().code != Code.SUCCESS
        ):
            # not appended (NOT_LEADER, ...) or no answer: call() finds the leader, retries
            self._batch_retry(payload, futures)
            return
        try:
            indexes = decode_append_reply(reply.result().body)
        except BodyError as exc:
            _fail_all(futures, DLedgerError(Code.UNEXPECTED_ARGUMENT, str(exc)))
            return
        _resolve_all(futures, indexes)

    def _batch_retry(self, payload: bytes, futures: list) -> None:
        task = asyncio.get_running_loop().create_task(self._append_slowly(payload, futures))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _append_slowly(self, payload: bytes, futures: list) -> None:
        try:
            reply = await self.call(RequestCode.APPEND, body=payload)
            indexes = decode_append_reply(reply.body)
        except (DLedgerError, BodyError) as exc:
            _fail_all(futures, exc)
            return
        except asyncio.CancelledError:
            _fail_all(futures, DLedgerError(Code.NETWORK_ERROR, "the client was closed"))
            raise
        _resolve_all(futures, indexes)

    async def _append_to_leader(self, payload: bytes) -> RemotingCommand | None:
        """`_start_append_to_leader`, awaited: its SUCCESS reply or None."""
        pending = self._start_append_to_leader(payload)
        if pending is None:
            return None
        try:
            reply = await pending
        except RemotingException:
            return None
        # anything but SUCCESS was not appended (NOT_LEADER, ...): call() sorts it out
        return reply if reply.code == Code.SUCCESS else None

    async def append_batch(self, bodies: list[bytes]) -> list[int]:
        if not bodies:
            return []
        reply = await self.call(RequestCode.APPEND, body=encode_append_request(list(bodies)))
        return decode_append_reply(reply.body)

    async def get_entries(
        self, index: int, count: int = 1, *, member: str | None = None
    ) -> list[LogEntry]:
        reply = await self.call(
            RequestCode.GET, {"index": str(index), "count": str(count)}, member=member
        )
        return decode_get_reply(reply.body)

    async def get(self, index: int, *, member: str | None = None) -> bytes:
        """The body at DLedger index `index` (b"" for the leader's no-op entries)."""
        entries = await self.get_entries(index, 1, member=member)
        if not entries or entries[0].index != index:
            raise DLedgerError(Code.INDEX_OUT_OF_RANGE, f"no entry {index}")
        return entries[0].data

    async def metadata(self, member: str | None = None) -> dict[str, Any]:
        """The group as `member` (default: the leader, else any member) sees it."""
        try:
            reply = await self.call(RequestCode.METADATA, member=member, leader=False)
        except DLedgerError:
            raise
        meta = decode_metadata(reply.body)
        if member is None and meta.get("leaderId") and meta.get("leaderId") != meta.get("selfId"):
            try:
                reply = await self.call(RequestCode.METADATA, member=meta["leaderId"])
                meta = decode_metadata(reply.body)
            except DLedgerError:
                pass  # the leader is unreachable: what the first member said will do
        if meta.get("leaderId"):
            self.leader_id = meta["leaderId"]
        return meta

    async def transfer_leadership(self, to_id: str, *, timeout: float | None = None) -> None:
        await self.call(
            RequestCode.LEADERSHIP_TRANSFER,
            {"transfereeId": to_id},
            timeout=timeout or max(self.timeout, 5.0),
        )
        self.leader_id = to_id

    # ---- membership (CHANGE_MEMBERSHIP 51007, see protocol.py) ---------------------------

    async def _change(
        self, change_type: str, node_id: str, address: str = "", timeout: float | None = None
    ) -> dict[str, Any]:
        ext = {"changeType": change_type, "nodeId": node_id}
        if address:
            ext["address"] = address
        reply = await self.call(
            RequestCode.CHANGE_MEMBERSHIP, ext, timeout=timeout or max(self.timeout, 10.0)
        )
        result = decode_metadata(reply.body)
        peers = result.get("peers")
        if isinstance(peers, dict) and peers:
            # reach exactly the members now (a removed one no longer knows the leader)
            self.peers = {str(k): str(v) for k, v in peers.items()}
            self._rotation = itertools.cycle(list(self.peers))
        return result

    async def add_learner(self, node_id: str, address: str, **kw: Any) -> dict[str, Any]:
        """Add a new member that replicates the log but does not vote; returns once the
        change is committed: {"index", "voters", "learners", "peers"}."""
        return await self._change("add-learner", node_id, address, **kw)

    async def add_voter(self, node_id: str, address: str, **kw: Any) -> dict[str, Any]:
        """Add a new member straight in as a voter (add_learner + promote is safer: the
        quorum grows only once the new member has caught up)."""
        return await self._change("add-voter", node_id, address, **kw)

    async def promote(self, node_id: str, **kw: Any) -> dict[str, Any]:
        """Make a learner a voter, once it holds everything committed so far."""
        return await self._change("promote", node_id, **kw)

    async def remove_member(self, node_id: str, **kw: Any) -> dict[str, Any]:
        """Remove a voter or learner (a removed leader steps down once it commits)."""
        return await self._change("remove", node_id, **kw)

    # ---- the KV example state machine --------------------------------------------------

    async def _kv(self, c: KVCommand) -> KVResult:
        reply = await self.call(
            RequestCode.USER_DEFINE, {"requestTypeCode": str(KV_REQUEST)}, encode_command(c)
        )
        return decode_result(reply.body)

    async def put(self, key: bytes, value: bytes) -> KVResult:
        return await self._kv(KVCommand(OP_PUT, key, value))

    async def kv_get(self, key: bytes) -> bytes | None:
        """Linearizable read (ReadIndex on the leader)."""
        return (await self._kv(KVCommand(OP_GET, key))).value

    async def cas(self, key: bytes, expected: bytes | None, new: bytes) -> KVResult:
        """Set `key` to `new` if it holds `expected` (None: if it is absent)."""
        c = KVCommand(OP_CAS, key, expected or b"", new, expect_absent=expected is None)
        return await self._kv(c)

    async def delete(self, key: bytes) -> KVResult:
        return await self._kv(KVCommand(OP_DELETE, key))


class SyncDLedgerClient:
    """A blocking wrapper for scripts: every method runs the async one to completion on
    a private event loop. Not for use inside a running event loop."""

    def __init__(self, group: str, peers: str | dict[str, str], **kw: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = self._loop.run_until_complete(self._make(group, peers, kw))

    @staticmethod
    async def _make(group: str, peers: str | dict[str, str], kw: dict) -> DLedgerClient:
        return DLedgerClient(group, peers, **kw)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(attr(*args, **kwargs))

        return call

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self._client.close())
        finally:
            self._loop.close()

    def __enter__(self) -> SyncDLedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
