"""A DLedger broker group of three real broker processes under faults (DESIGN principle 6).

One NameServer process and three `ledgermq broker` processes with
enableDLegerCommitLog=true; the Python producer and consumer run in the test process.
Producers send at load while the master is killed (kill -9) or paused (SIGSTOP); afterwards
everything is consumed and the queue checker compares it with what was acknowledged:
nothing acknowledged is lost or moved, per-queue order follows acknowledgement order, and
only sends that errored may show up twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ledgermq.client.admin import AdminClient
from ledgermq.client.lite_pull_consumer import LitePullConsumer
from ledgermq.client.message import Message, SendStatus
from ledgermq.client.producer import Producer, build_send_header
from ledgermq.client.push_consumer import CONSUME_FROM_FIRST_OFFSET
from ledgermq.common.message import MessageExt, MessageQueue, parse_offset_msg_id
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from tests.procs import ProcessGroup, ServerProcess, free_port, free_port_pair, run_ledgermq

HOST = "127.0.0.1"
CLUSTER = "FaultCluster"
GROUP = "RaftFaults00"
IDS = ("n0", "n1", "n2")
TOPIC = "FaultTopic"
QUEUES = 4
LOOPS = 4


# --- the cluster --------------------------------------------------------------------------
class BrokerTrio:
    """A NameServer process and a DLedger group of three broker processes."""

    def __init__(self, processes: ProcessGroup, tmp: Path) -> None:
        self.processes = processes
        self.tmp = tmp
        ports: set[int] = set()

        def fresh(pick) -> int:
            for _ in range(50):
                p = pick()
                if not {p, p + 1} & ports:
                    ports.update({p, p + 1})
                    return p
            raise RuntimeError("no distinct free port")

        self.ns = f"{HOST}:{fresh(free_port)}"
        self.port = {i: fresh(free_port_pair) for i in IDS}  # remoting (and +1 for HA)
        self.addr = {i: f"{HOST}:{p}" for i, p in self.port.items()}
        self.raft_port = {i: fresh(free_port) for i in IDS}
        self.peers = ";".join(f"{i}-{HOST}:{self.raft_port[i]}" for i in IDS)
        self.procs: dict[str, ServerProcess] = {}
        self.starts = dict.fromkeys(IDS, 0)
        self.namesrv: ServerProcess | None = None

    @staticmethod
    def slave_id(member: str) -> int:
        return int(member[1:]) + 1

    def member_at(self, addr: str) -> str:
        return next(i for i, a in self.addr.items() if a == addr)

    def _write(self, name: str, lines: list[str]) -> str:
        path = self.tmp / name
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def broker_conf(self, member: str) -> str:
        return self._write(
            f"broker-{member}.conf",
            [
                f"brokerClusterName={CLUSTER}",
                f"brokerName={GROUP}",
                f"listenPort={self.port[member]}",
                f"namesrvAddr={self.ns}",
                f"storePathRootDir={self.tmp / member}",
                f"brokerIP1={HOST}",
                "mappedFileSizeCommitLog=1048576",
                "enableDLegerCommitLog=true",
                f"dLegerGroup={GROUP}",
                f"dLegerPeers={self.peers}",
                f"dLegerSelfId={member}",
            ],
        )

    def start_namesrv(self) -> None:
        conf = self._write(
            "namesrv.properties",
            [f"listenPort={self.ns.rsplit(':', 1)[1]}", f"kvConfigPath={self.tmp / 'kv.json'}"],
        )
        self.namesrv = self.processes.create(
            ["namesrv", "-c", conf], ready_text="boot success", log_name="namesrv.log"
        )
        self.namesrv.start()

    async def start(self, member: str) -> ServerProcess:
        """Starts the broker and waits for its boot line without blocking the loop (the
        test's producers keep sending meanwhile)."""
        self.starts[member] += 1
        proc = self.processes.create(
            ["broker", "-c", self.broker_conf(member)],
            ready_text="boot success",
            log_name=f"broker-{member}-{self.starts[member]}.log",
        )
        self.procs[member] = proc
        await asyncio.to_thread(proc.start)
        return proc

    async def start_all(self) -> None:
        self.start_namesrv()
        await asyncio.gather(*(self.start(i) for i in IDS))

    def pid(self, member: str) -> int:
        proc = self.procs[member].proc
        assert proc is not None
        return proc.pid

    def kill(self, member: str) -> None:
        self.procs[member].kill()

    def pause(self, member: str) -> None:
        os.kill(self.pid(member), signal.SIGSTOP)

    def resume(self, member: str) -> None:
        os.kill(self.pid(member), signal.SIGCONT)

    def logs(self, *members: str) -> str:
        out = []
        for m in members or IDS:
            if m in self.procs:
                tail = self.procs[m].output().splitlines()[-25:]
                out.append(f"--- broker {m} (last lines) ---\n" + "\n".join(tail))
        return "\n".join(out)


class Cluster:
    """The test process' view of the group: NameServer roles, topic, queue max offsets."""

    def __init__(self, trio: BrokerTrio) -> None:
        self.trio = trio
        self.admin = AdminClient(trio.ns, timeout=2.0)
        self.remoting = RemotingClient()

    async def start(self) -> None:
        await self.admin.start()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.admin.shutdown()
        with contextlib.suppress(Exception):
            await self.remoting.close()

    async def roles(self) -> dict[int, str]:
        """brokerId -> address, as the NameServer has them for the group."""
        try:
            info = await self.admin.cluster_info()
        except Exception:
            return {}
        data = info.broker_addr_table.get(GROUP)
        return dict(data.broker_addrs) if data is not None else {}

    async def until(self, cond, timeout: float, what: str, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; NameServer roles "
                    f"{await self.roles()}\n{self.trio.logs()}"
                )
            await asyncio.sleep(interval)

    async def master(self, timeout: float = 15.0, exclude: str | None = None) -> str:
        """The member the NameServer lists as brokerId 0 (not `exclude`)."""

        async def find() -> str | None:
            addr = (await self.roles()).get(0)
            if addr is None:
                return None
            member = self.trio.member_at(addr)
            return None if member == exclude else member

        what = "a master" + (f" other than {exclude}" if exclude else "")
        return await self.until(find, timeout, what)

    async def create_topic(self) -> None:
        # every member learns the topic, so that whoever becomes master routes it
        for addr in self.trio.addr.values():
            await self.admin.create_topic(
                TOPIC, broker_addr=addr, read_queue_nums=QUEUES, write_queue_nums=QUEUES
            )

        async def routed() -> bool:
            try:
                route = await self.admin.topic_route(TOPIC)
            except Exception:
                return False
            return any(0 in b.broker_addrs for b in route.broker_datas)

        await self.until(routed, 15, "the topic's route with a master")

    async def send_directly(self, member: str, body: bytes) -> RemotingCommand:
        """One SEND_MESSAGE_V2 to this member, whatever its role."""
        header = build_send_header(
            group="faults-raw",
            mq=MessageQueue(TOPIC, GROUP, 0),
            sys_flag=0,
            born_timestamp=int(time.time() * 1000),
            flag=0,
            properties={},
        )
        cmd = RemotingCommand(code=RequestCode.SEND_MESSAGE_V2, ext_fields=header, body=body)
        return await self.remoting.invoke(self.trio.addr[member], cmd, timeout=3)

    async def max_offsets(self, member: str) -> dict[int, int] | None:
        out = {}
        for qid in range(QUEUES):
            cmd = RemotingCommand(
                code=RequestCode.GET_MAX_OFFSET,
                ext_fields={"topic": TOPIC, "queueId": str(qid)},
            )
            try:
                reply = await self.remoting.invoke(self.trio.addr[member], cmd, timeout=2)
            except Exception:
                return None
            if reply.code != ResponseCode.SUCCESS:
                return None
            out[qid] = int(reply.ext_fields["offset"])
        return out


# --- the queue checker --------------------------------------------------------------------
@dataclass(frozen=True)
class Ack:
    loop: int
    seq: int
    body: bytes
    queue_id: int
    queue_offset: int
    addr: str  # the broker that acknowledged (from the offsetMsgId's store host)
    at: float  # time.monotonic() when the acknowledgement arrived


@dataclass
class QueueChecker:
    """What the producers were told, checked against what a consumer reads back."""

    acks: list[Ack] = field(default_factory=list)  # in acknowledgement order
    attempted: set[bytes] = field(default_factory=set)
    errored: dict[bytes, list[str]] = field(default_factory=lambda: defaultdict(list))
    last_errors: list[str] = field(default_factory=list)  # the latest few, for messages

    def attempt(self, body: bytes) -> None:
        self.attempted.add(body)

    def acked(self, loop: int, seq: int, body: bytes, result) -> Ack:
        ip, port, _ = parse_offset_msg_id(result.offset_msg_id)
        ack = Ack(
            loop,
            seq,
            body,
            result.message_queue.queue_id,
            result.queue_offset,
            f"{ip}:{port}",
            time.monotonic(),
        )
        self.acks.append(ack)
        return ack

    def failed(self, body: bytes, why: str) -> None:
        self.errored[body].append(why)
        self.last_errors = [*self.last_errors[-7:], f"{body.decode()}: {why}"]

    def acks_after(self, t: float, *, not_from: str | None = None) -> list[Ack]:
        return [a for a in self.acks if a.at > t and a.addr != not_from]

    def check(self, consumed: list[MessageExt]) -> None:
        problems: list[str] = []

        # unexpected: something nobody sent
        unexpected = [m.body for m in consumed if m.body not in self.attempted]
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected message(s), e.g. {unexpected[:3]}")

        # one message per queue offset
        at: dict[tuple[int, int], bytes] = {}
        for m in consumed:
            key = (m.queue_id, m.queue_offset)
            if key in at and at[key] != m.body:
                problems.append(f"queue {key} read as both {at[key]!r} and {m.body!r}")
            at[key] = m.body

        # lost or moved: every acknowledged send is at the queue offset it was told
        acked_bodies = {a.body for a in self.acks}
        consumed_bodies = {m.body for m in consumed}
        missing = [a for a in self.acks if a.body not in consumed_bodies]
        if missing:
            problems.append(
                f"{len(missing)} acknowledged message(s) lost, e.g. "
                + ", ".join(
                    f"{a.body!r} (q{a.queue_id}@{a.queue_offset} by {a.addr})" for a in missing[:5]
                )
            )
        moved = [
            (a, at.get((a.queue_id, a.queue_offset)))
            for a in self.acks
            if at.get((a.queue_id, a.queue_offset)) not in (a.body, None)
        ]
        if moved:
            problems.append(
                f"{len(moved)} acknowledged queue offset(s) hold another message, e.g. "
                + ", ".join(
                    f"q{a.queue_id}@{a.queue_offset} acked for {a.body!r} (by {a.addr}) "
                    f"holds {got!r}"
                    for a, got in moved[:5]
                )
            )
        twice = Counter(a.body for a in self.acks)
        if any(n > 1 for n in twice.values()):
            problems.append(
                f"a body was acknowledged twice: {[b for b, n in twice.items() if n > 1][:3]}"
            )

        # per-queue order: a loop's acknowledged sends into one queue have increasing offsets
        last: dict[tuple[int, int], Ack] = {}
        for a in self.acks:
            prev = last.get((a.loop, a.queue_id))
            if prev is not None and a.queue_offset <= prev.queue_offset:
                problems.append(
                    f"loop {a.loop} queue {a.queue_id}: seq {a.seq} acked at offset "
                    f"{a.queue_offset} after seq {prev.seq} at {prev.queue_offset}"
                )
            last[(a.loop, a.queue_id)] = a
        # and a loop's sends were acknowledged in sequence order (one at a time per loop)
        for loop in {a.loop for a in self.acks}:
            seqs = [a.seq for a in self.acks if a.loop == loop]
            if seqs != sorted(seqs):
                problems.append(f"loop {loop} acknowledgements out of sequence order")

        # duplicates only for bodies whose send errored or timed out at least once
        counts = Counter(m.body for m in consumed)
        bad_dups = [b for b, n in counts.items() if n > 1 and b not in self.errored]
        if bad_dups:
            problems.append(
                f"{len(bad_dups)} duplicated message(s) whose send never errored, e.g. "
                f"{bad_dups[:3]}"
            )
        assert not problems, (
            f"queue check failed ({len(self.acks)} acked, {len(self.errored)} errored, "
            f"{len(consumed)} consumed, {len(acked_bodies)} distinct acked):\n  "
            + "\n  ".join(problems[:20])
        )


# --- load ---------------------------------------------------------------------------------
class Load:
    """LOOPS concurrent send loops; each resends a body until it is acknowledged.

    Loop k sends with producers[k % len(producers)]: one producer per loop (own
    connection) keeps each connection to one request in flight; a single shared producer
    pipelines the loops' sends on one connection (see the no-majority test)."""

    def __init__(self, producers: list[Producer], checker: QueueChecker) -> None:
        self.producers = producers
        self.checker = checker
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.give_up_after = 20.0
        self.next_seq = [0] * LOOPS  # a restarted loop goes on with its sequence
        self.run = uuid.uuid4().hex[:8]

    def start(self) -> None:
        self.stop.clear()
        self.tasks = [asyncio.create_task(self._loop(k)) for k in range(LOOPS)]

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)

    async def _loop(self, loop: int) -> None:
        while not self.stop.is_set():
            seq = self.next_seq[loop]
            self.next_seq[loop] += 1
            body = f"L{loop}-S{seq:06d}-{self.run}".encode()
            started = time.monotonic()
            self.checker.attempt(body)
            while True:
                try:
                    r = await self.producers[loop % len(self.producers)].send(Message(TOPIC, body))
                except Exception as exc:  # timeouts, refused connections, broker errors
                    self.checker.failed(body, f"{type(exc).__name__}: {exc}")
                else:
                    if r.status is SendStatus.SEND_OK:
                        self.checker.acked(loop, seq, body, r)
                        break
                    self.checker.failed(body, str(r.status))
                if time.monotonic() - started > self.give_up_after:
                    break  # never acknowledged: allowed to be present or not
                await asyncio.sleep(0.02)


