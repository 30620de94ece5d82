"""fastjson's non-standard JSON forms: unquoted Long keys, MessageQueue object keys, and
standard JSON (PROTOCOL.md section 3.5)."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgermq.common import fastjson as jsonbody  # the client's loads/dumps view
from ledgermq.common.fastjson import (
    JsonFormatError,
    decode,
    encode,
    loads,
    long_keys,
    mq_keyed_json,
)
from ledgermq.common.message import MessageQueue


def test_int_keys_unquoted_in_legacy_form():
    obj = {"brokerAddrs": {1: "b:2", 0: "a:1"}, "cluster": "C"}
    assert encode(obj, standard=False) == b'{"brokerAddrs":{0:"a:1",1:"b:2"},"cluster":"C"}'
    assert encode(obj) == b'{"brokerAddrs":{"0":"a:1","1":"b:2"},"cluster":"C"}'


def test_keys_sorted_and_none_members_omitted():
    assert encode({"b": 1, "a": None, "c": [None, True]}) == b'{"b":1,"c":[null,true]}'
    assert encode({10: "x", 2: "y", -1: "z"}, standard=False) == b'{-1:"z",2:"y",10:"x"}'
    assert encode({"s": {"b", "a"}}) == b'{"s":["a","b"]}'


def test_non_ascii_escaped_only_in_standard_form():
    assert encode({"k": "é"}) == b'{"k":"\\u00e9"}'
    assert encode({"k": "é"}, standard=False) == '{"k":"é"}'.encode()


def test_to_json_objects():
    class Thing:
        def to_json(self):
            return {"x": 1}

    assert encode([Thing()]) == b'[{"x":1}]'
    with pytest.raises(JsonFormatError):
        encode(object())
    with pytest.raises(JsonFormatError):
        encode(float("nan"))


def test_lenient_parse_of_both_forms():
    legacy = b'{"brokerAddrs":{0:"a:1", 1 : "b:2"},"n":-3,"f":1.5e2,"ok":true,"z":null}'
    assert decode(legacy) == {
        "brokerAddrs": {0: "a:1", 1: "b:2"},
        "n": -3,
        "f": 150.0,
        "ok": True,
        "z": None,
    }
    assert decode('{"brokerAddrs":{"0":"a:1"}}') == {"brokerAddrs": {"0": "a:1"}}
    # fastjson also accepts bare identifier keys.
    assert decode('{topic:"T", list:[1, {2:[]}]}') == {"topic": "T", "list": [1, {2: []}]}
    assert decode('{0:"a\\"\\u00e9"}') == {0: 'a"é'}


@pytest.mark.parametrize(
    "bad",
    [b"", b"{", b'{0:"a"', b'{0 "a"}', b"{0:}", b'{0:"a"} x', b"[1,]", b"\xff", b"{:1}"],
)
def test_malformed_bodies_raise_a_clear_error(bad):
    with pytest.raises(JsonFormatError):
        decode(bad)


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(JsonFormatError):
        decode("{0:" * 5000 + "1" + "}" * 5000)


def test_long_keys():
    assert long_keys({"0": "a", 1: "b"}) == {0: "a", 1: "b"}
    assert long_keys(None) == {}
    with pytest.raises(JsonFormatError):
        long_keys({"x": 1})


# --- MessageQueue object keys (ResetOffsetBody, ConsumeStats, ConsumerRunningInfo) -------
def test_jsonbody_messagequeue_keys_round_trip():
    mq = MessageQueue("T", "b", 1)
    raw = jsonbody.dumps({"offsetTable": {mq: 42}})
    assert raw.startswith(b'{"offsetTable":{{')
    assert jsonbody.loads(raw) == {"offsetTable": {mq: 42}}
    fast = b'{"offsetTable":{{"brokerName":"b","queueId":1,"topic":"T"}:42},x:1,-3:[1.5,null]}'
    assert jsonbody.loads(fast) == {"offsetTable": {mq: 42}, "x": 1, "-3": [1.5, None]}


def test_mq_keyed_json_uses_object_keys_like_fastjson():
    text = mq_keyed_json([(MessageQueue("T", "b", 1), {"maxOffset": 3})])
    assert text == '{{"brokerName":"b","queueId":1,"topic":"T"}:{"maxOffset":3}}'


def test_client_view_keeps_numeric_keys_as_strings():
    assert loads(b"") is None and loads("  ") is None
    assert loads('{0:"a:1",1:"b:2"}') == {"0": "a:1", "1": "b:2"}
    assert decode('{0:"a:1",1:"b:2"}') == {0: "a:1", 1: "b:2"}
    assert long_keys(loads('{0:"a:1"}')) == long_keys(decode('{0:"a:1"}')) == {0: "a:1"}


def test_single_quotes_and_non_queue_object_keys():
    assert decode("{'k':'v', n:1}") == {"k": "v", "n": 1}
    assert loads('{{"a":1}:2}') == {(("a", 1),): 2}
    with pytest.raises(JsonFormatError):
        loads("{'unterminated:1}")
    with pytest.raises(JsonFormatError):
        loads('{{"brokerName":"b","queueId":"x","topic":"T"}:1}')


def test_queue_keys_sort_in_queue_order():
    mqs = {MessageQueue("T", "b", i): i for i in (10, 2, 1)}
    assert decode(encode(mqs)) == mqs
    assert [q.queue_id for q in decode(encode(mqs))] == [1, 2, 10]


def test_client_view_depth_limit():
    with pytest.raises(JsonFormatError):
        loads("{x:" * 5000 + "1" + "}" * 5000)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
        | st.dictionaries(
            st.integers(min_value=-(2**63), max_value=2**63 - 1), children, max_size=4
        )
    ),
    max_leaves=20,
)


def _strip_none_members(obj):
    if isinstance(obj, dict):
        return {k: _strip_none_members(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_strip_none_members(v) for v in obj]
    return obj


def _quote_keys(obj):
    if isinstance(obj, dict):
        return {str(k): _quote_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_quote_keys(v) for v in obj]
    return obj


@given(values)
def test_round_trip_legacy_form(obj):
    assert decode(encode(obj, standard=False)) == _strip_none_members(obj)


@given(values)
def test_standard_form_is_standard_json(obj):
    data = encode(obj, standard=True)
    expected = _quote_keys(_strip_none_members(obj))
    assert json.loads(data) == expected
    assert decode(data) == expected
