"""asyncio remoting client: one cached connection per address, requests matched by opaque."""

from __future__ import annotations

import asyncio
import itertools
import logging

from ledgermq.remoting.codec import DEFAULT_MAX_FRAME_SIZE, RemotingCommand
from ledgermq.remoting.connection import Dispatcher, RemotingConnection
from ledgermq.remoting.errors import RemotingConnectError

log = logging.getLogger(__name__)


def split_address(addr: str) -> tuple[str, int]:
    host, _, port = addr.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address {addr!r} is not host:port")
    return host.strip("[]"), int(port)


class RemotingClient:
    def __init__(
        self,
        dispatcher: Dispatcher | None = None,
        *,
        connect_timeout: float = 3.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        # Handles requests that servers send back to us on our own connections.
        self.dispatcher = dispatcher
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size
        self._connections: dict[str, RemotingConnection] = {}
        self._connecting: dict[str, asyncio.Future[RemotingConnection]] = {}
        self._opaques = itertools.count(1)
        self._closed = False

    def connections(self) -> dict[str, RemotingConnection]:
        return {a: c for a, c in self._connections.items() if c.is_open}

    def open_connection(self, addr: str) -> RemotingConnection | None:
        """The cached connection to `addr` if it is open (never connects)."""
        conn = self._connections.get(addr)
        return conn if conn is not None and conn.is_open else None

    async def connection(self, addr: str) -> RemotingConnection:
        conn = self._connections.get(addr)
        if conn is not None and conn.is_open:
            return conn
        if self._closed:
            raise RemotingConnectError("client is closed")
        pending = self._connecting.get(addr)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[RemotingConnection] = asyncio.get_running_loop().create_future()
        self._connecting[addr] = future
        try:
            conn = await self._connect(addr)
            self._connections[addr] = conn
            future.set_result(conn)
            return conn
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._connecting[addr]

    async def _connect(self, addr: str) -> RemotingConnection:
        host, port = split_address(addr)
        loop = asyncio.get_running_loop()

        def on_close(conn: RemotingConnection) -> None:
            if self._connections.get(addr) is conn:
                del self._connections[addr]

        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: RemotingConnection(
                        self.dispatcher,
                        max_frame_size=self.max_frame_size,
                        on_close=on_close,
                        opaque_counter=self._opaques,
                    ),
                    host,
                    port,
                ),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise RemotingConnectError(f"cannot connect to {addr}: {exc or 'timeout'}") from None
        return conn

    async def invoke(
        self, addr: str, cmd: RemotingCommand, timeout: float = 3.0
    ) -> RemotingCommand:
        conn = await self.connection(addr)
        return await conn.request(cmd, timeout)

    async def invoke_oneway(self, addr: str, cmd: RemotingCommand) -> None:
        conn = await self.connection(addr)
        conn.oneway(cmd)

    def close_connection(self, addr: str) -> None:
        conn = self._connections.pop(addr, None)
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        self._closed = True
        conns = list(self._connections.values())
        self._connections.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            try:
                await asyncio.wait_for(asyncio.shield(conn.closed), 1.0)
            except TimeoutError:
                pass
