"""The producer's auto-batching accumulator: what goes together, when it leaves, and
that every caller's future is settled whatever happens to its batch.

The batch sender here is a recorder: it answers each batch the way the producer would
(one result per message) or fails it, so these tests see only the accumulator.
"""

from __future__ import annotations

import asyncio

import pytest

from ledgermq.client.accumulator import BatchKey, HeldSend, SendAccumulator
from ledgermq.client.message import MessageQueue, SendResult, SendStatus

KEY = BatchKey("T", None, True)
OTHER = BatchKey("U", None, True)


class Recorder:
    def __init__(self, fail: Exception | None = None) -> None:
        self.batches: list[tuple[BatchKey, list[str]]] = []
        self.fail = fail
        self.release: asyncio.Event | None = None

    async def __call__(self, key: BatchKey, sends: list[HeldSend]) -> None:
        self.batches.append((key, [s.uniq_id for s in sends]))
        if self.release is not None:
            await self.release.wait()
        if self.fail is not None:
            for s in sends:
                s.future.set_exception(self.fail)
            return
        mq = key.queue or MessageQueue(key.topic, "b", 0)
        for i, s in enumerate(sends):
            if not s.future.done():
                s.future.set_result(SendResult(SendStatus.SEND_OK, s.uniq_id, "", mq, i))


def held(uniq: str, body_size: int = 100) -> HeldSend:
    loop = asyncio.get_running_loop()
    return HeldSend(b"x" * body_size, 0, b"", uniq, loop.time() + 5, loop.create_future())


async def send(acc: SendAccumulator, key: BatchKey, uniq: str, size: int = 100) -> SendResult:
    return await acc.add(key, held(uniq, size))


async def test_sends_of_one_loop_iteration_leave_as_one_batch_per_key():
    rec = Recorder()
    acc = SendAccumulator(rec)
    results = await asyncio.gather(
        send(acc, KEY, "a"), send(acc, OTHER, "b"), send(acc, KEY, "c"), send(acc, KEY, "d")
    )
    assert rec.batches == [(KEY, ["a", "c", "d"]), (OTHER, ["b"])]
    # each caller gets the result for its own message, in the batch's order
    assert [(r.msg_id, r.queue_offset) for r in results] == [
        ("a", 0),
        ("b", 0),
        ("c", 1),
        ("d", 2),
    ]
    assert acc.held_bytes == 0


async def test_a_lone_send_leaves_without_waiting_for_company():
    rec = Recorder()
    acc = SendAccumulator(rec)
    first = await send(acc, KEY, "a")
    second = await send(acc, KEY, "b")
    assert (first.msg_id, second.msg_id) == ("a", "b")
    assert rec.batches == [(KEY, ["a"]), (KEY, ["b"])]


async def test_a_batch_that_would_pass_max_bytes_leaves_and_the_next_one_opens():
    rec = Recorder()
    size = held("probe", 100).encoded_size
    acc = SendAccumulator(rec, max_bytes=3 * size)
    await asyncio.gather(*(send(acc, KEY, str(i)) for i in range(7)))
    assert [ids for _, ids in rec.batches] == [["0", "1", "2"], ["3", "4", "5"], ["6"]]


async def test_max_delay_holds_sends_made_in_later_iterations():
    rec = Recorder()
    acc = SendAccumulator(rec, max_delay_ms=50)

    async def later(uniq: str, iterations: int) -> SendResult:
        for _ in range(iterations):
            await asyncio.sleep(0)
        return await send(acc, KEY, uniq)

    await asyncio.gather(later("a", 0), later("b", 3), later("c", 6))
    assert rec.batches == [(KEY, ["a", "b", "c"])]


async def test_a_failed_batch_fails_every_caller_in_it_and_only_them():
    rec = Recorder(fail=RuntimeError("broker said no"))
    acc = SendAccumulator(rec)
    outcomes = await asyncio.gather(
        send(acc, KEY, "a"), send(acc, KEY, "b"), return_exceptions=True
    )
    assert [str(o) for o in outcomes] == ["broker said no", "broker said no"]
    rec.fail = None
    assert (await send(acc, KEY, "c")).msg_id == "c"
    assert acc.held_bytes == 0


async def test_a_cancelled_caller_does_not_disturb_the_rest_of_its_batch():
    rec = Recorder()
    rec.release = asyncio.Event()
    acc = SendAccumulator(rec)
    a = asyncio.ensure_future(send(acc, KEY, "a"))
    b = asyncio.ensure_future(send(acc, KEY, "b"))
    while not rec.batches:
        await asyncio.sleep(0)
    a.cancel()
    rec.release.set()
    assert (await b).msg_id == "b"
    with pytest.raises(asyncio.CancelledError):
        await a


async def test_a_sender_bug_still_settles_every_future():
    async def broken(key: BatchKey, sends: list[HeldSend]) -> None:
        raise ValueError("bug in the sender")

    acc = SendAccumulator(broken)
    outcomes = await asyncio.gather(
        send(acc, KEY, "a"), send(acc, KEY, "b"), return_exceptions=True
    )
    assert all(isinstance(o, ValueError) for o in outcomes)


async def test_held_bytes_bound_what_may_be_held():
    rec = Recorder()
    rec.release = asyncio.Event()
    size = held("probe", 100).encoded_size
    acc = SendAccumulator(rec, max_bytes=4 * size, total_max_bytes=2 * size)
    assert not acc.accepts(5 * size)  # bigger than a batch: goes on its own
    a = asyncio.ensure_future(send(acc, KEY, "a"))
    b = asyncio.ensure_future(send(acc, KEY, "b"))
    await asyncio.sleep(0)
    assert acc.held_bytes == 2 * size
    assert not acc.accepts(size)  # in flight counts until answered
    rec.release.set()
    await asyncio.gather(a, b)
    assert acc.accepts(size)


async def test_drain_sends_what_is_open_and_waits_for_the_answers():
    rec = Recorder()
    acc = SendAccumulator(rec, max_delay_ms=10_000)
    fut = acc.add(KEY, held("a"))
    await acc.drain()
    assert fut.done() and fut.result().msg_id == "a"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_bytes": 0},
        {"max_bytes": 2 * 1024 * 1024 + 1},
        {"max_delay_ms": -1},
        {"max_delay_ms": 30_001},
        {"total_max_bytes": 0},
    ],
)
def test_limits_outside_javas_ranges_are_refused(kwargs):
    with pytest.raises(ValueError):
        SendAccumulator(Recorder(), **kwargs)
