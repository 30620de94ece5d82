"""`DLedgerServer`: one listening port, many Raft groups (group name -> `Member`).

Requests name their group in the ``group`` header field and, optionally, the member
they are meant for in ``remoteId``. An unknown group answers 400 UNKNOWN_GROUP, a
``remoteId`` that is not the member hosted here 401 UNKNOWN_MEMBER. Replies carry the
DLedger code as the remoting code (see protocol.py), with ``leaderId``, ``leaderAddr``
and ``term`` in extFields.

One ticker drives every member (a tick every ``tick_ms``), and one thread pool runs the
fsyncs, so a process hosting many groups costs one timer and a few threads.
"""

from __future__ import annotations

import asyncio
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ledgermq.dledger.core.types import ConfChangeType, ConfigChange
from ledgermq.dledger.member import Member, MemberConfig, MemberError
from ledgermq.dledger.peers import PeerLinks
from ledgermq.dledger.protocol import (
    RAFT_CODES,
    BodyError,
    Code,
    LogEntry,
    RequestCode,
    decode_append_request,
    decode_raft,
    encode_append_reply,
    encode_get_reply,
    encode_metadata,
)
from ledgermq.dledger.statemachine import StateMachine, UserRequestHandler
from ledgermq.remoting.codec import RemotingCommand, SharedFields
from ledgermq.remoting.connection import Dispatcher, RemotingConnection
from ledgermq.remoting.server import RemotingServer
from ledgermq.storage.disk import Disk

log = logging.getLogger(__name__)


