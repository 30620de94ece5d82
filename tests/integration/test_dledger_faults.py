"""DLedger groups of three real server processes under faults (DESIGN principle 6).

Every test keeps a ledger of what the cluster acknowledged (index -> body) and ends with
the log check: every acknowledged entry is at its acknowledged index on every replica,
and no index holds two different entries anywhere.
"""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import time
from pathlib import Path

import pytest

from ledgermq.dledger.client import DLedgerClient, DLedgerError
from ledgermq.dledger.protocol import RequestCode, decode_append_reply, encode_append_request
from ledgermq.dledger.store.entry_codec import EntryDecodeError, decode_entry
from ledgermq.testing.relay import RelayMesh
from tests.procs import ProcessGroup, ServerProcess, free_port

GROUP = "g0"
IDS = ("n0", "n1", "n2")


class Trio:
    """Three `ledgermq dledger server` processes of one group, each restartable."""

    def __init__(self, processes: ProcessGroup, tmp: Path, dial: dict[str, str] | None = None):
        self.processes = processes
        self.tmp = tmp
        self.ports = {i: free_port() for i in IDS}
        self.addrs = {i: f"127.0.0.1:{p}" for i, p in self.ports.items()}
        self.peers = ";".join(f"{i}-{a}" for i, a in self.addrs.items())
        # what each member dials to reach the others (a relay, for partition tests)
        self.dial = dial or {}
        self.procs: dict[str, ServerProcess] = {}
        self.starts = dict.fromkeys(IDS, 0)

    def peers_for(self, member: str) -> str:
        return self.dial.get(member, self.peers)

    async def start(self, member: str) -> None:
        """Starts the member and waits for it to listen, without blocking the loop (a
        restart happens while the test's writers keep appending)."""
        self.starts[member] += 1
        proc = self.processes.create(
            [
                "dledger",
                "server",
                "--group",
                GROUP,
                "--id",
                member,
                "--peers",
                self.peers_for(member),
                "--store",
                str(self.tmp / member),
            ],
            ready_text="listening on",
            log_name=f"{member}-{self.starts[member]}.log",
        )
        self.procs[member] = proc
        await asyncio.to_thread(proc.start)

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(m) for m in IDS))

    def kill(self, member: str) -> None:
        self.procs[member].kill()

    def signal(self, member: str, sig: int) -> None:
        proc = self.procs[member].proc
        assert proc is not None
        os.kill(proc.pid, sig)

    def data_files(self, member: str) -> list[str]:
        data = self.tmp / member / GROUP / f"dledger-{member}" / "data"
        return sorted(glob.glob(str(data / "*")))


