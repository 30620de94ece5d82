import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgermq.remoting.codec import (
    FLAG_ONEWAY,
    FrameDecoder,
    FrameTooLarge,
    MalformedCommand,
    ProtocolError,
    RemotingCommand,
    encode_command,
)
from ledgermq.remoting.codes import LanguageCode, SerializeType

ext_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
commands = st.builds(
    RemotingCommand,
    code=st.integers(-32768, 32767),
    opaque=st.integers(-(2**31), 2**31 - 1),
    flag=st.integers(0, 3),
    language=st.sampled_from([int(x) for x in LanguageCode]),
    version=st.integers(0, 32767),
    remark=st.one_of(st.none(), ext_text.filter(bool)),
    ext_fields=st.dictionaries(ext_text, ext_text, max_size=5),
    body=st.binary(max_size=64),
    serialize_type=st.sampled_from([SerializeType.JSON, SerializeType.ROCKETMQ]),
)


@given(commands)
def test_encode_decode_round_trip_in_both_serializations(cmd):
    (decoded,) = FrameDecoder().feed(encode_command(cmd))
    assert decoded == cmd


@given(st.lists(commands, min_size=1, max_size=5), st.integers(1, 7))
def test_decoder_handles_arbitrary_chunking(cmds, chunk):
    stream = b"".join(encode_command(c) for c in cmds)
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(stream), chunk):
        out.extend(decoder.feed(stream[i : i + chunk]))
    assert out == cmds
    assert decoder.buffered == 0


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_protocol_errors(data):
    decoder = FrameDecoder(max_frame_size=1024)
    try:
        events = decoder.feed(data)
    except ProtocolError:
        return
    for event in events:
        assert isinstance(event, (RemotingCommand, MalformedCommand))


def _json_frame(header: dict, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">ii", 4 + len(raw) + len(body), len(raw)) + raw + body


def test_json_header_values_of_any_type_become_strings():
    # The Node.js client sends numbers and booleans; the C++ core mixes them.
    frame = _json_frame(
        {
            "code": 11,
            "language": "NODE_JS",
            "opaque": 7,
            "flag": 0,
            "version": 121,
            "extFields": {"queueId": 1, "k": False, "s": "x", "n": None, "f": 2.0},
        }
    )
    (cmd,) = FrameDecoder().feed(frame)
    assert cmd.ext_fields == {"queueId": "1", "k": "false", "s": "x", "f": "2"}
    assert cmd.language == LanguageCode.NODE_JS
    assert cmd.version == 121


def test_json_reply_uses_language_names_and_standard_keys():
    reply = RemotingCommand(code=0, opaque=3, flag=1, ext_fields={"a": "b"})
    frame = encode_command(reply)
    header_len = struct.unpack_from(">i", frame, 4)[0] & 0xFFFFFF
    header = json.loads(frame[8 : 8 + header_len])
    assert header["language"] == "PYTHON"
    assert header["extFields"] == {"a": "b"}
    assert "remark" not in header


def test_oversized_frame_is_a_protocol_error():
    decoder = FrameDecoder(max_frame_size=100)
    with pytest.raises(FrameTooLarge, match="exceeds the maximum of 100"):
        decoder.feed(struct.pack(">i", 101) + b"\0" * 8)


def test_an_oversized_length_split_across_reads_is_still_refused():
    # the length field arrives in two reads: the second one must still check it
    decoder = FrameDecoder(max_frame_size=100)
    assert decoder.feed(struct.pack(">i", 101)[:2]) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(struct.pack(">i", 101)[2:] + b"\0" * 8)


def test_a_large_frame_in_many_reads_decodes_once_complete():
    cmd = RemotingCommand(code=310, opaque=9, body=b"x" * 200_000)
    frame = encode_command(cmd)
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(frame), 4096):
        out.extend(decoder.feed(frame[i : i + 4096]))
        if i + 4096 < len(frame):
            assert out == [] and decoder.buffered == i + 4096
    assert out == [cmd] and decoder.buffered == 0


def test_negative_length_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack(">i", -5) + b"abcd")


def test_malformed_json_header_with_known_opaque_is_addressable():
    frame = _json_frame({"code": "abc", "opaque": 9, "flag": FLAG_ONEWAY})
    (event,) = FrameDecoder().feed(frame)
    assert isinstance(event, MalformedCommand)
    assert event.opaque == 9


def test_unparseable_header_has_no_opaque():
    raw = b"{not json"
    frame = struct.pack(">ii", 4 + len(raw), len(raw)) + raw
    (event,) = FrameDecoder().feed(frame)
    assert isinstance(event, MalformedCommand) and event.opaque is None


def test_large_codes_are_sent_as_json_even_when_binary_was_asked():
    # POP codes (2000xx) do not fit the binary header's 16-bit code field.
    cmd = RemotingCommand(code=200050, serialize_type=SerializeType.ROCKETMQ)
    (decoded,) = FrameDecoder().feed(encode_command(cmd))
    assert decoded.code == 200050
    assert decoded.serialize_type == SerializeType.JSON


@pytest.mark.parametrize(
    "raw",
    [b'{"code":1} trailing', b"", b"[1,2]", b'{"code":1', b'\xff\xfe{"code":1}', b"[" * 5000],
)
def test_bad_json_headers_are_malformed_not_crashes(raw):
    frame = struct.pack(">ii", 4 + len(raw), len(raw)) + raw
    (event,) = FrameDecoder().feed(frame)
    assert isinstance(event, MalformedCommand)


def test_json_header_with_surrounding_whitespace_is_accepted():
    raw = b'  {"code":12,"opaque":3}\n'
    frame = struct.pack(">ii", 4 + len(raw), len(raw)) + raw
    (cmd,) = FrameDecoder().feed(frame)
    assert cmd.code == 12 and cmd.opaque == 3
