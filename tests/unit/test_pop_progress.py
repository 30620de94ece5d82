"""PopService's view of pop progress while commits travel through a DLedger log."""

import asyncio
from types import SimpleNamespace

from ledgermq.broker.pop.service import PopService
from ledgermq.dledger.member import MemberError


class FakeBroker:
    """The table applies a commit only when the test says so (as a log entry would)."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(broker_cluster_name="C")
        self.table: dict[tuple[str, str, int], int] = {}
        self.commits: list[asyncio.Future[None]] = []
        self.consumer_offsets = SimpleNamespace(query=lambda g, t, q: self.table.get((g, t, q), -1))
        self.is_slave = False

    def commit_master_progress(self, group, topic, queue_id, offset, *, wait=False):
        fut = asyncio.get_running_loop().create_future()
        self.commits.append(fut)
        return fut


async def test_a_commit_the_log_refuses_does_not_hide_messages():
    broker = FakeBroker()
    pop = PopService(broker)  # type: ignore[arg-type]
    broker.table[("g", "T", 0)] = 10
    pop.commit("g", "T", 0, 20)
    # committed but not applied yet: the next pop must not hand out 10..19 again
    assert pop.offset("g", "T", 0) == 20
    broker.commits[-1].set_exception(MemberError(503, "no quorum"))
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    # refused: 10..19 were never handed out for good (their checkpoint failed too)
    assert pop.offset("g", "T", 0) == 10


async def test_progress_pending_from_an_earlier_term_is_forgotten_on_a_role_change():
    broker = FakeBroker()
    pop = PopService(broker)  # type: ignore[arg-type]
    pop.commit("g", "T", 1, 7)
    assert pop.offset("g", "T", 1) == 7
    pop.stop_revive()  # deposed: the entry may be cut from the log
    assert pop.offset("g", "T", 1) == -1


async def test_an_applied_commit_is_read_from_the_table():
    broker = FakeBroker()
    pop = PopService(broker)  # type: ignore[arg-type]
    pop.commit("g", "T", 2, 5)
    broker.table[("g", "T", 2)] = 5
    broker.commits[-1].set_result(None)
    await asyncio.sleep(0)
    assert pop.offset("g", "T", 2) == 5
    broker.table[("g", "T", 2)] = 3  # an admin reset back is not overridden
    assert pop.offset("g", "T", 2) == 3
