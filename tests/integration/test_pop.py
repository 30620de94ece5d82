"""POP consumption against an in-process broker over real sockets and real files."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from ledgermq.common.message import MessageExt, decode_records
from ledgermq.common.pop_handle import (
    BatchAck,
    BatchAckBody,
    ExtraInfo,
    parse_msg_offset_info,
    parse_order_count_info,
    parse_start_offset_info,
    pop_retry_topic,
)
from ledgermq.remoting.codes import RequestCode, ResponseCode
from tests.integration.test_broker import Harness, wait_until

pytestmark = pytest.mark.timeout(60)

GROUP = "PopGroup"


@pytest.fixture
async def h(tmp_path):
    harness = Harness(tmp_path)
    await harness.start()
    yield harness
    await harness.close()


async def send_n(h: Harness, topic: str, n: int, *, queue_id=0, tags=None, start=0) -> None:
    for i in range(start, start + n):
        props = {"TAGS": tags[i - start]} if tags else {}
        reply = await h.send(topic, f"m{i}".encode(), queue_id=queue_id, props=props)
        assert reply.code == ResponseCode.SUCCESS, reply.remark


async def pop(
    h: Harness,
    topic: str,
    *,
    group=GROUP,
    max_nums=32,
    invisible_ms=10_000,
    poll_ms=0,
    queue_id=-1,
    exp=None,
    order=False,
    attempt=None,
    timeout=10,
):
    ext = {
        "consumerGroup": group,
        "topic": topic,
        "queueId": queue_id,
        "maxMsgNums": max_nums,
        "invisibleTime": invisible_ms,
        "pollTime": poll_ms,
        "bornTime": int(time.time() * 1000),
        "initMode": 0,
        "order": "true" if order else "false",
    }
    if exp is not None:
        ext.update(expType="TAG", exp=exp)
    if attempt is not None:
        ext["attemptId"] = attempt
    return await h.call(RequestCode.POP_MESSAGE, ext, timeout=timeout)


def popped(reply) -> list[MessageExt]:
    assert reply.code == ResponseCode.SUCCESS, (reply.code, reply.remark)
    return decode_records(reply.body)


def handle(msg: MessageExt) -> ExtraInfo:
    return ExtraInfo.parse(msg.properties["POP_CK"])


async def ack(h: Harness, msg: MessageExt, *, group=GROUP, extra=None):
    info = handle(msg)
    return await h.call(
        RequestCode.ACK_MESSAGE,
        {
            "consumerGroup": group,
            "topic": msg.topic,
            "queueId": info.queue_id,
            "offset": info.queue_offset,
            "extraInfo": extra if extra is not None else msg.properties["POP_CK"],
        },
    )


async def change_invisible(h: Harness, msg: MessageExt, invisible_ms: int, *, group=GROUP):
    info = handle(msg)
    return await h.call(
        RequestCode.CHANGE_MESSAGE_INVISIBLETIME,
        {
            "consumerGroup": group,
            "topic": msg.topic,
            "queueId": info.queue_id,
            "offset": info.queue_offset,
            "extraInfo": msg.properties["POP_CK"],
            "invisibleTime": invisible_ms,
        },
    )


def bodies(msgs: list[MessageExt]) -> list[bytes]:
    return [m.body for m in msgs]


async def pop_until(h: Harness, topic: str, want: int, **kw) -> list[MessageExt]:
    """Pops (long polling) until `want` messages came back in all."""
    got: list[MessageExt] = []
    deadline = time.monotonic() + 15
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want} popped"
        reply = await pop(h, topic, poll_ms=2000, **kw)
        if reply.code == ResponseCode.SUCCESS:
            got += decode_records(reply.body)
        else:
            assert reply.code == ResponseCode.PULL_NOT_FOUND, (reply.code, reply.remark)
    return got


async def revive_idle(h: Harness, after_ms: int) -> None:
    """Waits until every checkpoint is settled and `after_ms` (wall clock) has passed,
    so anything unacked that was due has been put back by now."""
    revive = h.broker.pop.revive
    await wait_until(lambda: time.time() * 1000 > after_ms, timeout=15)
    await wait_until(lambda: revive.pending_count() == 0, timeout=15)


# --- basics --------------------------------------------------------------------------
async def test_pop_gives_handles_and_acked_messages_never_come_back(h):
    await send_n(h, "PopT", 3)
    reply = await pop(h, "PopT", invisible_ms=800)
    msgs = popped(reply)
    assert bodies(msgs) == [b"m0", b"m1", b"m2"]
    hdr = reply.ext_fields
    for key in ("popTime", "invisibleTime", "reviveQid", "restNum"):
        assert key in hdr
    assert hdr["invisibleTime"] == "800" and hdr["restNum"] == "0"
    assert parse_start_offset_info(hdr["startOffsetInfo"]) == {("0", "0"): 0}
    assert parse_msg_offset_info(hdr["msgOffsetInfo"]) == {("0", "0"): [0, 1, 2]}
    for i, m in enumerate(msgs):
        info = handle(m)
        assert (info.ck_queue_offset, info.queue_offset, info.queue_id) == (0, i, 0)
        assert info.broker_name == "broker-a" and info.topic_type == "0"
        assert info.pop_time == int(hdr["popTime"]) and info.revive_qid == int(hdr["reviveQid"])
    # nothing more to pop while they are invisible
    assert (await pop(h, "PopT")).code == ResponseCode.PULL_NOT_FOUND
    for m in msgs:
        assert (await ack(h, m)).code == ResponseCode.SUCCESS
    await revive_idle(h, handle(msgs[0]).pop_time + 1200)
    assert h.broker.pop.revive.revived == 0
    assert (await pop(h, "PopT", poll_ms=300)).code == ResponseCode.PULL_NOT_FOUND


async def test_unacked_message_is_redelivered_through_the_retry_topic(h):
    await send_n(h, "RedeliverT", 2)
    first = popped(await pop(h, "RedeliverT", invisible_ms=500))
    assert (await ack(h, first[0])).code == ResponseCode.SUCCESS
    again = await pop_until(h, "RedeliverT", 1, invisible_ms=5000)
    assert bodies(again) == [b"m1"]
    m = again[0]
    assert m.topic == "RedeliverT"  # shown under its own topic
    assert m.reconsume_times == 1
    assert handle(m).topic_type == "1" and m.properties["RETRY_TOPIC"] == "RedeliverT"
    assert h.broker.topic_config.get(pop_retry_topic("RedeliverT", GROUP)) is not None
    # acking under the original topic name works: the handle says "retry"
    assert (await ack(h, m)).code == ResponseCode.SUCCESS
    await revive_idle(h, handle(m).pop_time + 100)
    assert h.broker.pop.revive.revived == 1


async def test_change_invisible_time_moves_redelivery(h):
    await send_n(h, "ChangeT", 1)
    (m,) = popped(await pop(h, "ChangeT", invisible_ms=400))
    reply = await change_invisible(h, m, 60_000)
    assert reply.code == ResponseCode.SUCCESS, reply.remark
    new_pop_time = int(reply.ext_fields["popTime"])
    assert reply.ext_fields["invisibleTime"] == "60000"
    assert reply.ext_fields["reviveQid"] == str(handle(m).revive_qid)
    # past the original invisible time it stays invisible (the old checkpoint is acked)
    await wait_until(lambda: h.broker.pop.revive.pending_count() == 1, timeout=10)
    await wait_until(lambda: time.time() * 1000 > handle(m).pop_time + 900, timeout=5)
    assert (await pop(h, "ChangeT", poll_ms=300)).code == ResponseCode.PULL_NOT_FOUND
    assert h.broker.pop.revive.revived == 0
    # a new handle from the reply; shortening it through that handle redelivers soon
    old = handle(m)
    renewed = ExtraInfo(
        m.queue_offset, new_pop_time, 60_000, old.revive_qid, "0", "broker-a", 0, m.queue_offset
    )
    m.properties["POP_CK"] = renewed.format()
    assert (await change_invisible(h, m, 100)).code == ResponseCode.SUCCESS
    again = await pop_until(h, "ChangeT", 1)
    assert bodies(again) == [b"m0"] and again[0].reconsume_times == 1


async def test_changing_the_invisible_time_in_the_pop_millisecond_still_redelivers(h):
    # the new checkpoint (same queue offset) must not share the old one's pop time: a
    # twin was dropped as a duplicate and the old one's ack then struck the message
    await send_n(h, "SameMsT", 1)
    (m,) = popped(await pop(h, "SameMsT", invisible_ms=60_000))
    real_clock = h.broker.clock_ms
    h.broker.clock_ms = lambda: handle(m).pop_time
    try:
        assert (await change_invisible(h, m, 300)).code == ResponseCode.SUCCESS
    finally:
        h.broker.clock_ms = real_clock
    again = await pop_until(h, "SameMsT", 1)
    assert bodies(again) == [b"m0"] and again[0].reconsume_times == 1


async def test_batch_ack_with_short_and_long_field_names(h):
    await send_n(h, "BatchT", 4)
    reply = await pop(h, "BatchT", invisible_ms=600)
    msgs = popped(reply)
    info = handle(msgs[0])
    short = BatchAck(
        GROUP, "BatchT", "0", info.ck_queue_offset, 0, info.revive_qid, info.pop_time, 600, (0, 2)
    ).to_json()
    long_names = {
        "consumerGroup": GROUP,
        "topic": "BatchT",
        "retry": "0",
        "startOffset": info.ck_queue_offset,
        "queueId": 0,
        "reviveQueueId": info.revive_qid,
        "popTime": info.pop_time,
        "invisibleTime": 600,
        "bitSet": BatchAck(GROUP, "BatchT", "0", 0, 0, 0, 0, 0, (1, 3)).to_json()["b"],
    }
    body = json.dumps({"brokerName": "broker-a", "acks": [short, long_names]}).encode()
    reply = await h.call(RequestCode.BATCH_ACK_MESSAGE, body=body)
    assert reply.code == ResponseCode.SUCCESS, reply.remark
    await revive_idle(h, info.pop_time + 1000)
    assert h.broker.pop.revive.revived == 0
    # and a batch that leaves one out gets exactly that one back
    await send_n(h, "BatchT", 2, start=4)
    msgs = popped(await pop(h, "BatchT", invisible_ms=400))
    info = handle(msgs[0])
    bits = (msgs[0].queue_offset - info.ck_queue_offset,)
    ack_one = BatchAck(
        GROUP, "BatchT", "0", info.ck_queue_offset, 0, info.revive_qid, info.pop_time, 400, bits
    )
    reply = await h.call(
        RequestCode.BATCH_ACK_MESSAGE, body=BatchAckBody("broker-a", (ack_one,)).encode()
    )
    assert reply.code == ResponseCode.SUCCESS, reply.remark
    assert bodies(await pop_until(h, "BatchT", 1)) == [b"m5"]


async def test_long_polling_pop_wakes_when_a_message_arrives(h):
    await send_n(h, "PollT", 1)
    popped(await pop(h, "PollT"))  # creates the group's progress; queue now drained
    started = time.monotonic()
    waiting = asyncio.ensure_future(pop(h, "PollT", poll_ms=8000, timeout=15))
    await wait_until(lambda: h.broker.pop.waiters.count == 1)
    await send_n(h, "PollT", 1, start=1)
    msgs = popped(await waiting)
    assert bodies(msgs) == [b"m1"]
    assert time.monotonic() - started < 5
    # and with nothing arriving it answers 19 after its poll time
    started = time.monotonic()
    assert (await pop(h, "PollT", poll_ms=300)).code == ResponseCode.PULL_NOT_FOUND
    assert time.monotonic() - started >= 0.25


async def test_notification_long_polls_for_something_to_pop(h):
    await send_n(h, "NotifyT", 1)
    popped(await pop(h, "NotifyT"))
    ext = {"consumerGroup": GROUP, "topic": "NotifyT", "queueId": -1, "bornTime": 0}
    reply = await h.call(RequestCode.NOTIFICATION, {**ext, "pollTime": 200})
    assert reply.code == ResponseCode.SUCCESS and reply.ext_fields["hasMsg"] == "false"
    waiting = asyncio.ensure_future(
        h.call(RequestCode.NOTIFICATION, {**ext, "pollTime": 8000}, timeout=15)
    )
    await wait_until(lambda: h.broker.pop.waiters.count == 1)
    await send_n(h, "NotifyT", 1, start=1)
    assert (await waiting).ext_fields["hasMsg"] == "true"


async def test_notification_for_a_fifo_consumer_skips_a_blocked_queue(h):
    # a queue whose ordered batch is still out has nothing for a FIFO consumer; saying
    # hasMsg=true there made it spin (pop, nothing, notify, true, pop, ...)
    await send_n(h, "NotifyFifoT", 3)
    popped(await pop(h, "NotifyFifoT", queue_id=0, max_nums=1, order=True, invisible_ms=30_000))
    ext = {"consumerGroup": GROUP, "topic": "NotifyFifoT", "queueId": 0, "bornTime": 0}
    unordered = await h.call(RequestCode.NOTIFICATION, ext)
    assert unordered.ext_fields["hasMsg"] == "true"  # two more wait behind the batch
    ordered = await h.call(RequestCode.NOTIFICATION, {**ext, "order": "true"})
    assert ordered.code == ResponseCode.SUCCESS and ordered.ext_fields["hasMsg"] == "false"


async def test_tag_filter(h):
    await send_n(h, "TagT", 4, tags=["A", "B", "A", "C"])
    msgs = popped(await pop(h, "TagT", exp="A || C", invisible_ms=400))
    assert bodies(msgs) == [b"m0", b"m2", b"m3"]
    for m in msgs:
        assert (await ack(h, m)).code == ResponseCode.SUCCESS
    await revive_idle(h, handle(msgs[0]).pop_time + 800)
    # the B message was skipped for this group, not made invisible and redelivered
    assert h.broker.pop.revive.revived == 0
    assert (await pop(h, "TagT", exp="A || C")).code == ResponseCode.PULL_NOT_FOUND


async def test_fifo_pop_blocks_the_queue_until_acked_or_expired(h):
    await send_n(h, "FifoT", 5)
    first = popped(await pop(h, "FifoT", queue_id=0, max_nums=2, order=True, invisible_ms=600))
    assert bodies(first) == [b"m0", b"m1"]
    assert all(handle(m).is_order for m in first)
    # the queue yields nothing more to the group while m0, m1 are in flight ...
    assert (await pop(h, "FifoT", queue_id=0, order=True)).code == ResponseCode.PULL_NOT_FOUND
    # ... except the same batch to a retried request (same attempt id)
    for m in first:
        assert (await ack(h, m)).code == ResponseCode.SUCCESS
    reply = await pop(
        h, "FifoT", queue_id=0, max_nums=2, order=True, invisible_ms=500, attempt="a1"
    )
    second = popped(reply)
    assert bodies(second) == [b"m2", b"m3"]
    assert parse_order_count_info(reply.ext_fields["orderCountInfo"]) == {("0", "0"): 0}
    retried = await pop(h, "FifoT", queue_id=0, max_nums=2, order=True, attempt="a1")
    assert bodies(popped(retried)) == [b"m2", b"m3"]
    # not acked: after the invisible time the same messages come again, in order
    again_reply = None
    deadline = time.monotonic() + 10
    while again_reply is None or again_reply.code != ResponseCode.SUCCESS:
        assert time.monotonic() < deadline
        again_reply = await pop(h, "FifoT", queue_id=0, max_nums=3, order=True, poll_ms=500)
    assert bodies(popped(again_reply)) == [b"m2", b"m3", b"m4"]
    assert parse_order_count_info(again_reply.ext_fields["orderCountInfo"]) == {("0", "0"): 1}


async def test_bad_handles_get_clear_error_codes(h):
    await send_n(h, "BadT", 1)
    (m,) = popped(await pop(h, "BadT"))
    assert (await ack(h, m, extra="garbage")).code == ResponseCode.INVALID_PARAMETER
    fields = m.properties["POP_CK"].split(" ")
    other_broker = " ".join([*fields[:5], "broker-zz", *fields[6:]])
    assert (await ack(h, m, extra=other_broker)).code == ResponseCode.INVALID_PARAMETER
    bad_qid = " ".join([*fields[:3], "77", *fields[4:]])
    assert (await ack(h, m, extra=bad_qid)).code == ResponseCode.INVALID_PARAMETER
    reply = await h.call(
        RequestCode.ACK_MESSAGE,
        {
            "consumerGroup": GROUP,
            "topic": "BadT",
            "queueId": 0,
            "offset": 99,
            "extraInfo": m.properties["POP_CK"],
        },
    )
    assert reply.code == ResponseCode.NO_MESSAGE
    unknown = {**{"consumerGroup": GROUP, "queueId": 0, "offset": 0}, "topic": "NoSuchTopic"}
    reply = await h.call(RequestCode.ACK_MESSAGE, {**unknown, "extraInfo": m.properties["POP_CK"]})
    assert reply.code == ResponseCode.TOPIC_NOT_EXIST
    assert (await h.call(RequestCode.BATCH_ACK_MESSAGE)).code == ResponseCode.NO_MESSAGE
    reply = await h.call(RequestCode.BATCH_ACK_MESSAGE, body=b"{not json")
    assert reply.code == ResponseCode.INVALID_PARAMETER
    assert (await pop(h, "BadT", max_nums=33)).code == ResponseCode.INVALID_PARAMETER
    # over 12 h a checkpoint would hold its revive queue back for that long
    too_long = await pop(h, "BadT", invisible_ms=12 * 3600 * 1000 + 1)
    assert too_long.code == ResponseCode.INVALID_PARAMETER and "invisibleTime" in too_long.remark
    assert (await pop(h, "NoSuchTopic")).code == ResponseCode.TOPIC_NOT_EXIST
    # the good handle still works after all that
    assert (await ack(h, m)).code == ResponseCode.SUCCESS


async def test_max_reconsume_times_sends_to_dlq(h):
    group = "DlqGroup"
    cfg = json.dumps({"groupName": group, "retryMaxTimes": 1}).encode()
    reply = await h.call(RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body=cfg)
    assert reply.code == ResponseCode.SUCCESS
    await send_n(h, "DlqT", 1)
    assert bodies(popped(await pop(h, "DlqT", group=group, invisible_ms=300))) == [b"m0"]
    # redelivered once (reconsume 1 = the maximum) ...
    again = await pop_until(h, "DlqT", 1, group=group, invisible_ms=300)
    assert again[0].reconsume_times == 1
    # ... then it goes to the group's DLQ instead of coming back
    store = h.broker.store
    await wait_until(lambda: store.max_offset(f"%DLQ%{group}", 0) == 1, timeout=10)
    assert (await pop(h, "DlqT", group=group, poll_ms=300)).code == ResponseCode.PULL_NOT_FOUND
    assert h.broker.pop.revive.dead_lettered == 1


async def test_checkpoints_survive_a_restart(h):
    """A clean restart loses nothing: popped-unacked comes back, acked does not."""
    await send_n(h, "RestartT", 2)
    msgs = popped(await pop(h, "RestartT", invisible_ms=1500))
    assert (await ack(h, msgs[0])).code == ResponseCode.SUCCESS
    await h.restart()
    assert h.broker.pop.revive.pending_count() == 1  # rebuilt from the revive topic
    assert bodies(await pop_until(h, "RestartT", 1)) == [b"m1"]


async def test_pop_progress_is_saved_only_after_the_checkpoints_it_covers(tmp_path):
    # ASYNC_FLUSH: a pop moves the group's offset past messages whose checkpoint is only
    # in the page cache; saving that offset first, a power loss would keep the offset,
    # lose the checkpoint, and the messages would never come back
    h = Harness(tmp_path, flushIntervalCommitLog="60000")  # no background flush
    await h.start()
    try:
        await send_n(h, "SavedT", 2)
        popped(await pop(h, "SavedT"))
        store = h.broker.store.store
        end = store.commitlog.wrote
        assert store.commitlog.flushed < end
        seen = []
        await h.broker._after_log_durable(lambda: seen.append(store.commitlog.flushed))
        assert seen == [end]
    finally:
        await h.close()


async def test_a_reviver_started_while_its_last_stop_finishes_keeps_its_queues(h):
    revive = h.broker.pop.revive
    assert revive.running
    stopping = asyncio.ensure_future(revive.stop())
    await asyncio.sleep(0)  # the stop runs up to waiting for its cancelled task
    revive.start()  # leadership back at once
    await stopping
    assert revive.running and len(revive._queues) == revive.queue_num
    # and it still revives
    await send_n(h, "FlapReviveT", 1)
    popped(await pop(h, "FlapReviveT", invisible_ms=300))
    again = await pop_until(h, "FlapReviveT", 1)
    assert bodies(again) == [b"m0"] and again[0].reconsume_times == 1


async def test_the_revive_replay_yields_to_the_loop_and_pops_wait_for_it(h):
    # after a failover the replay may read hours of records: it must not hold the loop
    # (a DLedger member's heartbeats run there), and no pop is served before it is done
    from ledgermq.broker.pop.records import CheckPoint

    pop_service = h.broker.pop
    now = h.broker.clock_ms()
    for i in range(5 * 64):  # five read batches in revive queue 0, due in an hour
        ck = CheckPoint("ReplayT", GROUP, 0, i, now + i, 3_600_000, [0], "broker-a")
        assert pop_service.put_record(0, ck).ok
    revive = pop_service.revive
    await revive.stop()
    revive.start()
    assert not pop_service.serving
    turns = 0
    while not revive.ready:
        turns += 1  # the loop came back to us while the replay was running
        await asyncio.sleep(0)
    assert turns >= 4 and pop_service.serving
    assert revive.pending_count() == 5 * 64
