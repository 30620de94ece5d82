import socket
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgermq.common.message import (
    MAGIC_V1,
    MAGIC_V2,
    SYSFLAG_BORNHOST_V6,
    SYSFLAG_STOREHOST_V6,
    MessageDecodeError,
    MessageExt,
    UniqueIdGenerator,
    decode_batch,
    decode_for_dispatch,
    decode_properties,
    decode_record,
    decode_records,
    encode_batch,
    encode_properties,
    encode_record,
    java_string_hash,
    offset_msg_id,
    offset_msg_id_prefix,
    parse_offset_msg_id,
    record_physical_offset,
    stamp_record,
)


def reference_record(m: MessageExt, sys_flag: int) -> bytes:
    """Straight transcription of PROTOCOL.md §3.1, independent of the codec."""

    def host(h, v6):
        raw = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, h[0])
        return raw + struct.pack(">i", h[1])

    topic = m.topic.encode()
    props = "".join(f"{k}\x01{v}\x02" for k, v in m.properties.items()).encode()
    v2 = len(topic) > 127
    out = b"".join(
        [
            struct.pack(">I", MAGIC_V2 if v2 else MAGIC_V1),
            struct.pack(">i", zlib.crc32(m.body) & 0x7FFFFFFF),
            struct.pack(">ii", m.queue_id, m.flag),
            struct.pack(">qq", m.queue_offset, m.commit_log_offset),
            struct.pack(">iq", sys_flag, m.born_timestamp),
            host(m.born_host, sys_flag & 0x10),
            struct.pack(">q", m.store_timestamp),
            host(m.store_host, sys_flag & 0x20),
            struct.pack(">iq", m.reconsume_times, m.prepared_transaction_offset),
            struct.pack(">i", len(m.body)) + m.body,
            (struct.pack(">h", len(topic)) if v2 else bytes([len(topic)])) + topic,
            struct.pack(">h", len(props)) + props,
        ]
    )
    return struct.pack(">i", len(out) + 4) + out


def sample(**kw) -> MessageExt:
    base = dict(
        topic="TopicTest",
        body=b"Hello RocketMQ",
        flag=3,
        properties={"TAGS": "TagA", "KEYS": "k1 k2", "UNIQ_KEY": "ABC"},
        queue_id=2,
        queue_offset=77,
        commit_log_offset=123456,
        sys_flag=0,
        born_timestamp=1_700_000_000_123,
        born_host=("192.168.1.20", 54321),
        store_timestamp=1_700_000_000_456,
        store_host=("10.0.0.1", 10911),
        reconsume_times=1,
        prepared_transaction_offset=9,
    )
    base.update(kw)
    return MessageExt(**base)


def test_v1_ipv4_byte_exact_and_round_trip():
    m = sample()
    raw = encode_record(m)
    assert raw == reference_record(m, 0)
    assert len(raw) == 91 + len(m.body) + len(m.topic) + len(encode_properties(m.properties))
    d, end = decode_record(raw, verify_crc=True)
    assert end == len(raw)
    assert d.store_size == len(raw)
    assert d.body_crc == zlib.crc32(m.body) & 0x7FFFFFFF
    d.body_crc = m.body_crc = 0
    d.store_size = m.store_size = 0
    assert d == m
    assert d.tags == "TagA" and d.keys == ["k1", "k2"] and d.msg_id == "ABC"


def test_v2_topic_over_127_bytes():
    m = sample(topic="T" * 200)
    raw = encode_record(m)
    assert struct.unpack_from(">I", raw, 4)[0] == MAGIC_V2
    assert raw == reference_record(m, 0)
    assert len(raw) == 91 + 1 + len(m.body) + 200 + len(encode_properties(m.properties))
    assert decode_record(raw)[0].topic == "T" * 200
    short = encode_record(sample(topic="T" * 127))
    assert struct.unpack_from(">I", short, 4)[0] == MAGIC_V1


@pytest.mark.parametrize(
    ("born", "store", "flags"),
    [
        ("::1", "10.0.0.1", SYSFLAG_BORNHOST_V6),
        ("10.0.0.9", "fe80::1", SYSFLAG_STOREHOST_V6),
        ("2001:db8::5", "2001:db8::6", SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6),
    ],
)
def test_ipv6_hosts(born, store, flags):
    m = sample(born_host=(born, 1), store_host=(store, 2))
    raw = encode_record(m)
    assert raw == reference_record(m, flags)
    extra = 12 * bin(flags).count("1")
    assert len(raw) == 91 + extra + len(m.body) + len(m.topic) + len(
        encode_properties(m.properties)
    )
    d = decode_record(raw)[0]
    assert d.sys_flag == flags
    assert d.born_host == (born, 1) and d.store_host == (store, 2)
    assert d.offset_msg_id == offset_msg_id((store, 2), m.commit_log_offset)


