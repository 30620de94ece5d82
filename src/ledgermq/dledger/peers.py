"""Outgoing connections to peer members: oneway Raft messages, reconnect with backoff.

One `PeerLinks` per server, shared by every group it hosts, so members of many groups on
the same two servers share one TCP connection. Raft tolerates lost messages (heartbeats
and retries repair them), so sending never waits: while a connection is being made up to
`max_queued` messages wait for it; when it fails they are dropped and the next attempt
waits a backoff that doubles from 50 ms up to 1 s.

Hot path: a Raft message becomes one remoting frame whose JSON header (code, group,
sender, receiver; opaque 0, as a oneway request needs no reply) is encoded once per
(code, group, src, dst) and reused. Frames wait in a per-link buffer until `flush()`,
which writes each link's frames with one system call; the driver flushes right after
sending a Ready's messages (so an append is on the wire before the leader's own fsync
starts), and a flush is also scheduled on the loop for callers that do not.
"""

from __future__ import annotations

import asyncio
import logging
import struct

from ledgermq.dledger.core import Message
from ledgermq.dledger.protocol import RAFT_CODE, encode_raft
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import FLAG_ONEWAY, RemotingCommand, SerializeType, encode_command
from ledgermq.remoting.connection import RemotingConnection
from ledgermq.remoting.errors import RemotingException

log = logging.getLogger(__name__)

MIN_BACKOFF = 0.05
MAX_BACKOFF = 1.0
_PREFIX = struct.Struct(">iI")  # frame length, (serialize type << 24) | header length


class _Link:
    __slots__ = ("backoff", "conn", "connecting", "next_try", "out", "queue")

    def __init__(self) -> None:
        self.conn: RemotingConnection | None = None
        self.connecting = False
        self.queue: list[bytes] = []  # frames waiting for the connection
        self.out: list[bytes] = []  # frames waiting for flush() on an open connection
        self.next_try = 0.0
        self.backoff = MIN_BACKOFF


class PeerLinks:
    def __init__(
        self,
        *,
        connect_timeout: float = 1.0,
        max_queued: int = 4096,
        max_buffered: int = 64 << 20,
    ) -> None:
        self.client = RemotingClient(connect_timeout=connect_timeout)
        self.max_queued = max_queued
        self.max_buffered = max_buffered
        self._links: dict[str, _Link] = {}
        self._dirty: list[_Link] = []  # links with frames in `out`
        self._flush_scheduled = False
        self._headers: dict[tuple, tuple[bytes, int]] = {}  # -> (header, its mark)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.dropped = 0

    def _header(self, code: int, group: str, src: str, dst: str) -> tuple[bytes, int]:
        key = (code, group, src, dst)
        h = self._headers.get(key)
        if h is None:
            cmd = RemotingCommand(
                code=int(code),
                flag=FLAG_ONEWAY,
                ext_fields={"group": group, "remoteId": dst, "localId": src},
                serialize_type=SerializeType.JSON,
            )
            frame = encode_command(cmd)
            header = frame[_PREFIX.size :]
            h = self._headers[key] = (header, (int(SerializeType.JSON) << 24) | len(header))
            if len(self._headers) > 4096:  # membership churn: do not grow forever
                self._headers = {key: h}
        return h

    def send(self, group: str, addr: str, m: Message) -> None:
        header, mark = self._header(RAFT_CODE[m.type], group, m.src, m.dst)
        body = encode_raft(m)
        self._send_frame(
            addr, b"".join((_PREFIX.pack(4 + len(header) + len(body), mark), header, body))
        )

    def send_command(self, addr: str, cmd: RemotingCommand) -> None:
        cmd.flag = (cmd.flag | FLAG_ONEWAY) & ~1
        self._send_frame(addr, encode_command(cmd))

    def _send_frame(self, addr: str, frame: bytes) -> None:
        link = self._links.get(addr)
        if link is None:
            link = self._links[addr] = _Link()
        conn = link.conn
        if conn is not None and conn.is_open:
            if not link.out:
                self._dirty.append(link)
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    asyncio.get_running_loop().call_soon(self.flush)
            link.out.append(frame)
            return
        link.conn = None
        if self._closed:
            return
        if len(link.queue) < self.max_queued:
            link.queue.append(frame)
        else:
            self.dropped += 1
        if not link.connecting:
            loop = asyncio.get_running_loop()
            if loop.time() >= link.next_try:
                link.connecting = True
                task = loop.create_task(self._connect(addr, link))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def flush(self) -> None:
        """Write every buffered frame now (one write per peer)."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for link in dirty:
            frames, link.out = link.out, []
            if frames:
                self._write(link, frames)

    def _write(self, link: _Link, frames: list[bytes]) -> None:
        conn = link.conn
        transport = conn.transport if conn is not None else None
        if transport is None or transport.is_closing():
            link.conn = None
            self.dropped += len(frames)  # Raft resends what it needs
            return
        if transport.get_write_buffer_size() > self.max_buffered:
            # a stalled peer (SIGSTOP, full socket): Raft resends what it needs later
            self.dropped += len(frames)
            return
        transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def _connect(self, addr: str, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        try:
            conn = await self.client.connection(addr)
        except (RemotingException, OSError) as exc:
            log.debug("peer %s unreachable: %s", addr, exc)
            self.dropped += len(link.queue)
            link.queue.clear()
            link.next_try = loop.time() + link.backoff
            link.backoff = min(MAX_BACKOFF, link.backoff * 2)
            return
        finally:
            link.connecting = False
        link.conn = conn
        link.backoff = MIN_BACKOFF
        queued, link.queue = link.queue, []
        if queued:
            self._write(link, queued)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()
