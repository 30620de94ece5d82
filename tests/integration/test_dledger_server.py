"""DLedger groups on real loopback sockets and real files, three members in one process."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import replace

import pytest

from ledgermq.dledger.client import COALESCE_MAX_COUNT, DLedgerClient, DLedgerError
from ledgermq.dledger.kv import KVStateMachine
from ledgermq.dledger.member import MemberConfig, MemberError
from ledgermq.dledger.protocol import Code, RequestCode, encode_append_request
from ledgermq.dledger.server import DLedgerServer
from ledgermq.remoting.codec import RemotingCommand

pytestmark = pytest.mark.timeout(60)

GROUP = "g0"
IDS = ["n0", "n1", "n2"]
FAST = MemberConfig(
    tick_ms=10,
    election_ticks=15,
    heartbeat_ticks=3,
    data_file_size=1 << 20,
    index_file_size=32 * 4096,
)


async def wait_for(predicate, timeout: float = 5.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


class Cluster:
    def __init__(self, tmp_path, state_machine=None, config: MemberConfig = FAST) -> None:
        self.tmp_path = tmp_path
        self.config = config
        self.make_sm = state_machine
        self.servers: dict[str, DLedgerServer] = {}
        self.peers: dict[str, str] = {}

    async def start(self) -> Cluster:
        for i in IDS:
            self.servers[i] = await DLedgerServer(
                str(self.tmp_path / i), host="127.0.0.1", config=self.config
            ).start()
            self.peers[i] = f"127.0.0.1:{self.servers[i].port}"
        for n, i in enumerate(IDS):
            await self._add(i, n)
        return self

    async def _add(self, i: str, seed: int) -> None:
        sm = self.make_sm() if self.make_sm else None
        await self.servers[i].add_group(
            GROUP, i, self.peers, state_machine=sm, rng=random.Random(seed)
        )

    def member(self, i: str):
        return self.servers[i].members[GROUP]

    def live(self) -> list[str]:
        return [i for i in self.servers if GROUP in self.servers[i].members]

    async def leader(self, timeout: float = 5.0, exclude: str | None = None) -> str:
        def find():
            leaders = [i for i in self.live() if i != exclude and self.member(i).is_leader]
            return leaders[0] if len(leaders) == 1 else None

        return await wait_for(find, timeout, "a single leader")

    async def stop_server(self, i: str) -> None:
        await self.servers[i].stop()

    async def restart_server(self, i: str) -> None:
        port = int(self.peers[i].rsplit(":", 1)[1])
        server = DLedgerServer(
            str(self.tmp_path / i), host="127.0.0.1", port=port, config=self.config
        )
        self.servers[i] = await server.start()
        await self._add(i, 99)

    async def stop(self) -> None:
        for i in list(self.servers):
            await self.servers[i].stop()

    def client(self, **kw) -> DLedgerClient:
        return DLedgerClient(GROUP, dict(self.peers), **kw)


@pytest.fixture
async def cluster(tmp_path):
    c = await Cluster(tmp_path).start()
    try:
        yield c
    finally:
        await c.stop()


@pytest.fixture
async def kv_cluster(tmp_path):
    c = await Cluster(tmp_path, KVStateMachine).start()
    try:
        yield c
    finally:
        await c.stop()


async def test_elect_append_get_metadata(cluster):
    leader = await cluster.leader()
    async with cluster.client() as client:
        index = await client.append(b"hello")
        assert await client.get(index) == b"hello"
        meta = await client.metadata()
        assert meta["group"] == GROUP
        assert meta["leaderId"] == leader
        assert meta["term"] >= 1
        assert set(meta["peers"]) == set(IDS)
        assert meta["commitIndex"] >= index
        # index 0 is the first leader's no-op
        assert (await client.get_entries(0))[0].is_noop
        batch = await client.append_batch([b"a", b"b", b"c"])
        assert batch == [index + 1, index + 2, index + 3]
        for i, body in zip(batch, [b"a", b"b", b"c"], strict=True):
            assert await client.get(i) == body


async def test_append_via_follower_is_redirected(cluster):
    leader = await cluster.leader()
    follower = next(i for i in IDS if i != leader)
    async with cluster.client() as client:
        client.leader_id = follower  # start at the wrong member
        index = await client.append(b"redirected")
        assert client.leader_id == leader
        assert await client.get(index) == b"redirected"
        with pytest.raises(DLedgerError) as err:
            await client.call(RequestCode.APPEND, body=b"\0\0\0\1\0\0\0\1x", member=follower)
        assert err.value.code == Code.NOT_LEADER
        # the raw reply names the leader and where it listens
        cmd = RemotingCommand(
            code=RequestCode.APPEND,
            ext_fields={"group": GROUP},
            body=encode_append_request([b"y"]),
        )
        reply = await client._remoting.invoke(cluster.peers[follower], cmd, 3.0)
        assert reply.code == Code.NOT_LEADER
        assert reply.ext_fields["leaderId"] == leader
        assert reply.ext_fields["leaderAddr"] == cluster.peers[leader]
        assert "not the leader" in reply.remark
        # a malformed body is refused with a reason
        cmd = RemotingCommand(
            code=RequestCode.APPEND, ext_fields={"group": GROUP}, body=b"\0\0\0\2\0"
        )
        reply = await client._remoting.invoke(cluster.peers[leader], cmd, 3.0)
        assert reply.code == Code.UNEXPECTED_ARGUMENT and "cut off" in reply.remark


async def test_many_appends_in_flight(cluster):
    await cluster.leader()
    async with cluster.client() as client:
        bodies = [f"m{i}".encode() for i in range(300)]
        indexes = await asyncio.gather(*(client.append(b) for b in bodies))
        assert len(set(indexes)) == len(indexes)
        order = sorted(range(len(bodies)), key=lambda k: indexes[k])
        # all distinct; each readable at its index
        for k in order[::7]:
            assert await client.get(indexes[k]) == bodies[k]
        # every member holds the same entries
        top = max(indexes)
        await wait_for(lambda: all(cluster.member(i).applied - 1 >= top for i in IDS))
        for i in IDS:
            got = await client.get_entries(top - 5, 6, member=i)
            assert [e.index for e in got] == list(range(top - 5, top + 1))


async def test_appends_made_together_share_one_request(cluster):
    leader = await cluster.leader()
    member = cluster.member(leader)
    seen: list[int] = []  # entries per APPEND request the leader got
    submit = member.submit_many

    def spy(batches):
        seen.extend(len(b) for b in batches)
        return submit(batches)

    member.submit_many = spy
    async with cluster.client() as client:
        await client.metadata()  # learn the leader
        bodies = [b"c%d" % k for k in range(1100)]
        indexes = await asyncio.gather(*(client.append(b) for b in bodies))
        # one loop iteration's appends: one request, cut at COALESCE_MAX_COUNT; each
        # caller gets its own index, in call order, and nothing was sent twice
        assert seen == [COALESCE_MAX_COUNT, 1100 - COALESCE_MAX_COUNT]
        assert indexes == list(range(indexes[0], indexes[0] + 1100))
        for k in (0, 1023, 1024, 1099):
            assert await client.get(indexes[k]) == bodies[k]
    seen.clear()
    async with cluster.client(coalesce=False) as client:
        await client.metadata()
        indexes = await asyncio.gather(*(client.append(b"n%d" % k) for k in range(20)))
        assert seen == [1] * 20 and len(set(indexes)) == 20


async def test_unknown_group_and_member(cluster):
    await cluster.leader()
    async with DLedgerClient("nope", dict(cluster.peers)) as client:
        with pytest.raises(DLedgerError) as err:
            await client.append(b"x")
        assert err.value.code == Code.UNKNOWN_GROUP
        assert "nope" in err.value.message
    async with cluster.client() as client:
        wrong = {"n0": cluster.peers["n1"]}
        async with DLedgerClient(GROUP, wrong) as bad:
            with pytest.raises(DLedgerError) as err:
                await bad.metadata(member="n0")
            assert err.value.code == Code.UNKNOWN_MEMBER
        with pytest.raises(DLedgerError) as err:
            await client.get(10_000)
        assert err.value.code == Code.INDEX_OUT_OF_RANGE


async def test_failover_and_catch_up(cluster):
    old = await cluster.leader()
    acked: dict[int, bytes] = {}
    async with cluster.client() as client:
        for k in range(20):
            body = f"before-{k}".encode()
            acked[await client.append(body)] = body
        # writers keep appending while the leader goes away; each ack is a promise
        stop = asyncio.Event()
        errors: list[int] = []

        async def writer(w: int) -> None:
            k = 0
            while not stop.is_set():
                body = f"w{w}-{k}".encode()
                k += 1
                try:
                    index = await client.append(body)
                except DLedgerError as exc:
                    errors.append(exc.code)
                    continue
                assert index not in acked, f"index {index} acknowledged twice"
                acked[index] = body

        writers = [asyncio.create_task(writer(w)) for w in range(8)]
        await wait_for(lambda: len(acked) > 60, 5.0, "writers under way")
        await cluster.stop_server(old)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        new = await cluster.leader(exclude=old)
        assert new != old
        body = b"after-failover"
        index = await client.append(body)
        assert loop.time() - t0 < 2.0
        acked[index] = body
        stop.set()
        await asyncio.gather(*writers)
        # only "outcome unknown" errors while the leader went away
        assert set(errors) <= {Code.TERM_CHANGED, Code.NETWORK_ERROR, Code.TIMEOUT}, errors
        for k in range(20):
            body = f"after-{k}".encode()
            acked[await client.append(body)] = body
        survivors = [i for i in IDS if i != old]
        top = max(acked)
        await wait_for(lambda: all(cluster.member(i).applied - 1 >= top for i in survivors))
        for i in survivors:
            for idx, body in acked.items():
                assert await client.get(idx, member=i) == body
        # the old leader comes back, catches up and holds the same log
        await cluster.restart_server(old)
        await wait_for(lambda: cluster.member(old).applied - 1 >= top, 5.0, "catch up")
        for idx, body in acked.items():
            assert await client.get(idx, member=old) == body
        logs = []
        for i in IDS:
            entries = []
            for start in range(0, top + 1, 64):
                got = await client.get_entries(start, 64, member=i)
                entries += [(e.index, e.term, e.data) for e in got]
            logs.append(entries[: top + 1])
        assert logs[0] == logs[1] == logs[2]


async def test_leadership_transfer(cluster):
    leader = await cluster.leader()
    target = next(i for i in IDS if i != leader)
    async with cluster.client() as client:
        await client.append(b"x")
        with pytest.raises(DLedgerError) as err:
            await client.transfer_leadership("n9")
        assert err.value.code == Code.UNKNOWN_MEMBER
        meta = await client.metadata(member=target)
        assert meta["role"] == "follower" and meta["leaderId"] == leader
        await client.transfer_leadership(target)
        assert await cluster.leader() == target
        index = await client.append(b"after-transfer")
        assert client.leader_id == target
        assert await client.get(index) == b"after-transfer"


async def test_kv_put_get_cas(kv_cluster):
    leader = await kv_cluster.leader()
    async with kv_cluster.client() as client:
        r = await client.put(b"k", b"v1")
        assert r.ok and not r.found
        assert await client.kv_get(b"k") == b"v1"
        assert await client.kv_get(b"missing") is None
        r = await client.cas(b"k", b"wrong", b"v2")
        assert not r.ok and r.value == b"v1"
        r = await client.cas(b"k", b"v1", b"v2")
        assert r.ok and r.value == b"v2"
        r = await client.cas(b"new", None, b"n1")
        assert r.ok
        r = await client.cas(b"new", None, b"n2")
        assert not r.ok and r.value == b"n1"
        # linearizable: a read right after a write sees it, also after a leader change
        target = next(i for i in IDS if i != leader)
        await client.transfer_leadership(target)
        await client.put(b"k", b"v3")
        assert await client.kv_get(b"k") == b"v3"
        r = await client.delete(b"k")
        assert r.found and r.value == b"v3"
        assert await client.kv_get(b"k") is None
        # every replica applied the same map
        await wait_for(
            lambda: (
                len({repr(sorted(kv_cluster.member(i).state_machine.data.items())) for i in IDS})
                == 1
            )
        )


@contextlib.asynccontextmanager
async def solo_leader(tmp_path, disk, timeout: float):
    """A one-member group on `disk`, led by its member; yields (member, client)."""
    server = await DLedgerServer(
        str(tmp_path / "solo"), host="127.0.0.1", config=FAST, disk=disk
    ).start()
    peers = {"n0": f"127.0.0.1:{server.port}"}
    try:
        member = await server.add_group(GROUP, "n0", peers, rng=random.Random(1))
        await wait_for(lambda: member.is_leader, 5.0, "the single member to lead")
        async with DLedgerClient(GROUP, peers, timeout=timeout) as client:
            yield member, client
    finally:
        await server.stop()


async def test_disk_full_gives_415_and_the_log_stays_intact(tmp_path):
    from ledgermq.storage.disk import FaultyDisk, OsDisk

    disk = FaultyDisk(OsDisk())
    async with solo_leader(tmp_path, disk, 3.0) as (_, client):
        acked = {await client.append(f"ok-{k}".encode()): f"ok-{k}".encode() for k in range(5)}
        disk.space_left = 100  # the next entry tears: ENOSPC
        with pytest.raises(DLedgerError) as err:
            await client.append(b"x" * 1000)
        assert err.value.code == Code.DISK_FULL
        assert "disk full" in err.value.message
        disk.space_left = None  # space freed: the member takes appends again

        async def append_when_ready() -> int:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            while True:
                try:
                    return await client.append(b"after")
                except DLedgerError as exc:  # 415 for a cool-down second after ENOSPC
                    if exc.code != Code.DISK_FULL or loop.time() > deadline:
                        raise
                await asyncio.sleep(0.05)

        index = await append_when_ready()
        acked[index] = b"after"
        for idx, body in acked.items():
            assert await client.get(idx) == body


async def test_an_entry_whose_fsync_failed_is_never_served(tmp_path):
    """fsyncgate: after a failed fsync Linux marks the pages clean, so reading the entry
    back and fsyncing again "succeeds". The reload must cut it, not serve it."""
    from ledgermq.storage.disk import DiskError, FaultyDisk, OsDisk

    disk = FaultyDisk(OsDisk())
    armed = {"on": False}

    def fail_once(path: str) -> None:
        if armed["on"] and "/data/" in path:
            armed["on"] = False
            raise DiskError(f"fsync {path}: injected EIO")

    disk.on_sync = fail_once
    async with solo_leader(tmp_path, disk, 5.0) as (member, client):
        acked = {await client.append(f"ok-{k}".encode()): f"ok-{k}".encode() for k in range(3)}
        armed["on"] = True
        with pytest.raises(DLedgerError) as err:
            await client.append(b"fsync-failed")
        assert err.value.code == Code.DISK_ERROR
        await wait_for(lambda: member.is_leader, 5.0, "the member to lead again")
        index = None
        while index is None:
            try:
                index = await client.append(b"after")
            except DLedgerError as exc:  # a second of 414s after the failure
                assert exc.code == Code.DISK_ERROR, exc
                await asyncio.sleep(0.05)
        acked[index] = b"after"
        stored = [e.data for e in await client.get_entries(0, index + 1)]
        assert b"fsync-failed" not in stored, "an entry whose fsync failed was kept"
        for idx, body in acked.items():
            assert stored[idx] == body


async def test_one_server_hosts_many_groups(cluster):
    await cluster.leader()
    for n, i in enumerate(IDS):  # (equal seeds would split every vote)
        await cluster.servers[i].add_group("g1", i, cluster.peers, rng=random.Random(10 + n))
    await wait_for(
        lambda: sum(cluster.servers[i].members["g1"].is_leader for i in IDS) == 1,
        5.0,
        "a leader of g1",
    )
    async with (
        cluster.client() as c0,
        DLedgerClient("g1", dict(cluster.peers)) as c1,
    ):
        a = await c0.append_batch([b"g0-a", b"g0-b"])
        b = await c1.append(b"g1-a")
        assert await c0.get(a[1]) == b"g0-b"
        assert await c1.get(b) == b"g1-a"
        assert (await c1.metadata())["group"] == "g1"
    for i in IDS:
        assert (cluster.tmp_path / i / "g1" / f"dledger-{i}").is_dir()


async def test_flush_interval_mode(tmp_path):
    config = replace(FAST, flush_mode="interval", flush_interval_ms=5)
    c = await Cluster(tmp_path, config=config).start()
    try:
        await c.leader()
        async with c.client() as client:
            indexes = await asyncio.gather(*(client.append(b"i%d" % k) for k in range(100)))
            assert len(set(indexes)) == 100
            assert (await client.metadata())["flushMode"] == "interval"
            # the background flusher makes everything durable soon after
            await wait_for(
                lambda: all(c.member(i).storage.store.durable_index >= max(indexes) for i in IDS)
            )
    finally:
        await c.stop()


async def test_too_many_pending_appends_get_503(tmp_path):
    c = await Cluster(tmp_path, config=replace(FAST, max_pending=8)).start()
    try:
        await c.leader()
        async with c.client(coalesce=False) as client:
            results = await asyncio.gather(
                *(client.append(b"p%d" % k) for k in range(200)), return_exceptions=True
            )
            full = [r for r in results if isinstance(r, DLedgerError)]
            done = [r for r in results if isinstance(r, int)]
            assert done and full
            assert {e.code for e in full} == {Code.LEADER_PENDING_FULL}
            assert len(set(done)) == len(done)
        # a coalesced request is taken whole or refused whole
        async with c.client() as client:
            results = await asyncio.gather(
                *(client.append(b"q%d" % k) for k in range(20)), return_exceptions=True
            )
            assert {r.code for r in results} == {Code.LEADER_PENDING_FULL}
    finally:
        await c.stop()


async def test_a_replica_told_to_overwrite_a_committed_entry_leaves_service(cluster):
    """After a majority lost acknowledged entries (interval flush, power loss) a new
    leader may contradict what a survivor already applied. The survivor must stop with a
    reason, not crash its loop or apply anything more."""
    from ledgermq.dledger.core import Entry, Message, MsgType

    leader = await cluster.leader()
    async with cluster.client() as client:
        index = await client.append(b"committed")
        follower = next(i for i in IDS if i != leader)
        member = cluster.member(follower)
        await wait_for(lambda: member.applied - 1 >= index, 5.0, "the follower to apply")
        node = member.node
        contradiction = Message(
            MsgType.APPEND, leader, follower, node.term, index=index, log_term=node.log.term(index),
            entries=(Entry(index + 1, node.term + 1, b"rewritten history"),), commit=index + 1,
        )  # fmt: skip
        member.step(contradiction)
        assert member.diverged and "committed entry" in member.diverged
        assert (await client.metadata(member=follower))["diverged"] == member.diverged
        member.tick()  # still safe to drive
        # the rest of the group carries on
        assert await client.get(await client.append(b"later")) == b"later"


async def test_placed_entries_carry_their_own_position_on_every_replica(cluster):
    # A broker's CommitLog record holds its physical offset (its entry's pos + 48), so
    # the bytes are made once the position is known: encode() gets the positions, and
    # every replica must store each entry exactly there, across data file boundaries and
    # mixed with plain appends queued in the same loop iteration.
    import struct

    leader = cluster.member(await cluster.leader())
    lost: list[int] = []
    leader.on_placement_lost = lambda: lost.append(1)

    def stamped(sizes):
        def encode(positions):
            return [
                struct.pack(">q", p) + bytes(n - 8) for p, n in zip(positions, sizes, strict=True)
            ]

        return encode

    placed_futures, plain_futures = [], []
    for round_ in range(6):
        sizes = [200_000 + 999 * round_, 64, 300_001]  # crosses the 1 MiB data files
        placed_futures.append(leader.submit_placed(sizes, stamped(sizes)))
        (plain,) = leader.submit_many([[b"plain-%d" % round_]])
        plain_futures += plain
    # one future per placed submission, for its last entry: 3 entries, then a plain one
    lasts = [index for index, _ in await asyncio.gather(*placed_futures)]
    plains = [index for index, _ in await asyncio.gather(*plain_futures)]
    assert [p - last for p, last in zip(plains, lasts, strict=True)] == [1] * 6
    placed = [i for last in lasts for i in (last - 2, last - 1, last)]
    indexes = placed + plains
    await wait_for(lambda: all(cluster.member(i).applied - 1 >= max(indexes) for i in IDS))
    for member_id in IDS:
        store = cluster.member(member_id).storage.store
        for index in placed:
            entry = store.get(index)
            assert struct.unpack_from(">q", entry.body)[0] == entry.pos, (member_id, index)
            # and the body can be read back by position alone
            assert store.read_data(entry.pos + 48, len(entry.body)) == entry.body
    assert not lost

    # the log moves between submission and proposal: the placed entries are refused
    sizes = [100, 100]
    moved = leader.submit_placed(sizes, stamped(sizes))
    leader.node.propose_many([b"sneaked in first"])
    with pytest.raises(MemberError) as refused:
        await moved
    assert refused.value.code == Code.TERM_CHANGED
    assert lost == [1]
    # and the next placement starts from the real end of the log again
    last, _ = await leader.submit_placed(sizes, stamped(sizes))
    for index in (last - 1, last):
        entry = leader.storage.store.get(index)
        assert struct.unpack_from(">q", entry.body)[0] == entry.pos