async def consume_all(cluster: Cluster, group: str, timeout: float = 30.0) -> list[MessageExt]:
    """Reads every queue from its first offset up to the master's max offset."""
    master = await cluster.master()
    want = await cluster.until(lambda: cluster.max_offsets(master), 10, "the master's max offsets")
    consumer = LitePullConsumer(
        group, cluster.trio.ns, consume_from_where=CONSUME_FROM_FIRST_OFFSET, auto_commit=False
    )
    consumer.subscribe(TOPIC, "*")
    await consumer.start()
    got: list[MessageExt] = []
    seen: dict[int, set[int]] = defaultdict(set)
    deadline = time.monotonic() + timeout
    try:
        while any(len(seen[q]) < n for q, n in want.items()):
            assert time.monotonic() < deadline, (
                f"consumed {{q: n}} {dict((q, len(s)) for q, s in seen.items())} of "
                f"{want} within {timeout}s"
            )
            for m in await consumer.poll(1.0):
                got.append(m)
                seen[m.queue_id].add(m.queue_offset)
    finally:
        await consumer.shutdown()
    for q, offsets in seen.items():
        top = max(offsets)
        gaps = sorted(set(range(top + 1)) - offsets)
        assert not gaps, f"queue {q}: offsets {gaps[:10]} of 0..{top} were never read"
    return got


