"""Sans-I/O codec for RocketMQ remoting frames (bytes in, commands out).

Frame layout (PROTOCOL.md section 1)::

    int32 length            = 4 + headerLen + bodyLen
    int32 serializeType<<24 | headerLen
    header                  JSON object, or the ROCKETMQ binary layout
    body

`FrameDecoder.feed()` takes whatever bytes arrived and returns the complete commands in
them. A frame that is too large makes the stream unusable (we cannot know where the next
frame starts without buffering the whole thing), so it raises `FrameTooLarge` and the
caller closes the connection. A frame whose *header* is malformed is still correctly
delimited, so it comes out as a `MalformedCommand` event and the stream goes on.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from ledgermq.remoting.codes import OUR_VERSION, LanguageCode, SerializeType

FLAG_RESPONSE = 0x1
FLAG_ONEWAY = 0x2

DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024

_INT32 = struct.Struct(">i")
_FRAME_PREFIX = struct.Struct(">iI")  # length, (serializeType << 24) | headerLen
_BINARY_FIXED = struct.Struct(">hbhii")  # code, language, version, opaque, flag
_LANGUAGE_BY_NAME = {member.name: int(member) for member in LanguageCode}
_LANGUAGE_NAME = {int(member): member.name for member in LanguageCode}


class ProtocolError(Exception):
    """The byte stream violates the remoting framing; the connection must be closed."""


class FrameTooLarge(ProtocolError):
    pass


@dataclass(slots=True)
class RemotingCommand:
    code: int
    opaque: int = 0
    flag: int = 0
    language: int = LanguageCode.PYTHON
    version: int = OUR_VERSION
    remark: str | None = None
    ext_fields: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # How the header travelled; a reply must use the same one.
    serialize_type: int = SerializeType.JSON

    @property
    def is_response(self) -> bool:
        return bool(self.flag & FLAG_RESPONSE)

    @property
    def is_oneway(self) -> bool:
        return bool(self.flag & FLAG_ONEWAY)

    def make_response(
        self,
        code: int,
        remark: str | None = None,
        ext_fields: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> RemotingCommand:
        return RemotingCommand(
            code=int(code),
            opaque=self.opaque,
            flag=FLAG_RESPONSE,
            remark=remark,
            ext_fields=ext_fields if ext_fields is not None else {},
            body=body,
            serialize_type=self.serialize_type,
        )


@dataclass(slots=True, frozen=True)
class MalformedCommand:
    """A correctly framed command whose header could not be decoded."""

    reason: str
    serialize_type: int
    # Known when enough of the header parsed to address an error reply.
    opaque: int | None = None
    code: int | None = None
    flag: int = 0


def ext_value_to_str(value: object) -> str:
    """Header values arrive as strings, numbers or booleans depending on the client."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return json.dumps(value, separators=(",", ":"))


# ---------------------------------------------------------------------------------
# Encoding


def _make_json_codec() -> tuple[Callable[[object], str], Callable[[str], object]]:
    """JSON encode/decode without json.dumps/loads' per-call Python layers.

    Every request and reply goes through these; the C encoder and scanner objects are
    built once instead of once per call (about 2 us saved per frame on each side).
    """
    from json import encoder as json_encoder

    c_make_encoder = getattr(json_encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - CPython always has the C encoder
        dump = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    else:
        c_encoder = c_make_encoder(
            None, None, json_encoder.encode_basestring, None, ":", ",", False, False, True
        )

        def dump(obj: object) -> str:
            return "".join(c_encoder(obj, 0))

    scan_once = json.JSONDecoder().scan_once

    def load(text: str) -> object:
        if text[:1].isspace():
            text = text.lstrip()
        try:
            obj, end = scan_once(text, 0)
        except StopIteration as exc:  # the scanner's way of saying "no value here"
            raise ValueError(f"no JSON value at {exc.value}") from None
        if end != len(text) and text[end:].strip():
            raise ValueError(f"extra data after the JSON value at {end}")
        return obj

    return dump, load


_dump_json, _load_json = _make_json_codec()
# a JSON string literal exactly as _dump_json writes one (for prerendered fields)
json_string = json.encoder.encode_basestring


class SharedFields(dict):
    """extFields that many commands carry unchanged (a client's request to one member, a
    leader's success replies): read-only, so its JSON is made once and reused."""

    __slots__ = ("_json",)

    def __init__(self, *args: object, **kwargs: str) -> None:
        super().__init__(*args, **kwargs)
        self._json = _dump_json(dict(self))

    @classmethod
    def prerendered(cls, fields: dict[str, str], json_text: str) -> SharedFields:
        """`fields` with JSON the caller rendered from a fixed layout (a hot path's
        request or reply); it must be what the encoder would write for `fields`."""
        obj = cls.__new__(cls)
        dict.update(obj, fields)
        obj._json = json_text
        return obj

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError("SharedFields are read-only: copy them into a dict to change them")

    __setitem__ = __delitem__ = __ior__ = _read_only  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]