def test_a_dispatch_decode_skips_only_the_host_addresses():
    # what a DLedger follower decodes per applied record: every field but the two
    # addresses (and the body, when asked) must match a full decode
    m = sample(born_host=("2001:db8::5", 7), store_host=("10.1.2.3", 9))
    raw = encode_record(m)
    full = decode_record(raw)[0]
    light = decode_record(raw, decode_body=False, decode_hosts=False)[0]
    assert light.born_host == ("", 7) and light.store_host == ("", 9) and light.body == b""
    for name in ("topic", "queue_id", "queue_offset", "commit_log_offset", "properties",
                 "store_timestamp", "sys_flag", "flag", "reconsume_times"):  # fmt: skip
        assert getattr(light, name) == getattr(full, name), name


_DISPATCH_FIELDS = ("topic", "queue_id", "queue_offset", "commit_log_offset", "properties",
                    "store_timestamp", "sys_flag", "store_size")  # fmt: skip


@settings(max_examples=200)
@given(
    topic=st.text(min_size=1, max_size=300),
    body=st.binary(max_size=64),
    born=st.sampled_from(["10.0.0.9", "2001:db8::5"]),
    store=st.sampled_from(["10.1.2.3", "fe80::1"]),
    props=st.dictionaries(
        st.text(alphabet="ABCKEYS_", min_size=1, max_size=8),
        st.text("xyz 0", max_size=8),
        max_size=4,
    ),
)
def test_the_dispatch_decoder_reads_what_dispatch_needs(topic, body, born, store, props):
    # V1 and V2 (topics over 127 bytes), every host family, with and without properties
    m = sample(topic=topic, body=body, properties=props, born_host=(born, 1),
               store_host=(store, 2))  # fmt: skip
    raw = encode_record(m)
    full = decode_record(raw)[0]
    light = decode_for_dispatch(raw)
    for name in _DISPATCH_FIELDS:
        assert getattr(light, name) == getattr(full, name), name
    assert light.body == b""


@settings(max_examples=500)
@given(st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 400))
def test_the_dispatch_decoder_refuses_damage_with_a_decode_error(where, value, cut):
    raw = bytearray(encode_record(sample(born_host=("::1", 3), topic="T" * 130)))
    raw[where % len(raw)] = value
    for data in (bytes(raw), bytes(raw[: len(raw) - 1 - cut % len(raw)])):
        try:
            got = decode_for_dispatch(data)
        except MessageDecodeError:
            continue
        # whatever decodes must still be self-consistent with its own size
        assert got.store_size == len(data)


def test_physical_offset_is_read_without_decoding_and_short_input_is_an_error():
    m = sample()
    raw = encode_record(m)
    assert record_physical_offset(raw) == m.commit_log_offset
    assert record_physical_offset(b"xx" + raw, 2) == m.commit_log_offset
    with pytest.raises(MessageDecodeError, match="physical offset"):
        record_physical_offset(raw[:30])


def test_stamp_record_and_concatenated_records():
    m = sample(born_host=("::1", 5))
    buf = bytearray(encode_record(m) + encode_record(sample(queue_offset=1)))
    stamp_record(buf, 0, queue_offset=5, physical_offset=6, store_timestamp=7)
    msgs = decode_records(bytes(buf))
    assert [(x.queue_offset, x.commit_log_offset, x.store_timestamp) for x in msgs[:1]] == [
        (5, 6, 7)
    ]
    assert msgs[0].born_timestamp == m.born_timestamp  # neighbours untouched
    assert msgs[1].queue_offset == 1


def test_decode_errors_are_clear():
    raw = encode_record(sample())
    for cut in (0, 3, 7, 50, len(raw) - 1):
        with pytest.raises(MessageDecodeError):
            decode_record(raw[:cut])
    flipped = bytearray(raw)
    flipped[90] ^= 1  # inside the body
    decode_record(bytes(flipped))  # CRC not checked by default
    with pytest.raises(MessageDecodeError, match="CRC"):
        decode_record(bytes(flipped), verify_crc=True)
    with pytest.raises(MessageDecodeError, match="magic"):
        decode_record(b"\x00\x00\x00\x60" + b"\x00" * 92)
    with pytest.raises(MessageDecodeError):
        decode_records(raw + raw[:10])