@pytest.fixture
async def cluster(processes, tmp_path):
    trio = BrokerTrio(processes, tmp_path)
    await trio.start_all()
    c = Cluster(trio)
    await c.start()
    try:
        await c.master(timeout=20)
        await c.create_topic()
        yield c
    finally:
        await c.close()


async def start_producers(ns: str, tag: str) -> list[Producer]:
    """One producer (own client instance, own connections) per send loop."""
    ps = [
        Producer("faults-pg", ns, retry_times=2, send_timeout=3.0, instance_name=f"{tag}{k}")
        for k in range(LOOPS)
    ]
    for p in ps:
        await p.start()
    return ps


async def stop_producers(ps: list[Producer]) -> None:
    for p in ps:
        with contextlib.suppress(Exception):
            await p.shutdown()


@pytest.fixture
async def producers(cluster):
    ps = await start_producers(cluster.trio.ns, "p")
    try:
        yield ps
    finally:
        await stop_producers(ps)


async def load_until(cluster: Cluster, checker: QueueChecker, n: int, what: str) -> None:
    target = len(checker.acks) + n
    try:
        await cluster.until(lambda: len(checker.acks) >= target, 20, f"{n} more acks {what}")
    except AssertionError as exc:
        errors = "\n  ".join(checker.last_errors)
        raise AssertionError(f"{exc}\nlatest send errors:\n  {errors}") from None