def _json_header(cmd: RemotingCommand) -> bytes:
    # Keys in Java's (sorted) order; only the free-form parts go through the encoder.
    remark = "" if cmd.remark is None else f',"remark":{_dump_json(cmd.remark)}'
    ext = cmd.ext_fields
    ext_json = ext._json if type(ext) is SharedFields else _dump_json(ext)
    return (
        f'{{"code":{int(cmd.code)},"extFields":{ext_json},'
        f'"flag":{int(cmd.flag)},"language":"{_LANGUAGE_NAME.get(cmd.language, "OTHER")}",'
        f'"opaque":{int(cmd.opaque)}{remark},"serializeTypeCurrentRPC":"JSON",'
        f'"version":{int(cmd.version)}}}'
    ).encode()


def _binary_header(cmd: RemotingCommand) -> bytes:
    parts = [_BINARY_FIXED.pack(cmd.code, cmd.language, cmd.version, cmd.opaque, cmd.flag)]
    if cmd.remark:
        remark = cmd.remark.encode()
        parts.append(_INT32.pack(len(remark)))
        parts.append(remark)
    else:
        parts.append(_INT32.pack(0))
    ext = bytearray()
    for key, value in cmd.ext_fields.items():
        k = key.encode()
        v = ext_value_to_str(value).encode()
        ext += struct.pack(">h", len(k))
        ext += k
        ext += _INT32.pack(len(v))
        ext += v
    parts.append(_INT32.pack(len(ext)))
    parts.append(bytes(ext))
    return b"".join(parts)


def encode_command(cmd: RemotingCommand) -> bytes:
    if cmd.code > 0x7FFF or cmd.code < -0x8000:
        # The binary header's code field is 16 bits wide (POP codes are 2000xx).
        serialize_type = SerializeType.JSON
    else:
        serialize_type = cmd.serialize_type
    if serialize_type == SerializeType.ROCKETMQ:
        header = _binary_header(cmd)
    else:
        header = _json_header(cmd)
    body = cmd.body or b""
    prefix = _FRAME_PREFIX.pack(4 + len(header) + len(body), (serialize_type << 24) | len(header))
    return b"".join((prefix, header, body))


# ---------------------------------------------------------------------------------
# Decoding


def _as_int(value: object) -> int:
    # ints arrive as ints from every client we know; strings and floats are tolerated
    return value if type(value) is int else int(value)  # type: ignore[call-overload]


