"""Membership changes on real sockets and files, members in one process: a new member
joins as a learner and catches up (by snapshot), is promoted, old voters are removed
(the leader too), and the group keeps committing throughout."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from ledgermq.dledger.client import DLedgerError
from ledgermq.dledger.kv import KVStateMachine
from ledgermq.dledger.protocol import Code
from ledgermq.dledger.server import DLedgerServer
from tests.integration.test_dledger_server import FAST, GROUP, IDS, Cluster, wait_for

pytestmark = pytest.mark.timeout(90)

CONFIG = replace(FAST, snapshot_threshold=20, snapshot_chunk_bytes=1024)


async def put_many(client, start: int, n: int) -> None:
    for i in range(start, start + n):
        await client.put(b"key-%d" % (i % 23), b"value-%d" % i)


async def test_add_learner_promote_remove_voters_and_leader(tmp_path):
    c = await Cluster(tmp_path, KVStateMachine, config=CONFIG).start()
    joiner: DLedgerServer | None = None
    try:
        await c.leader()
        client = c.client()
        await put_many(client, 0, 70)  # the leader snapshots and compacts meanwhile

        # a fourth member process joins: it knows the current members, not its role
        joiner = await DLedgerServer(str(tmp_path / "n3"), host="127.0.0.1", config=CONFIG).start()
        addr = f"127.0.0.1:{joiner.port}"
        n3 = await joiner.add_group(
            GROUP,
            "n3",
            {**c.peers, "n3": addr},
            state_machine=KVStateMachine(),
            rng=random.Random(3),
            join=True,
        )
        assert not n3.node.promotable()
        result = await client.add_learner("n3", addr)
        assert result["learners"] == ["n3"] and result["voters"] == IDS
        assert result["peers"]["n3"] == addr
        leader = c.member(await c.leader())
        await wait_for(lambda: n3.applied >= leader.applied, 10, "the learner caught up")
        assert n3.state_machine.data == leader.state_machine.data
        assert n3.snapshots_installed >= 1  # the entries it needed were compacted
        assert n3.conf.learners == ("n3",) and not n3.node.promotable()
        meta = await client.metadata()
        assert meta["voters"] == IDS and meta["learners"] == ["n3"]

        # bad requests get clear errors
        with pytest.raises(DLedgerError) as err:
            await client.add_learner("n3", addr)
        assert err.value.code == Code.ILLEGAL_MEMBER_STATE
        with pytest.raises(DLedgerError) as err:
            await client.promote("nobody")
        assert err.value.code == Code.ILLEGAL_MEMBER_STATE

        result = await client.promote("n3")
        assert result["voters"] == ["n0", "n1", "n2", "n3"] and result["learners"] == []
        await wait_for(lambda: n3.node.promotable(), 5, "n3 knows it votes")
        await put_many(client, 70, 10)

        # remove a follower: three voters left, writes go on
        leader_id = await c.leader()
        follower = next(i for i in IDS if i != leader_id)
        result = await client.remove_member(follower)
        assert follower not in result["voters"] and len(result["voters"]) == 3
        assert follower not in client.peers
        await put_many(client, 80, 10)
        await c.stop_server(follower)  # gone for good
        await put_many(client, 90, 10)

        # remove the leader itself: it steps down once that commits, another leads
        result = await client.remove_member(leader_id)
        assert leader_id not in result["voters"] and len(result["voters"]) == 2
        old = c.member(leader_id)
        await wait_for(lambda: not old.is_leader, 5, "the removed leader steps down")

        def new_leader():
            for m in [*(c.member(i) for i in c.live() if i != leader_id), n3]:
                if m.is_leader:
                    return m
            return None

        nl = await wait_for(new_leader, 5, "a new leader among the remaining voters")
        assert nl.self_id != leader_id
        await put_many(client, 100, 10)
        assert await client.kv_get(b"key-%d" % (109 % 23)) == b"value-109"
        assert not old.node.promotable()
        meta = await client.metadata()
        assert leader_id not in meta["voters"] and follower not in meta["voters"]
        await client.close()
        # every remaining voter holds the same state
        voters = [m for m in (c.member(i) for i in c.live()) if m.node.promotable()] + [n3]
        top = max(m.applied for m in voters)
        for m in voters:
            await wait_for(lambda m=m: m.applied >= top, 5, "voters applied")
            assert m.state_machine.data == nl.state_machine.data
    finally:
        if joiner is not None:
            await joiner.stop()
        await c.stop()


async def test_restarted_joiner_keeps_its_membership(tmp_path):
    c = Cluster(tmp_path, KVStateMachine, config=replace(CONFIG, snapshot_threshold=0))
    await c.start()
    joiner = None
    try:
        await c.leader()
        client = c.client()
        await put_many(client, 0, 5)
        joiner = await DLedgerServer(
            str(tmp_path / "n3"), host="127.0.0.1", config=c.config
        ).start()
        port = joiner.port
        addr = f"127.0.0.1:{port}"
        peers = {**c.peers, "n3": addr}
        n3 = await joiner.add_group(GROUP, "n3", peers, state_machine=KVStateMachine(), join=True)
        await client.add_voter("n3", addr)
        await put_many(client, 5, 5)
        leader = c.member(await c.leader())
        await wait_for(lambda: n3.applied >= leader.applied, 5, "n3 caught up")
        await joiner.stop()
        joiner = await DLedgerServer(
            str(tmp_path / "n3"), host="127.0.0.1", port=port, config=c.config
        ).start()
        n3 = await joiner.add_group(GROUP, "n3", peers, state_machine=KVStateMachine(), join=True)
        # from its own log: a voter of four
        assert n3.conf.voters == ("n0", "n1", "n2", "n3") and n3.node.promotable()
        await put_many(client, 10, 5)
        leader = c.member(await c.leader())
        await wait_for(lambda: n3.applied >= leader.applied, 5, "n3 caught up")
        assert n3.state_machine.data == leader.state_machine.data
        await client.close()
    finally:
        if joiner is not None:
            await joiner.stop()
        await c.stop()