# --- tests --------------------------------------------------------------------------------
@pytest.mark.timeout(60)
async def test_kill_master_under_load_fails_over_fast_and_loses_nothing(cluster, producers):
    trio = cluster.trio
    checker = QueueChecker()
    load = Load(producers, checker)
    old = await cluster.master()
    old_addr = trio.addr[old]
    load.start()
    await load_until(cluster, checker, 400, "before the kill")

    killed_at = time.monotonic()
    trio.kill(old)
    first = await cluster.until(
        lambda: next(iter(checker.acks_after(killed_at, not_from=old_addr)), None),
        10,
        "a send acknowledged by another broker",
        interval=0.01,
    )
    failover = first.at - killed_at
    new = await cluster.master(exclude=old)
    assert trio.addr[new] == first.addr, (new, first)
    await load_until(cluster, checker, 400, "after the failover")
    await load.finish()

    checker.check(await consume_all(cluster, "faults-cg-kill"))
    assert failover < 2.0, (
        f"the first SEND_OK from the new master came {failover:.2f}s after kill -9 of {old}"
        f"\n{trio.logs()}"
    )


@pytest.mark.timeout(60)
async def test_paused_master_steps_down_and_acks_nothing_uncommitted(cluster, producers):
    trio = cluster.trio
    checker = QueueChecker()
    # one shared producer: the loops' sends are pipelined on one connection
    load = Load(producers[:1], checker)
    old = await cluster.master()
    old_addr = trio.addr[old]
    load.start()
    await load_until(cluster, checker, 400, "before the pause")

    paused_at = time.monotonic()
    trio.pause(old)
    try:
        new = await cluster.master(timeout=10, exclude=old)
        # stay stopped well past the election timeout
        await asyncio.sleep(max(0.0, paused_at + 2.0 - time.monotonic()))
    finally:
        trio.resume(old)
    resumed_at = time.monotonic()

    # the old master steps down: it registers as a slave and refuses sends
    await cluster.until(
        lambda: _roles_are(cluster, {0: trio.addr[new], trio.slave_id(old): old_addr}),
        10,
        f"{old} to re-register as slave {trio.slave_id(old)} beside master {new}",
    )
    assert "is a slave" in trio.procs[old].output(), trio.logs(old)
    probe = f"probe-{uuid.uuid4().hex[:8]}".encode()
    checker.attempt(probe)
    reply = await cluster.send_directly(old, probe)
    assert reply.code == ResponseCode.SERVICE_NOT_AVAILABLE, (reply.code, reply.remark)
    await load_until(cluster, checker, 400, "after the resume")
    await load.finish()

    checker.check(await consume_all(cluster, "faults-cg-pause"))
    # whatever the old master answered after SIGCONT was checked above; later on only
    # the new master acknowledges
    stale = checker.acks_after(resumed_at + 1.0, not_from=trio.addr[new])
    assert not stale, f"{len(stale)} sends acknowledged by {old} after it stepped down"


