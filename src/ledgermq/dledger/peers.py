"""Outgoing connections to peer members: oneway Raft messages, reconnect with backoff.

One `PeerLinks` per server, shared by every group it hosts, so members of many groups on
the same two servers share one TCP connection. Raft tolerates lost messages (heartbeats
and retries repair them), so sending never waits: while a connection is being made up to
`max_queued` messages wait for it; when it fails they are dropped and the next attempt
waits a backoff that doubles from 50 ms up to 1 s.
"""

from __future__ import annotations

import asyncio
import logging

from ledgermq.dledger.core import Message
from ledgermq.dledger.protocol import RAFT_CODE, encode_raft
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.connection import RemotingConnection
from ledgermq.remoting.errors import RemotingException

log = logging.getLogger(__name__)

MIN_BACKOFF = 0.05
MAX_BACKOFF = 1.0


class _Link:
    __slots__ = ("backoff", "conn", "connecting", "next_try", "queue")

    def __init__(self) -> None:
        self.conn: RemotingConnection | None = None
        self.connecting = False
        self.queue: list[RemotingCommand] = []
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
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.dropped = 0

    def send(self, group: str, addr: str, m: Message) -> None:
        cmd = RemotingCommand(
            code=RAFT_CODE[m.type],
            ext_fields={"group": group, "remoteId": m.dst, "localId": m.src},
            body=encode_raft(m),
        )
        self.send_command(addr, cmd)

    def send_command(self, addr: str, cmd: RemotingCommand) -> None:
        link = self._links.get(addr)
        if link is None:
            link = self._links[addr] = _Link()
        conn = link.conn
        if conn is not None and conn.is_open:
            transport = conn.transport
            if transport is not None and transport.get_write_buffer_size() > self.max_buffered:
                # a stalled peer (SIGSTOP, full socket): Raft resends what it needs later
                self.dropped += 1
                return
            try:
                conn.oneway(cmd)
                return
            except RemotingException:
                link.conn = None
        if self._closed:
            return
        if len(link.queue) < self.max_queued:
            link.queue.append(cmd)
        else:
            self.dropped += 1
        if not link.connecting:
            loop = asyncio.get_running_loop()
            if loop.time() >= link.next_try:
                link.connecting = True
                task = loop.create_task(self._connect(addr, link))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

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
        for cmd in queued:
            try:
                conn.oneway(cmd)
            except RemotingException:
                self.dropped += 1

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()