async def until(predicate, timeout: float, what: str):
    """Polls an async or plain predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
        except (DLedgerError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def leader_of(client: DLedgerClient, members=IDS, exclude: str | None = None) -> str | None:
    """The member that says it leads, with the highest term among those asked."""
    best: tuple[int, str] | None = None
    for m in members:
        if m == exclude:
            continue
        try:
            meta = await client.metadata(member=m)
        except DLedgerError:
            continue
        if meta["role"] == "leader" and (best is None or meta["term"] > best[0]):
            best = (meta["term"], m)
    return best[1] if best else None


class Ledger:
    """What the cluster acknowledged; a second ack at a known index must agree."""

    def __init__(self) -> None:
        self.acked: dict[int, bytes] = {}

    def record(self, index: int, body: bytes) -> None:
        have = self.acked.setdefault(index, body)
        assert have == body, f"index {index} acknowledged twice: {have!r} and {body!r}"


async def writers(client: DLedgerClient, ledger: Ledger, stop: asyncio.Event, n: int, tag: str):
    async def one(w: int) -> None:
        i = 0
        while not stop.is_set():
            body = f"{tag}-{w}-{i}".encode()
            i += 1
            try:
                index = await client.append(body)
            except DLedgerError:
                await asyncio.sleep(0.01)
                continue
            ledger.record(index, body)

    return [asyncio.create_task(one(w)) for w in range(n)]


async def check_logs(client: DLedgerClient, ledger: Ledger, members=IDS) -> None:
    """Every replica applied up to the last ack and holds the same entries, and each
    acknowledged entry sits at its acknowledged index."""
    last = max(ledger.acked)
    for m in members:
        await until(lambda m=m: _applied(client, m, last), 30, f"{m} to apply up to index {last}")
    logs: dict[str, list[bytes]] = {}
    for m in members:
        entries: list[bytes] = []
        while len(entries) <= last:
            got = await client.get_entries(len(entries), 256, member=m)
            assert got, f"{m} returned no entries at {len(entries)}"
            for e in got:
                assert e.index == len(entries), f"{m} skipped to {e.index}"
                entries.append(e.data)
        logs[m] = entries[: last + 1]
    first = logs[members[0]]
    for m in members[1:]:
        diff = [i for i, (a, b) in enumerate(zip(first, logs[m], strict=True)) if a != b]
        assert not diff, f"{members[0]} and {m} disagree at indexes {diff[:5]}"
    lost = {i: b for i, b in ledger.acked.items() if first[i] != b}
    assert not lost, f"acknowledged entries not at their index: {list(lost.items())[:5]}"


async def _applied(client: DLedgerClient, member: str, index: int) -> bool:
    return (await client.metadata(member=member))["appliedIndex"] >= index


@pytest.fixture
async def trio(processes, tmp_path):
    t = Trio(processes, tmp_path)
    await t.start_all()
    client = DLedgerClient(GROUP, t.peers, timeout=10.0, request_timeout=1.0)
    try:
        await until(lambda: leader_of(client), 20, "a first leader")
        yield t, client
    finally:
        await client.close()


async def test_kill_leader_under_load_then_restart_it(trio):
    t, client = trio
    ledger = Ledger()
    stop = asyncio.Event()
    tasks = await writers(client, ledger, stop, 16, "a")
    try:
        await until(lambda: len(ledger.acked) >= 300, 30, "300 acknowledged appends")
        old = await until(lambda: leader_of(client), 10, "the leader")
        t.kill(old)
        killed_at = time.monotonic()
        before = len(ledger.acked)
        new = await until(lambda: leader_of(client, exclude=old), 20, "a new leader")
        assert new != old
        await until(lambda: len(ledger.acked) >= before + 300, 30, "appends after failover")
        failover = time.monotonic() - killed_at
        await t.start(old)  # the old leader rejoins as a follower and catches up
        await until(lambda: len(ledger.acked) >= before + 600, 30, "appends after restart")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert failover < 20
    await check_logs(client, ledger)


async def test_paused_leader_steps_down_and_its_unacked_entries_never_surface(trio):
    t, client = trio
    ledger = Ledger()
    for i in range(50):
        ledger.record(await client.append(f"before-{i}".encode()), f"before-{i}".encode())
    old = await until(lambda: leader_of(client), 10, "the leader")
    pinned = DLedgerClient(GROUP, t.peers, timeout=30.0, request_timeout=30.0)

    async def append_to_old(body: bytes) -> int:
        # pinned to the old leader: no redirect, so only its own answer counts
        request = encode_append_request([body])
        reply = await pinned.call(RequestCode.APPEND, body=request, member=old)
        return decode_append_reply(reply.body)[0]

    try:
        t.signal(old, signal.SIGSTOP)
        # sent to the frozen leader: they wait in its socket buffer
        bodies = [f"frozen-{i}".encode() for i in range(20)]
        pending = [asyncio.create_task(append_to_old(b)) for b in bodies]
        new = await until(lambda: leader_of(client, exclude=old), 20, "a leader among the rest")
        stop = asyncio.Event()
        tasks = await writers(client, ledger, stop, 8, "b")
        await until(lambda: len(ledger.acked) >= 250, 30, "appends to the new leader")
        t.signal(old, signal.SIGCONT)
        results = await asyncio.gather(*pending, return_exceptions=True)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        t.signal(old, signal.SIGCONT)
        await pinned.close()
    await until(lambda: _follows(client, old, new), 20, f"{old} to step down and follow {new}")
    for body, result in zip(bodies, results, strict=True):
        # Whatever the old leader appended in its stale term can never commit: each
        # answer is an error, and were one a success, the log check below would catch
        # an entry that is not really at its index.
        if isinstance(result, int):
            ledger.record(result, body)
        else:
            assert isinstance(result, DLedgerError), result
    assert not any(isinstance(r, int) for r in results), f"stale leader acked: {results}"
    await check_logs(client, ledger)


async def _follows(client: DLedgerClient, member: str, leader: str) -> bool:
    meta = await client.metadata(member=member)
    return meta["role"] == "follower" and meta["leaderId"] == leader


async def test_torn_tail_on_a_follower_is_cut_on_restart(trio):
    t, client = trio
    ledger = Ledger()
    for i in range(100):
        body = f"x-{i}".encode() * 20
        ledger.record(await client.append(body), body)
    leader = await until(lambda: leader_of(client), 10, "the leader")
    follower = next(m for m in IDS if m != leader)
    await until(lambda: _applied(client, follower, max(ledger.acked)), 20, "follower caught up")
    t.kill(follower)
    # A write torn by the crash: the head of a copy of the last entry, then garbage,
    # right after the last complete entry.
    path = t.data_files(follower)[-1]
    with open(path, "r+b") as f:
        data = f.read()
        pos, last_start = 0, None
        while True:
            try:
                _, end = decode_entry(data, pos)
            except EntryDecodeError:
                break
            last_start, pos = pos, end
        assert last_start is not None, "the follower stored no entries"
        f.seek(pos)
        f.write(data[last_start : last_start + 40] + b"\xa5" * 300)
    stop = asyncio.Event()
    tasks = await writers(client, ledger, stop, 8, "c")
    try:
        await until(lambda: len(ledger.acked) >= 300, 30, "appends while it is down")
        await t.start(follower)
        await until(lambda: len(ledger.acked) >= 500, 30, "appends after its restart")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    await check_logs(client, ledger)
    # the torn bytes were cut: a whole entry now continues the log where they were
    with open(path, "rb") as f:
        entry, _ = decode_entry(f.read(), pos)
    last_before = decode_entry(data, last_start)[0]
    assert entry.index == last_before.index + 1


@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "asymmetric"])
async def test_partitioned_leader_is_replaced_and_the_partition_heals_cleanly(
    processes, tmp_path, symmetric
):
    t = Trio(processes, tmp_path)
    mesh = RelayMesh({m: ("127.0.0.1", t.ports[m]) for m in IDS})
    await mesh.start()
    client = DLedgerClient(GROUP, t.peers, timeout=10.0, request_timeout=1.0)
    try:
        for m in IDS:  # members reach each other only through the relays
            t.dial[m] = ";".join(
                f"{j}-{host}:{port}" for j, (host, port) in mesh.addresses_for(m).items()
            )
        await t.start_all()
        old = await until(lambda: leader_of(client), 20, "a first leader")
        ledger = Ledger()
        stop = asyncio.Event()
        tasks = await writers(client, ledger, stop, 8, "p")
        try:
            await until(lambda: len(ledger.acked) >= 200, 30, "appends before the partition")
            # symmetric: nothing crosses; asymmetric: only what the leader sends is lost
            await mesh.isolate(old, symmetric=symmetric)
            rest = [m for m in IDS if m != old]
            new = await until(
                lambda: leader_of(client, members=rest), 20, "a leader in the majority"
            )
            before = len(ledger.acked)
            await until(lambda: len(ledger.acked) >= before + 200, 30, "majority appends")
            # CheckQuorum (symmetric) or the new term (asymmetric) ends the old leadership
            await until(lambda: _not_leading(client, old), 20, f"{old} to stop leading")
            await mesh.heal()
            await until(lambda: _follows(client, old, new), 20, f"{old} to follow {new}")
            before = len(ledger.acked)
            await until(lambda: len(ledger.acked) >= before + 200, 30, "appends after healing")
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        await check_logs(client, ledger)
    finally:
        await client.close()
        await mesh.stop()


async def _not_leading(client: DLedgerClient, member: str) -> bool:
    return (await client.metadata(member=member))["role"] != "leader"