@pytest.mark.timeout(60)
async def test_master_without_a_majority_acknowledges_no_pipelined_send(cluster, producers):
    """With both followers stopped nothing can commit, so SEND_OK for any send is a
    promise the group cannot keep. The sends are pipelined on one connection, so the
    broker reads them together and stores them as one group (the put_group path, which
    once dropped the wait for the majority and acknowledged at once)."""
    trio = cluster.trio
    checker = QueueChecker()
    load = Load(producers, checker)
    master = await cluster.master()
    followers = [m for m in IDS if m != master]
    load.start()
    await load_until(cluster, checker, 100, "before the followers stop")
    await load.finish()

    for m in followers:
        trio.pause(m)
    try:
        bodies = [f"P{k}-S000000-{uuid.uuid4().hex[:8]}".encode() for k in range(8)]
        for body in bodies:
            checker.attempt(body)
        tasks = [
            producers[0].send_async(
                Message(TOPIC, body), queue=MessageQueue(TOPIC, GROUP, k % QUEUES), timeout=5.0
            )
            for k, body in enumerate(bodies)
        ]
        replies = await asyncio.gather(*tasks, return_exceptions=True)
        lies = []
        for k, (body, r) in enumerate(zip(bodies, replies, strict=True)):
            if isinstance(r, BaseException):
                checker.failed(body, f"{type(r).__name__}: {r}")
            elif r.status is SendStatus.SEND_OK:
                lies.append(checker.acked(100 + k, 0, body, r))
            else:
                checker.failed(body, str(r.status))
    finally:
        for m in followers:
            trio.resume(m)

    await cluster.master()
    load.start()
    await load_until(cluster, checker, 100, "after the followers resumed")
    await load.finish()
    try:
        checker.check(await consume_all(cluster, "faults-cg-minority"))
    finally:
        assert not lies, (
            f"{len(lies)} of {len(bodies)} pipelined sends were acknowledged SEND_OK by "
            f"{master} while both followers were stopped (nothing could commit): "
            + ", ".join(f"{a.body!r} q{a.queue_id}@{a.queue_offset}" for a in lies)
        )


