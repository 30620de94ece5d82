"""The proxy's receipt handle codec and the consume status rules (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgermq.common.pop_handle import ExtraInfo
from ledgermq.proxy.activities.consume import (
    PollingLimits,
    check_invisible_ms,
    combined_status,
    polling_ms,
)
from ledgermq.proxy.receipt import ReceiptHandle, ReceiptHandleError
from ledgermq.proxy.status import Code, ProxyError, from_remoting
from ledgermq.remoting.codes import ResponseCode

longs = st.integers(min_value=0, max_value=(1 << 63) - 1)
ints = st.integers(min_value=0, max_value=(1 << 31) - 1)
broker_names = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
)
handles = st.builds(
    ReceiptHandle,
    st.builds(
        ExtraInfo, longs, longs, longs, ints, st.sampled_from("012"), broker_names, ints, longs
    ),
    st.one_of(st.just(-1), longs),
)


@given(handles)
def test_round_trip(handle):
    text = handle.encode()
    assert ReceiptHandle.decode(text) == handle
    assert " " in text and text.isprintable()


def test_the_java_proxy_layout():
    """POP_CK's eight fields, then the commit log offset: what the Java proxy hands out."""
    handle = ReceiptHandle.decode("0 1700000000000 60000 3 0 broker-a 2 17 123456")
    assert handle.broker_name == "broker-a" and handle.queue_id == 2
    assert handle.queue_offset == 17 and handle.commit_log_offset == 123456
    assert handle.expires_at_ms == 1700000060000
    # without the commit log offset (a broker's POP_CK as is): usable, no DLQ forward
    assert ReceiptHandle.decode("0 1 2 3 0 b 2 17").commit_log_offset == -1


@given(st.text(max_size=300))
def test_garbage_is_a_clear_error_never_a_crash(text):
    try:
        handle = ReceiptHandle.decode(text)
    except ReceiptHandleError as exc:
        assert str(exc)
    else:
        assert ReceiptHandle.decode(handle.encode()) == handle


@given(handles, st.data())
def test_a_garbled_field_is_refused(handle, data):
    fields = handle.encode().split(" ")
    numeric = [i for i in (0, 1, 2, 3, 6, 7, 8)]
    index = data.draw(st.sampled_from(numeric))
    fields[index] = data.draw(st.sampled_from(["x", "", "1.5", "+1", "٣", "9" * 30]))
    with pytest.raises(ReceiptHandleError):
        ReceiptHandle.decode(" ".join(fields))


@pytest.mark.parametrize(
    "text",
    ["", "r", "0 1 2 3 0 b 2", "0 1 2 3 9 b 2 17", "0 1 2 3 0  2 17", "0 1 2 3 0 b 2 17 5 6"],
)
def test_refused_with_a_readable_message(text):
    with pytest.raises(ReceiptHandleError, match="receipt handle"):
        ReceiptHandle.decode(text)


def test_renewed_keeps_the_message_and_replaces_the_timing():
    normal = ReceiptHandle.decode("10 1000 30000 3 1 b 2 17 99")
    new = normal.renewed(5000, 60000, 4)
    assert new.info.ck_queue_offset == 17  # a one-message checkpoint at the offset
    assert (new.info.pop_time, new.info.invisible_time, new.info.revive_qid) == (5000, 60000, 4)
    assert (new.queue_offset, new.commit_log_offset, new.info.topic_type) == (17, 99, "1")
    orderly = ReceiptHandle.decode("10 1000 30000 999 0 b 2 17 99")
    assert orderly.renewed(5000, 1000, 999).info.ck_queue_offset == 10


LIMITS = PollingLimits(min_ms=5_000, max_ms=20_000, request_timeout_ms=3_000)


@pytest.mark.parametrize(
    ("requested", "remaining", "expected"),
    [
        (10_000, 13_000, 10_000),  # as asked
        (1_000, 30_000, 5_000),  # raised to the minimum
        (60_000, 90_000, 20_000),  # capped at the maximum
        (20_000, 8_000, 8_000),  # never past the client's deadline
        (None, 13_000, 11_500),  # no long poll asked: deadline minus half a request
        (None, None, 20_000),
    ],
)
def test_long_polling_is_clamped(requested, remaining, expected):
    assert polling_ms(requested, remaining, LIMITS) == expected


def test_a_deadline_shorter_than_the_minimum_poll_is_refused():
    with pytest.raises(ProxyError) as info:
        polling_ms(10_000, 4_000, LIMITS)
    assert info.value.code == Code.ILLEGAL_POLLING_TIME


def test_invisible_time_limits():
    assert check_invisible_ms(10_000, 10_000, 43_200_000) == 10_000
    for bad in (9_999, 43_200_001):
        with pytest.raises(ProxyError) as info:
            check_invisible_ms(bad, 10_000, 43_200_000)
        assert info.value.code == Code.ILLEGAL_INVISIBLE_TIME


def test_batch_status_and_remoting_mapping():
    assert combined_status([Code.OK, Code.OK]).code == Code.OK
    assert combined_status([Code.OK, Code.INVALID_RECEIPT_HANDLE]).code == Code.MULTIPLE_RESULTS
    assert combined_status([Code.INVALID_RECEIPT_HANDLE]).code == Code.INVALID_RECEIPT_HANDLE
    assert combined_status([]).code == Code.BAD_REQUEST
    assert from_remoting(ResponseCode.TOPIC_NOT_EXIST) == Code.TOPIC_NOT_FOUND
    assert from_remoting(ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST) == Code.CONSUMER_GROUP_NOT_FOUND
    assert from_remoting(ResponseCode.FLUSH_DISK_TIMEOUT) == Code.MASTER_PERSISTENCE_TIMEOUT
    assert from_remoting(12345) == Code.INTERNAL_SERVER_ERROR