class DLedgerServer:
    def __init__(
        self,
        store_dir: str,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        config: MemberConfig | None = None,
        disk: Disk | None = None,
        fsync_threads: int = 4,
    ) -> None:
        self.store_dir = store_dir.rstrip("/")
        self.config = config or MemberConfig()
        self.disk = disk
        self.dispatcher = Dispatcher()
        self.server = RemotingServer(self.dispatcher, host, port, name="dledger")
        self.links = PeerLinks()
        self.members: dict[str, Member] = {}
        # member -> ((leader, term, leader address), extFields of its success replies)
        self._ok_fields: dict[Member | None, tuple[object, SharedFields]] = {}
        self._executor = ThreadPoolExecutor(fsync_threads, thread_name_prefix="dledger-fsync")
        self._ticker: asyncio.Task[None] | None = None
        self._register()

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> DLedgerServer:
        await self.server.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())
        return self

    async def add_group(
        self,
        group: str,
        self_id: str,
        peers: dict[str, str],
        *,
        state_machine: StateMachine | None = None,
        config: MemberConfig | None = None,
        rng: random.Random | None = None,
        join: bool = False,
    ) -> Member:
        """Host `self_id`'s member of `group`; its files go to
        ``<store_dir>/<group>/dledger-<self_id>/``. ``join=True``: a member being added
        to a running group (see `Member`)."""
        if group in self.members:
            raise ValueError(f"group {group!r} is already hosted here")
        if not group or "/" in group or group.startswith("."):
            raise ValueError(f"bad group name {group!r}")

        def send(addr: str, m: Any) -> None:
            self.links.send(group, addr, m)

        member = Member(
            group,
            self_id,
            peers,
            f"{self.store_dir}/{group}",
            send=send,
            config=config or self.config,
            state_machine=state_machine,
            disk=self.disk,
            executor=self._executor,
            rng=rng,
            join=join,
            flush=self.links.flush,
        )
        await member.start()
        self.members[group] = member
        return member

    async def remove_group(self, group: str) -> None:
        member = self.members.pop(group, None)
        if member is not None:
            self._ok_fields.pop(member, None)
            await member.stop()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
            self._ticker = None
        await self.server.stop()
        for group in list(self.members):
            await self.remove_group(group)
        await self.links.close()
        self._executor.shutdown(wait=True)

    async def _tick_loop(self) -> None:
        interval = self.config.tick_ms / 1000
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            # sleep to a fixed schedule; a late wakeup does not pile up extra ticks
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + interval, loop.time())
            for member in list(self.members.values()):
                try:
                    member.tick()
                except Exception:
                    log.exception("tick of %s failed", member.group)

    # ---- request handling ----------------------------------------------------------------

    def _register(self) -> None:
        d = self.dispatcher
        for code in RAFT_CODES:
            d.register(code, self._on_peer_code)
        d.register(RequestCode.APPEND, self._on_append, group=self._on_append_group)
        d.register(RequestCode.GET, self._on_get)
        d.register(RequestCode.METADATA, self._on_metadata)
        d.register(RequestCode.PULL, self._on_unsupported)
        d.register(RequestCode.USER_DEFINE, self._on_user_define)
        d.register(RequestCode.CHANGE_MEMBERSHIP, self._on_change_membership)

    def _member(self, cmd: RemotingCommand) -> Member:
        group = cmd.ext_fields.get("group", "")
        member = self.members.get(group)
        if member is None:
            hosted = ", ".join(sorted(self.members)) or "none"
            raise MemberError(
                Code.UNKNOWN_GROUP, f"unknown group {group!r} (this server hosts: {hosted})"
            )
        remote_id = cmd.ext_fields.get("remoteId")
        if remote_id and remote_id != member.self_id:
            raise MemberError(
                Code.UNKNOWN_MEMBER,
                f"this server hosts member {member.self_id!r} of {group!r}, not {remote_id!r}",
            )
        return member

    @staticmethod
    def _fields(member: Member | None, leader_id: str | None = None) -> dict[str, str]:
        """What every reply from `member` tells the client: the leader and the term."""
        ext: dict[str, str] = {}
        if member is not None and member.node is not None:
            leader = leader_id or member.leader_id
            if leader:
                ext["leaderId"] = leader
                addr = member.peers.get(leader)
                if addr:
                    ext["leaderAddr"] = addr
            ext["term"] = str(member.node.term)
        return ext

    def _reply(
        self,
        cmd: RemotingCommand,
        code: int,
        remark: str | None = None,
        member: Member | None = None,
        body: bytes = b"",
        leader_id: str | None = None,
    ) -> RemotingCommand:
        return cmd.make_response(int(code), remark, self._fields(member, leader_id), body)

    def _success_fields(self, member: Member | None) -> SharedFields:
        """The extFields of a success reply from `member`, made once per leader and term
        (thousands of append replies a second carry the same ones)."""
        node = member.node if member is not None else None
        key = None
        if member is not None and node is not None:
            key = (member.leader_id, node.term, member.peers.get(member.leader_id or ""))
        cached = self._ok_fields.get(member)
        if cached is None or cached[0] != key:
            cached = self._ok_fields[member] = (key, SharedFields(self._fields(member)))
        return cached[1]

    def _error_reply(
        self, cmd: RemotingCommand, exc: MemberError, member: Member | None
    ) -> RemotingCommand:
        return self._reply(cmd, exc.code, exc.message, member, leader_id=exc.leader_id)

    def _on_peer_code(self, conn: RemotingConnection, cmd: RemotingCommand) -> Any:
        if not cmd.is_oneway:
            if cmd.code == RequestCode.LEADERSHIP_TRANSFER:
                return self._on_transfer(cmd)
            return self._reply(
                cmd, Code.UNSUPPORTED, f"code {cmd.code} takes oneway peer messages only here"
            )
        try:
            member = self._member(cmd)
            msg = decode_raft(cmd.body, cmd.ext_fields.get("localId", ""), member.self_id, cmd.code)
        except (MemberError, BodyError) as exc:
            log.debug("dropping peer message from %s: %s", conn.remote_address, exc)
            return None
        member.step(msg)
        return None

    # APPEND: requests that arrived in one read are proposed together, one task for all
    def _on_append(self, conn: RemotingConnection, cmd: RemotingCommand) -> Any:
        # proposed now (not when a task gets to it), answered when applied
        return self._first(self._on_append_group(conn, [cmd]))

    @staticmethod
    async def _first(replies: Any) -> RemotingCommand | None:
        return (await replies)[0]

    def _on_append_group(self, conn: RemotingConnection, cmds: list[RemotingCommand]) -> Any:
        waits: list[tuple[RemotingCommand, Member | None, Any]] = []
        todo: dict[Member, list[tuple[int, list[bytes]]]] = {}  # -> (position, bodies)
        for cmd in cmds:
            member: Member | None = None
            try:
                member = self._member(cmd)
                bodies = decode_append_request(cmd.body)
            except MemberError as exc:
                waits.append((cmd, member, self._error_reply(cmd, exc, member)))
                continue
            except BodyError as exc:
                waits.append((cmd, member, self._reply(cmd, Code.UNEXPECTED_ARGUMENT, str(exc))))
                continue
            todo.setdefault(member, []).append((len(waits), bodies))
            waits.append((cmd, member, None))
        for member, items in todo.items():
            results = member.submit_many([bodies for _, bodies in items])
            for (at, _), r in zip(items, results, strict=True):
                cmd = waits[at][0]
                if isinstance(r, MemberError):
                    waits[at] = (cmd, member, self._error_reply(cmd, r, member))
                else:
                    waits[at] = (cmd, member, r)
        return self._finish_appends(waits)

    async def _finish_appends(
        self, waits: list[tuple[RemotingCommand, Member | None, Any]]
    ) -> list[RemotingCommand | None]:
        out: list[RemotingCommand | None] = []
        ok: tuple[Member | None, dict[str, str]] | None = None  # success extFields, shared
        for cmd, member, pending in waits:
            if isinstance(pending, RemotingCommand):
                out.append(pending)
                continue
            try:
                # entries apply in order: when the last is done, so are the others
                last = pending[-1]
                if not last.done():
                    await last
                    ok = None  # leader or term may have changed meanwhile
                first = pending[0].result()[0]
                if len(pending) > 1:
                    for fut in pending:
                        fut.result()
                body = encode_append_reply(first, len(pending))
                if ok is None or ok[0] is not member:
                    ok = (member, self._success_fields(member))
                out.append(cmd.make_response(Code.SUCCESS, None, ok[1], body))
            except MemberError as exc:
                for fut in pending:  # consume the others' exceptions
                    if fut.done() and not fut.cancelled():
                        fut.exception()
                out.append(self._error_reply(cmd, exc, member))
        return out

    def _on_get(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        member: Member | None = None
        try:
            member = self._member(cmd)
            try:
                index = int(cmd.ext_fields.get("index", ""))
                count = int(cmd.ext_fields.get("count", "1") or 1)
            except ValueError:
                return self._reply(
                    cmd, Code.UNEXPECTED_ARGUMENT, "GET needs an integer 'index'", member
                )
            entries: list[LogEntry] = member.get(index, count)
        except MemberError as exc:
            return self._error_reply(cmd, exc, member)
        return self._reply(cmd, Code.SUCCESS, None, member, encode_get_reply(entries))

    def _on_metadata(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        member: Member | None = None
        try:
            member = self._member(cmd)
        except MemberError as exc:
            return self._error_reply(cmd, exc, member)
        return self._reply(cmd, Code.SUCCESS, None, member, encode_metadata(member.metadata()))

    async def _on_transfer(self, cmd: RemotingCommand) -> RemotingCommand:
        member: Member | None = None
        try:
            member = self._member(cmd)
            to = cmd.ext_fields.get("transfereeId", "")
            if not to:
                return self._reply(cmd, Code.UNEXPECTED_ARGUMENT, "missing 'transfereeId'", member)
            await member.transfer_leadership(to)
        except MemberError as exc:
            return self._error_reply(cmd, exc, member)
        return self._reply(cmd, Code.SUCCESS, None, member)

    async def _on_change_membership(
        self, conn: RemotingConnection, cmd: RemotingCommand
    ) -> RemotingCommand:
        """CHANGE_MEMBERSHIP (51007, see protocol.py): one single-server change."""
        member: Member | None = None
        try:
            member = self._member(cmd)
            ext = cmd.ext_fields
            try:
                kind = ConfChangeType(ext.get("changeType", ""))
            except ValueError:
                kinds = ", ".join(t.value for t in ConfChangeType)
                return self._reply(
                    cmd, Code.UNEXPECTED_ARGUMENT, f"'changeType' must be one of {kinds}", member
                )
            node_id = ext.get("nodeId", "")
            if not node_id or any(c in node_id for c in ";-, \t\n"):
                return self._reply(
                    cmd, Code.UNEXPECTED_ARGUMENT, f"bad 'nodeId' {node_id!r}", member
                )
            address = ext.get("address", "")
            if address:
                host, colon, port = address.rpartition(":")
                if not host or not colon or not port.isdigit():
                    return self._reply(
                        cmd, Code.UNEXPECTED_ARGUMENT, f"'address' {address!r} is not host:port"
                    )
            index, conf = await member.change_membership(ConfigChange(kind, node_id, address))
        except MemberError as exc:
            return self._error_reply(cmd, exc, member)
        body = encode_metadata(
            {
                "index": index,
                "voters": list(conf.voters),
                "learners": list(conf.learners),
                "peers": {m: member.peers[m] for m in conf.members() if m in member.peers},
            }
        )
        return self._reply(cmd, Code.SUCCESS, None, member, body)

    def _on_unsupported(self, conn: RemotingConnection, cmd: RemotingCommand) -> RemotingCommand:
        return self._reply(cmd, Code.UNSUPPORTED, f"code {cmd.code} is not implemented")

    async def _on_user_define(
        self, conn: RemotingConnection, cmd: RemotingCommand
    ) -> RemotingCommand:
        member: Member | None = None
        try:
            member = self._member(cmd)
            sm = member.state_machine
            if not isinstance(sm, UserRequestHandler):
                return self._reply(
                    cmd,
                    Code.UNSUPPORTED,
                    f"the state machine of {member.group} takes no user requests",
                    member,
                )
            try:
                type_code = int(cmd.ext_fields.get("requestTypeCode", ""))
            except ValueError:
                return self._reply(
                    cmd, Code.UNEXPECTED_ARGUMENT, "missing 'requestTypeCode'", member
                )
            body = await sm.handle_user_request(member, type_code, cmd.body)
        except MemberError as exc:
            return self._error_reply(cmd, exc, member)
        except (BodyError, ValueError) as exc:
            return self._reply(cmd, Code.UNEXPECTED_ARGUMENT, str(exc), member)
        except TimeoutError:
            return self._reply(cmd, Code.TIMEOUT, "request timed out on the server", member)
        return self._reply(cmd, Code.SUCCESS, None, member, body)
