"""Snapshots and log compaction on real files and loopback sockets, three members in
one process: a follower that missed compacted entries is caught up by INSTALL_SNAPSHOT,
restarts restore the state machine from a snapshot plus the log tail, and a damaged
newest snapshot falls back to an older one."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ledgermq.dledger.kv import KVStateMachine
from tests.integration.test_dledger_server import FAST, IDS, Cluster, wait_for

pytestmark = pytest.mark.timeout(90)

SNAP = replace(FAST, snapshot_threshold=20, snapshot_chunk_bytes=512)


@pytest.fixture
async def snap_cluster(tmp_path):
    c = await Cluster(tmp_path, KVStateMachine, config=SNAP).start()
    try:
        yield c
    finally:
        await c.stop()


async def put_many(client, start: int, n: int) -> None:
    for i in range(start, start + n):
        await client.put(b"key-%d" % (i % 37), b"value-%d" % i)


def same_log_tail(a, b) -> int:
    """Entries both members store agree byte for byte (pos, chainCrc, body); returns
    how many were compared."""
    sa, sb = a.storage.store, b.storage.store
    lo = max(sa.begin_index, sb.begin_index)
    hi = min(sa.last_index, sb.last_index)
    for i in range(lo, hi + 1):
        ea, eb = sa.get(i), sb.get(i)
        assert (ea.pos, ea.term, ea.chain_crc, ea.body) == (eb.pos, eb.term, eb.chain_crc, eb.body)
    return hi - lo + 1


async def test_lagging_follower_is_caught_up_by_snapshot(snap_cluster):
    c = snap_cluster
    leader = await c.leader()
    lagger = next(i for i in IDS if i != leader)
    async with c.client() as client:
        await put_many(client, 0, 10)
        await wait_for(lambda: c.member(lagger).applied >= c.member(leader).applied, 5, "sync")
        await c.stop_server(lagger)
        await put_many(client, 10, 150)
        lm = c.member(leader)
        await wait_for(lambda: lm.storage.begin_index > 20, 10, "leader compaction")
        assert lm.snapshots_taken >= 3
        begin = lm.storage.begin_index
        await c.restart_server(lagger)
        fm = c.member(lagger)
        await wait_for(lambda: fm.snapshots_installed >= 1, 10, "snapshot installed")
        await put_many(client, 160, 20)
        await wait_for(lambda: fm.applied == lm.applied, 10, "follower caught up")
    assert fm.state_machine.data == lm.state_machine.data
    assert fm.storage.begin_index >= begin - 1
    # the follower's log continues after the snapshot exactly as the leader's
    assert same_log_tail(lm, fm) >= 20
    meta = await c.client().metadata(member=lagger)
    assert meta["snapshotIndex"] >= 0 and meta["beginIndex"] > 0


async def test_restart_restores_from_snapshot_and_log_tail(tmp_path):
    c = await Cluster(tmp_path, KVStateMachine, config=SNAP).start()
    try:
        await c.leader()
        async with c.client() as client:
            await put_many(client, 0, 75)
            await client.delete(b"key-3")
        top = max(c.member(i).applied for i in IDS)
        for i in IDS:
            await wait_for(lambda i=i: c.member(i).snapshots_taken >= 2, 10, "snapshots")
            await wait_for(lambda i=i: c.member(i).applied >= top, 5, "all applied")
        expected = dict(c.member(IDS[0]).state_machine.data)
        applied = {i: c.member(i).applied for i in IDS}
        for i in IDS:
            await c.stop_server(i)
        for i in IDS:
            await c.restart_server(i)
        for i in IDS:
            m = c.member(i)
            # restored from the snapshot at once, the tail replayed from the log
            assert m.storage.begin_index > 0
            await wait_for(lambda m=m, i=i: m.applied >= applied[i], 5, "replay")
            assert m.state_machine.data == expected
        await c.leader()
        async with c.client() as client:
            assert await client.kv_get(b"key-0") == b"value-74"
            assert await client.kv_get(b"key-3") is None
    finally:
        await c.stop()


async def test_damaged_newest_snapshot_falls_back_to_an_older_one(tmp_path):
    c = await Cluster(tmp_path, KVStateMachine, config=SNAP).start()
    try:
        await c.leader()
        async with c.client() as client:
            await put_many(client, 0, 90)
        victim = IDS[1]
        m = c.member(victim)
        await wait_for(lambda: len(m.storage.snapshots.indexes()) == 3, 10, "three snapshots")
        expected = dict(m.state_machine.data)
        applied = m.applied
        newest = m.storage.snapshots.indexes()[-1]
        root = m.storage.store.root
        await c.stop_server(victim)
        data = tmp_path / victim / "g0" / root.rsplit("/", 1)[1] / "snapshot"
        path = data / f"snapshot_{newest - 1}" / "data"
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        await c.restart_server(victim)
        m = c.member(victim)
        assert m.storage.snapshots.indexes()[-1] < newest  # the damaged one is gone
        await wait_for(lambda: m.applied >= applied, 5, "replay from the older snapshot")
        assert m.state_machine.data == expected
    finally:
        await c.stop()