def _decode_json_header(raw: bytes, body: bytes) -> RemotingCommand | MalformedCommand:
    # Every request and reply passes here: plain lookups and one positional constructor
    # call (a frame costs about 1.6 us instead of 2.3 us)
    try:
        obj = _load_json(raw.decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return MalformedCommand(f"header is not valid JSON: {exc}", SerializeType.JSON)
    if type(obj) is not dict:
        return MalformedCommand("JSON header is not an object", SerializeType.JSON)
    get = obj.get
    opaque = code = None
    try:
        opaque = _as_int(get("opaque", 0))
        code = _as_int(obj["code"])
        flag = _as_int(get("flag", 0))
        language_raw = get("language", "OTHER")
        if type(language_raw) is str:
            language = _LANGUAGE_BY_NAME.get(language_raw)
            if language is None:
                language = _LANGUAGE_BY_NAME.get(language_raw.upper(), LanguageCode.OTHER)
        else:
            language = int(language_raw)
        version = _as_int(get("version", 0))
        remark = get("remark")
        if remark is not None and type(remark) is not str:
            remark = ext_value_to_str(remark)
        ext_fields = get("extFields") or {}
        if type(ext_fields) is not dict:
            raise ValueError("extFields is not an object")
        for v in ext_fields.values():
            if type(v) is not str:
                # Node.js and C++ clients send numbers and booleans: coerce the map once.
                ext_fields = {
                    str(k): ext_value_to_str(x) for k, x in ext_fields.items() if x is not None
                }
                break
    except KeyError:
        return MalformedCommand("JSON header has no 'code'", SerializeType.JSON, opaque)
    except (TypeError, ValueError) as exc:
        return MalformedCommand(
            f"bad JSON header field: {exc}",
            SerializeType.JSON,
            opaque,
            code,
            int(obj.get("flag", 0)) if isinstance(obj.get("flag"), int) else 0,
        )
    return RemotingCommand(
        code, opaque, flag, language, version, remark, ext_fields, body, SerializeType.JSON
    )


def _decode_binary_header(raw: bytes, body: bytes) -> RemotingCommand | MalformedCommand:
    rocketmq = SerializeType.ROCKETMQ
    if len(raw) < _BINARY_FIXED.size + 8:
        return MalformedCommand("binary header too short", rocketmq)
    code, language, version, opaque, flag = _BINARY_FIXED.unpack_from(raw, 0)
    try:
        pos = _BINARY_FIXED.size
        (remark_len,) = _INT32.unpack_from(raw, pos)
        pos += 4
        if remark_len < 0 or pos + remark_len > len(raw):
            raise ValueError("remark length out of range")
        remark = raw[pos : pos + remark_len].decode() if remark_len else None
        pos += remark_len
        (ext_len,) = _INT32.unpack_from(raw, pos)
        pos += 4
        end = pos + ext_len
        if ext_len < 0 or end > len(raw):
            raise ValueError("extFields length out of range")
        ext_fields: dict[str, str] = {}
        while pos < end:
            (key_len,) = struct.unpack_from(">h", raw, pos)
            pos += 2
            if key_len < 0 or pos + key_len > end:
                raise ValueError("extFields key length out of range")
            key = raw[pos : pos + key_len].decode()
            pos += key_len
            (val_len,) = _INT32.unpack_from(raw, pos)
            pos += 4
            if val_len < 0 or pos + val_len > end:
                raise ValueError("extFields value length out of range")
            ext_fields[key] = raw[pos : pos + val_len].decode()
            pos += val_len
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        return MalformedCommand(f"bad binary header: {exc}", rocketmq, opaque, code, flag)
    return RemotingCommand(
        code=code,
        opaque=opaque,
        flag=flag,
        language=language,
        version=version,
        remark=remark,
        ext_fields=ext_fields,
        body=body,
        serialize_type=rocketmq,
    )


def decode_frame(frame: bytes) -> RemotingCommand | MalformedCommand:
    """Decode one frame *without* its leading length field."""
    return _decode_frame_at(frame, 0, len(frame))


def _decode_frame_at(data: bytes, start: int, end: int) -> RemotingCommand | MalformedCommand:
    # the frame is data[start:end]; only its header and body are copied out
    if end - start < 4:
        return MalformedCommand("frame shorter than its header-length field", SerializeType.JSON)
    (mark,) = _INT32.unpack_from(data, start)
    serialize_type = (mark >> 24) & 0xFF
    header_len = mark & 0xFFFFFF
    body_at = start + 4 + header_len
    if body_at > end:
        return MalformedCommand(
            f"header length {header_len} exceeds frame length {end - start}", serialize_type
        )
    if serialize_type == SerializeType.JSON:
        return _decode_json_header(data[start + 4 : body_at], data[body_at:end])
    if serialize_type == SerializeType.ROCKETMQ:
        return _decode_binary_header(data[start + 4 : body_at], data[body_at:end])
    return MalformedCommand(f"unknown serialize type {serialize_type}", serialize_type)


class FrameDecoder:
    """Accumulates stream bytes and cuts them into commands."""

    __slots__ = ("_buffer", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[RemotingCommand | MalformedCommand]:
        buffer = self._buffer
        if type(data) is not bytes:
            data = bytes(data)  # bodies are sliced from it and must be immutable
        if buffer:
            # the rest of a frame cut by the last read
            buffer += data
            if len(buffer) >= 4:
                (length,) = _INT32.unpack_from(buffer, 0)
                if len(buffer) - 4 < length <= self.max_frame_size:
                    return []  # still incomplete: no copy per read of a large frame
            data = bytes(buffer)  # parse from one joined copy (the loop checks the length)
            buffer.clear()
        events: list[RemotingCommand | MalformedCommand] = []
        pos = 0
        available = len(data)
        unpack_from = _INT32.unpack_from
        max_frame_size = self.max_frame_size
        while available - pos >= 4:
            (length,) = unpack_from(data, pos)
            if length < 4:
                raise ProtocolError(f"frame length {length} is smaller than its header field")
            if length > max_frame_size:
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds the maximum of {max_frame_size}"
                )
            start = pos + 4
            if available - start < length:
                break
            # straight from the received bytes: no copy of the whole frame first
            events.append(_decode_frame_at(data, start, start + length))
            pos = start + length
        if pos < available:
            buffer += memoryview(data)[pos:]
        return events
