"""Pure parts of transactional messages: record building, op bodies, progress."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ledgermq.broker.topics import TRANS_CHECK_MAX_TIME_TOPIC, TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC
from ledgermq.broker.transaction import records as r
from ledgermq.broker.transaction.progress import TransactionProgress
from ledgermq.common.message import MessageExt
from ledgermq.store.message_store import MessageToStore


def sent(**props: str) -> MessageToStore:
    return MessageToStore(
        topic="Orders",
        queue_id=3,
        body=b"body",
        flag=7,
        properties={"TRAN_MSG": "true", "PGROUP": "pg", "UNIQ_KEY": "U1", "TAGS": "a", **props},
        sys_flag=0x4 | 0x1,
        born_timestamp=1000,
        properties_text="stale",
    )


def stored(msg: MessageToStore, queue_offset: int, phy: int) -> MessageExt:
    return MessageExt(
        topic=msg.topic,
        body=msg.body,
        flag=msg.flag,
        properties=dict(msg.properties),
        queue_id=msg.queue_id,
        queue_offset=queue_offset,
        commit_log_offset=phy,
        sys_flag=msg.sys_flag,
        born_timestamp=msg.born_timestamp,
    )


def test_half_keeps_the_destination_and_drops_delay_and_tx_type():
    half = r.to_half(sent(DELAY="3"), "pg")
    assert (half.topic, half.queue_id) == (TRANS_HALF_TOPIC, 0)
    assert half.properties["REAL_TOPIC"] == "Orders" and half.properties["REAL_QID"] == "3"
    assert "DELAY" not in half.properties
    assert half.sys_flag == 0x1  # compression kept, prepared bit cleared
    assert half.properties_text is None


def test_half_gets_the_header_group_when_the_producer_left_pgroup_out():
    msg = sent()
    del msg.properties["PGROUP"]
    assert r.to_half(msg, "from-header").properties["PGROUP"] == "from-header"


def test_commit_restores_the_original_message():
    half = stored(r.to_half(sent(), "pg"), 5, 4096)
    copy = stored(r.check_copy(half, 2), 9, 8192)
    for source in (half, copy):
        commit = r.commit_from_half(source)
        assert (commit.topic, commit.queue_id) == ("Orders", 3)
        # TRAN_MSG stays (as upstream): consumers take the transaction id from it
        assert commit.properties == {
            "PGROUP": "pg",
            "UNIQ_KEY": "U1",
            "TAGS": "a",
            "TRAN_MSG": "true",
        }
        assert commit.sys_flag == 0x8 | 0x1
        assert commit.prepared_transaction_offset == source.commit_log_offset
        assert (commit.body, commit.flag, commit.born_timestamp) == (b"body", 7, 1000)


def test_check_copies_count_and_remember_the_first_offset():
    half = stored(r.to_half(sent(), "pg"), 5, 4096)
    assert r.check_times(half) == 0 and r.chain_root(half) == 5
    first = stored(r.check_copy(half, r.check_times(half) + 1), 9, 8192)
    second = stored(r.check_copy(first, r.check_times(first) + 1), 14, 9000)
    assert (first.topic, first.queue_id) == (TRANS_HALF_TOPIC, 0)
    assert r.check_times(second) == 2
    assert r.chain_root(first) == r.chain_root(second) == 5
    parked = r.parked(second)
    assert (parked.topic, parked.queue_id) == (TRANS_CHECK_MAX_TIME_TOPIC, 0)
    assert parked.properties["TRANSACTION_CHECK_TIMES"] == "2"


def test_immunity_is_never_below_the_timeout():
    half = stored(r.to_half(sent(), "pg"), 0, 0)
    assert r.immunity_ms(half, 6000) == (6000, False)
    half.properties["CHECK_IMMUNITY_TIME_IN_SECONDS"] = "60"
    assert r.immunity_ms(half, 6000) == (60_000, True)
    half.properties["CHECK_IMMUNITY_TIME_IN_SECONDS"] = "1"
    assert r.immunity_ms(half, 6000) == (6000, True)
    half.properties["CHECK_IMMUNITY_TIME_IN_SECONDS"] = "soon"
    assert r.immunity_ms(half, 6000) == (6000, False)


def test_op_record_layout():
    op = r.op_record([4, 17], ("10.0.0.1", 10911), 55)
    assert (op.topic, op.queue_id, op.body) == (TRANS_OP_HALF_TOPIC, 0, b"4,17")
    assert op.properties == {"TAGS": "d"}
    as_read = MessageExt(topic=op.topic, body=op.body, properties=op.properties)
    assert r.op_offsets_of(as_read) == [4, 17]
    as_read.properties["TAGS"] = "x"
    assert r.op_offsets_of(as_read) == []


@given(st.lists(st.integers(min_value=0, max_value=2**62), max_size=20))
def test_op_body_round_trips(offsets):
    assert r.decode_op_body(r.encode_op_body(offsets)) == offsets


@given(st.binary(max_size=64))
def test_op_body_decoding_never_raises(junk):
    assert all(o >= 0 for o in r.decode_op_body(junk))


def test_amend_half_reply():
    half = r.to_half(sent(), "pg")
    fields = {"queueId": "0", "queueOffset": "5", "msgId": "X"}
    r.amend_half_reply(half, fields)
    assert fields == {"queueId": "3", "queueOffset": "5", "msgId": "X", "transactionId": "U1"}
    refused: dict[str, str] = {}
    r.amend_half_reply(half, refused)
    assert "queueId" not in refused


# --- progress ------------------------------------------------------------------------------
def test_floors_move_only_past_what_is_settled_and_read():
    p = TransactionProgress(half_floor=0, op_floor=0)
    p.note_op(0, [1])  # settles half 1
    p.note_op(1, [5])  # settles half 5
    p.loaded_up_to(2)
    assert p.is_settled(1) and p.is_settled(5) and not p.is_settled(0)
    p.passed(3)  # the checker handled 0, 1, 2
    assert p.commit_point() == (3, 1)  # op 1 still settles half 5 >= 3
    assert not p.is_settled(1) and p.is_settled(5)
    p.passed(6)
    assert p.commit_point() == (6, 2)
    assert p.settled == {} and p.op_reach == {}


def test_op_floor_stops_at_records_not_read_yet():
    p = TransactionProgress(half_floor=0, op_floor=0)
    p.note_op(1, [0])  # written just now, op 0 not read back yet
    p.passed(10)
    assert p.commit_point() == (10, 0)
    p.note_op(0, [2])
    p.loaded_up_to(2)
    assert p.commit_point() == (10, 2)


def test_stale_op_records_are_ignored_and_gone_ones_skipped():
    p = TransactionProgress(half_floor=4, op_floor=3)
    p.note_op(2, [9])
    assert not p.is_settled(9)
    p.note_op(5, [9])
    p.skip_ops_to(6)
    assert p.op_floor == 6 and not p.is_settled(9) and p.op_loaded == 6


def test_chains_and_pending():
    p = TransactionProgress(half_floor=0, op_floor=0)
    p.passed(1)  # original at 0 copied to 4
    p.note_copy(0, 4)
    assert p.chain(0, 0) == [0, 4]
    assert p.chain(4, 0) == [0, 4]
    assert p.still_pending(p.chain(0, 0))
    p.passed(5)  # the copy was handled as well (settled, copied again or parked)
    p.commit_point()
    assert p.chain(0, 0) == [0]
    assert not p.still_pending(p.chain(0, 0))
    p.note_copy(0, 2)  # below the floor: nothing to remember
    assert p.copies == {}


@given(
    st.lists(st.lists(st.integers(min_value=0, max_value=40), max_size=4), max_size=15),
    st.integers(min_value=0, max_value=45),
)
def test_commit_point_never_forgets_an_op_that_an_unpassed_offset_needs(ops, cursor):
    p = TransactionProgress(half_floor=0, op_floor=0)
    for op_offset, halves in enumerate(ops):
        p.note_op(op_offset, halves)
    p.loaded_up_to(len(ops))
    p.passed(cursor)
    half_floor, op_floor = p.commit_point()
    assert half_floor == cursor
    needed = {h for halves in ops for h in halves if h >= cursor}
    assert all(p.is_settled(h) for h in needed)
    # and the op floor passed only records that settle nothing at or above the cursor
    assert all(max(ops[o], default=-1) < cursor for o in range(op_floor))
