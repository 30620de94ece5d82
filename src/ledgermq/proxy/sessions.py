"""Per-client state kept across RPCs: who is connected, as what, and a way to push.

A client is known by its `x-mq-client-id` header. Its open Telemetry stream has an
outbox; `push()` puts a server-initiated command there, which is how a broker's
transaction check reaches a producer as recover_orphaned_transaction_command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ledgermq.proxy.protocol import definition_pb2 as pb
from ledgermq.proxy.protocol import service_pb2 as svc

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ClientSession:
    client_id: str
    language: str = ""
    client_type: int = pb.CLIENT_TYPE_UNSPECIFIED
    group: str | None = None
    settings: pb.Settings | None = None
    publishing_topics: set[str] = field(default_factory=set)
    last_seen: float = 0.0
    # One outbox per open Telemetry stream (a client may reopen it).
    streams: list[asyncio.Queue[svc.TelemetryCommand]] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        return bool(self.streams)


class ClientSessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.sessions: dict[str, ClientSession] = {}

    def touch(self, client_id: str, language: str = "") -> ClientSession:
        session = self.sessions.get(client_id)
        if session is None:
            session = ClientSession(client_id)
            self.sessions[client_id] = session
        if language:
            session.language = language
        session.last_seen = self._clock()
        return session

    def open_stream(
        self, client_id: str, language: str = ""
    ) -> tuple[ClientSession, asyncio.Queue]:
        session = self.touch(client_id, language)
        outbox: asyncio.Queue[svc.TelemetryCommand] = asyncio.Queue()
        session.streams.append(outbox)
        return session, outbox

    def close_stream(self, session: ClientSession, outbox: asyncio.Queue) -> None:
        if outbox in session.streams:
            session.streams.remove(outbox)
        # the silence that makes a client "gone" counts from here
        session.last_seen = self._clock()

    def is_online(self, client_id: str, expire_seconds: float) -> bool:
        """Known, and either holding a Telemetry stream or heard from recently."""
        session = self.sessions.get(client_id)
        if session is None:
            return False
        return session.connected or self._clock() - session.last_seen <= expire_seconds

    def apply_settings(self, session: ClientSession, settings: pb.Settings) -> None:
        session.settings = settings
        if settings.HasField("client_type"):
            session.client_type = settings.client_type
        which = settings.WhichOneof("pub_sub")
        if which == "publishing":
            session.publishing_topics = {t.name for t in settings.publishing.topics if t.name}
        elif which == "subscription" and settings.subscription.HasField("group"):
            session.group = settings.subscription.group.name or None

    def terminate(self, client_id: str) -> ClientSession | None:
        """NotifyClientTermination: forget the client (its streams end on their own)."""
        return self.sessions.pop(client_id, None)

    def publishers_of(self, topic: str) -> list[ClientSession]:
        return [
            s
            for s in self.sessions.values()
            if s.connected and s.client_type == pb.PRODUCER and topic in s.publishing_topics
        ]

    def push(self, session: ClientSession, command: svc.TelemetryCommand) -> bool:
        """Queues a server command on the client's newest stream; False if none is open."""
        if not session.streams:
            return False
        session.streams[-1].put_nowait(command)
        return True

    def expire(self, idle_seconds: float) -> list[str]:
        """Drops clients with no open stream and no call for `idle_seconds`."""
        now = self._clock()
        gone = [
            cid
            for cid, s in self.sessions.items()
            if not s.connected and now - s.last_seen > idle_seconds
        ]
        for cid in gone:
            del self.sessions[cid]
        return gone