@settings(max_examples=500)
@given(st.binary(max_size=400), st.integers(0, 10))
def test_fuzz_decode_random_bytes(data, pos):
    try:
        decode_records(data)
    except MessageDecodeError:
        pass
    try:
        decode_record(data, pos, verify_crc=True)
    except MessageDecodeError:
        pass


@settings(max_examples=500)
@given(st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 400))
def test_fuzz_decode_mutated_record(where, value, cut):
    raw = bytearray(encode_record(sample(born_host=("::1", 3))))
    raw[where % len(raw)] = value
    try:
        decode_records(bytes(raw[: len(raw) - cut % len(raw)]))
    except MessageDecodeError:
        pass
    try:
        decode_batch(bytes(raw))
    except MessageDecodeError:
        pass


_text = st.text(
    alphabet=st.characters(blacklist_characters="\x01\x02", blacklist_categories=("Cs",)),
    max_size=20,
)


@given(st.dictionaries(_text.filter(bool), _text, max_size=8))
def test_properties_round_trip(props):
    props = {k: v for k, v in props.items() if not k.startswith("__RMQ.TRANSIENT.")}
    text = encode_properties(props)
    assert decode_properties(text) == props
    if props:
        assert text.endswith("\x02")


def test_properties_drop_transient_and_tolerate_junk():
    assert encode_properties({"a": "1", "__RMQ.TRANSIENT.x": "y"}) == "a\x011\x02"
    assert decode_properties("a\x011\x02junk\x02b\x01\x02") == {"a": "1", "b": ""}
    assert decode_properties("") == {}


def test_java_string_hash_known_values():
    assert java_string_hash("TagA") == 2598919
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert java_string_hash("\U0001f600") == 0xD83D * 31 + 0xDE00  # two UTF-16 units
    assert java_string_hash("é") == 0xE9


def test_offset_msg_id():
    mid = offset_msg_id(("10.0.0.1", 10911), 0x1234)
    assert mid == "0A000001" + "00002A9F" + "0000000000001234"
    assert parse_offset_msg_id(mid) == ("10.0.0.1", 10911, 0x1234)
    mid6 = offset_msg_id(("2001:db8::1", 1), 5)
    assert len(mid6) == 56
    assert parse_offset_msg_id(mid6) == ("2001:db8::1", 1, 5)
    for bad in ("XYZ", "00", "0A00000100002A9F00000000000012"):
        with pytest.raises(MessageDecodeError):
            parse_offset_msg_id(bad)


def test_batch_round_trip_and_layout():
    items = [(b"a", 0, {"TAGS": "x"}), (b"", 7, {}), (b"z" * 300, 1, {"KEYS": "k"})]
    data = encode_batch(items)
    first = struct.unpack_from(">iiiii", data, 0)
    assert first == (22 + 1 + len("TAGS\x01x\x02"), 0, 0, 0, 1)
    decoded = decode_batch(data)
    assert [(i.body, i.flag, i.properties) for i in decoded] == items
    # the text as sent is kept for the broker to store without re-encoding
    assert [i.properties_text for i in decoded] == ["TAGS\x01x\x02", "", "KEYS\x01k\x02"]
    with pytest.raises(MessageDecodeError):
        decode_batch(data[:-1])
    with pytest.raises(MessageDecodeError):
        decode_batch(b"\x00\x00\x00\x05" + b"\x00" * 30)


def test_unique_id_generator():
    now = [1_700_000_000_000]
    g = UniqueIdGenerator("10.0.0.1", pid=0x1234, clock=lambda: now[0], instance_hash=0xCAFE)
    a, b = g.next_id(), g.next_id()
    assert len(a) == 32 and a != b
    assert a.startswith("0A000001" + "1234" + "0000CAFE")
    assert a == a.upper()
    # 2023-11-14 22:13:20 UTC: ms since 2023-11-01.
    since = 1_700_000_000_000 - 1_698_796_800_000
    assert a[20:28] == f"{since:08X}" and a[28:] == "0001" and b[28:] == "0002"
    now[0] += 20 * 24 * 3600 * 1000  # next month: time part resets near zero
    c = g.next_id()
    assert int(c[20:28], 16) < since
    g2 = UniqueIdGenerator("::1", pid=1, clock=lambda: now[0])
    assert len(g2.next_id()) == 56


def test_offset_msg_id_prefix_matches_full_encoding():
    for host in (("10.0.0.1", 10911), ("2001:db8::1", 1)):
        prefix = offset_msg_id_prefix(host)
        for offset in (0, 1, 123456789, (1 << 63) - 1):
            assert f"{prefix}{offset:016X}" == offset_msg_id(host, offset)
