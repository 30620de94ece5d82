"""asyncio remoting server: accepts connections and feeds them to a Dispatcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ledgermq.remoting.codec import DEFAULT_MAX_FRAME_SIZE
from ledgermq.remoting.connection import (
    DEFAULT_READ_SLICE_BYTES,
    Dispatcher,
    RemotingConnection,
)

log = logging.getLogger(__name__)


class RemotingServer:
    def __init__(
        self,
        dispatcher: Dispatcher,
        host: str = "0.0.0.0",
        port: int = 0,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        read_slice_bytes: int = DEFAULT_READ_SLICE_BYTES,
        name: str = "remoting",
    ) -> None:
        self.dispatcher = dispatcher
        self.host = host
        self._requested_port = port
        self.max_frame_size = max_frame_size
        self.read_slice_bytes = read_slice_bytes
        self.name = name
        self.connections: set[RemotingConnection] = set()
        self._close_listeners: list[Callable[[RemotingConnection], None]] = []
        self._server: asyncio.base_events.Server | None = None

    def add_close_listener(self, listener: Callable[[RemotingConnection], None]) -> None:
        """Called with each connection as it closes (brokers drop client channels, the
        NameServer unregisters brokers)."""
        self._close_listeners.append(listener)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return self._server.sockets[0].getsockname()[1]

    def _on_close(self, conn: RemotingConnection) -> None:
        self.connections.discard(conn)
        for listener in self._close_listeners:
            try:
                listener(conn)
            except Exception:
                log.exception("%s: connection close listener failed", self.name)

    def _make_connection(self) -> RemotingConnection:
        conn = RemotingConnection(
            self.dispatcher,
            max_frame_size=self.max_frame_size,
            on_close=self._on_close,
            read_slice_bytes=self.read_slice_bytes,
        )
        self.connections.add(conn)
        return conn

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_connection,
            self.host,
            self._requested_port,
            reuse_address=True,
            backlog=1024,
        )
        log.info("%s listening on %s:%d", self.name, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        await self.dispatcher.cancel_all()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