async def _roles_are(cluster: Cluster, want: dict[int, str]) -> bool:
    roles = await cluster.roles()
    return all(roles.get(k) == v for k, v in want.items())


@pytest.mark.timeout(90)
async def test_restarted_master_rejoins_as_slave_catches_up_and_can_lead_again(cluster, producers):
    trio = cluster.trio
    checker = QueueChecker()
    load = Load(producers, checker)
    first = await cluster.master()
    load.start()
    await load_until(cluster, checker, 200, "before the first kill")

    trio.kill(first)
    second = await cluster.master(exclude=first)
    # the same producers follow every master change (see the default-topic test below)
    await load_until(cluster, checker, 200, "on the second master")

    # the old master comes back (while the load goes on) as a slave ...
    back = await trio.start(first)
    await cluster.until(
        lambda: _roles_are(cluster, {0: trio.addr[second], trio.slave_id(first): trio.addr[first]}),
        15,
        f"restarted {first} to register as slave {trio.slave_id(first)}",
    )
    assert "is the master" not in back.output(), trio.logs(first)
    await load_until(cluster, checker, 200, "with the old master back")
    await load.finish()

    # ... whose ConsumeQueues catch up with the master's
    want = await cluster.max_offsets(second)
    assert want is not None
    assert sum(want.values()) >= len(checker.acks), (
        f"master {second} holds {sum(want.values())} messages {want}, but "
        f"{len(checker.acks)} sends were acknowledged"
    )
    await cluster.until(
        lambda: _same(cluster.max_offsets(first), want),
        15,
        f"restarted {first}'s ConsumeQueues to reach {want}",
    )

    # the second master dies too; the restarted one can become master again
    load.start()
    await load_until(cluster, checker, 100, "before the second kill")
    trio.kill(second)
    third = await cluster.master(exclude=second)
    if third != first:
        r = await asyncio.to_thread(
            run_ledgermq,
            "dledger",
            "transfer",
            "--peers",
            trio.peers,
            "--group",
            GROUP,
            "--to",
            first,
            timeout=30,
        )
        assert r.returncode == 0, (r.stdout, r.stderr)
        await cluster.until(
            lambda: _roles_are(cluster, {0: trio.addr[first]}),
            10,
            f"{first} to be master after the leadership transfer",
        )
    await load_until(cluster, checker, 200, f"with {first} master again")
    await load.finish()
    assert any(a.addr == trio.addr[first] for a in checker.acks), "the old master acked nothing"
    assert "is the master" in back.output(), trio.logs(first)
    await stop_producers(load.producers)

    checker.check(await consume_all(cluster, "faults-cg-restart"))


async def _same(offsets, want: dict[int, int]) -> bool:
    return await offsets == want


@pytest.mark.timeout(60)
async def test_producer_follows_the_new_master_after_a_default_topic_lookup(cluster):
    """During a failover the topic's route has no master for a moment and the producer
    falls back to the TBW102 route; the same happens for any not-yet-created topic. After
    the next master change that cached TBW102 route must not shadow the topic's route."""
    trio = cluster.trio
    producer = Producer("faults-tbw", trio.ns, retry_times=2, send_timeout=3.0)
    await producer.start()
    try:
        old = await cluster.master()
        r = await producer.send(Message(TOPIC, b"before"))
        assert r.status is SendStatus.SEND_OK
        # a topic without a route: the producer looks up TBW102 (the broker auto-creates)
        with contextlib.suppress(Exception):
            await producer.send(Message(f"Auto{uuid.uuid4().hex[:6]}", b"auto"))

        trio.kill(old)
        new = await cluster.master(exclude=old)
        deadline = time.monotonic() + 10
        errors: list[str] = []
        while True:
            try:
                r = await producer.send(Message(TOPIC, b"after"))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            else:
                if r.status is SendStatus.SEND_OK:
                    break
            assert time.monotonic() < deadline, (
                f"no SEND_OK within 10s although the NameServer routes {TOPIC} to the new "
                f"master {new} ({trio.addr[new]}); killed {old} ({trio.addr[old]}); "
                f"latest errors: {errors[-3:]}"
            )
            await asyncio.sleep(0.1)
        ip, port, _ = parse_offset_msg_id(r.offset_msg_id)
        assert f"{ip}:{port}" == trio.addr[new]
    finally:
        with contextlib.suppress(Exception):
            await producer.shutdown()
