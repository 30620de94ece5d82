"""The reviver's memory follows what is unacked, not pops x invisible time."""

from types import SimpleNamespace

from ledgermq.broker.pop.records import AckRecord, CheckPoint
from ledgermq.broker.pop.revive import ReviveService, _ReviveQueue


def test_acked_checkpoints_do_not_pile_up_in_the_due_heap():
    svc = ReviveService(SimpleNamespace(), "rmq_sys_REVIVE_LOG_C", 1)  # type: ignore[arg-type]
    q = _ReviveQueue(0)
    hour = 3_600_000
    for i in range(5000):
        ck = CheckPoint("T", "g", 0, i, 1_000 + i, hour, [0], "b")
        svc._add_checkpoint(q, ck, i, replay=False)
        if i % 10:  # one in ten stays unacked
            svc._add_ack(q, AckRecord("T", "g", 0, i, 1_000 + i, [i], "b"))
    assert len(q.pending) == 500
    # acked entries would stay until due (an hour here): 5000 in the heap
    assert len(q.due) <= 2 * len(q.pending) + 1024 + 1
    # and nothing unacked was dropped from it
    assert {key for _, _, key in q.due} >= set(q.pending)
