"""JSON in the dialects RocketMQ peers speak (PROTOCOL.md section 3.5).

Java's fastjson writes maps with non-String keys without quoting them:

* Long keys - the ``brokerAddrs`` of a BrokerData - come out bare: ``{0:"10.0.0.1:10911"}``.
  Older clients and every ClusterInfo reply expect exactly that; modern clients ask for
  standard JSON instead.
* MessageQueue keys - ResetOffsetBody, ConsumeStats, ConsumerRunningInfo - come out as
  whole objects: ``{{"brokerName":"b","queueId":0,"topic":"t"}:12}``.

Neither is standard JSON, and peers send bodies in either form, so parsing is lenient.

Encoding (``encode``/``dumps``): a Python ``int`` map key stands for a Java Long key; a
:class:`MessageQueue` key is written as an object. ``encode(obj, standard=False)`` writes
int keys bare; ``standard=True`` quotes them. String keys are always quoted. Keys are
written sorted, as Java does with ``MapSortField`` (ints numerically, strings
lexicographically, queues in queue order), so replies are deterministic. ``None`` values
inside maps are left out, as fastjson does without ``WriteMapNullValue``.

Decoding first tries the C ``json`` parser (the common, standard case stays fast) and
falls back to a small recursive-descent parser that also accepts bare keys, object keys
and single-quoted strings. Two views of the result:

* ``decode`` (the NameServer's view): a bare integer key comes back as ``int``, so
  ``decode(encode(x, standard=False)) == x``; an empty body is an error.
* ``loads`` (the client's view): numeric keys come back as strings, whichever form they
  were sent in, and an empty body is ``None``.

In both, an object key that looks like a MessageQueue becomes a :class:`MessageQueue`;
any other object or array key becomes a (sorted) tuple. ``long_keys`` normalises a
Long-keyed map from either form to int keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from json.decoder import scanstring  # type: ignore[attr-defined]
from json.encoder import encode_basestring, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from ledgermq.common.message import MessageQueue

__all__ = [
    "JsonFormatError",
    "decode",
    "dumps",
    "encode",
    "loads",
    "long_keys",
    "mq_keyed_json",
]

_MAX_DEPTH = 256
_MQ_FIELDS = frozenset({"topic", "brokerName", "queueId"})


class JsonFormatError(ValueError):
    """A body is neither standard JSON nor one of fastjson's non-standard forms."""


# ---------------------------------------------------------------------------------
# Encoding


def _sort_key(key: object) -> tuple[int, Any]:
    # ints before strings before queues, so that a mixed map still sorts.
    if isinstance(key, bool):
        return (1, str(key).lower())
    if isinstance(key, int):
        return (0, key)
    if isinstance(key, MessageQueue):
        return (2, (key.topic, key.broker_name, key.queue_id))
    return (1, str(key))


def encode(obj: Any, *, standard: bool = True) -> bytes:
    """Encode `obj` (dicts, lists, tuples, sets, str, int, float, bool, None, or objects
    with a ``to_json()`` method returning one of those) as UTF-8 JSON.

    ``standard=False`` writes int map keys unquoted (fastjson's default form).
    ``standard=True`` quotes them and escapes non-ASCII, like fastjson's
    ``BrowserCompatible`` mode that RocketMQ uses for standard-JSON route replies.
    MessageQueue map keys are written as objects in both forms.
    """
    parts: list[str] = []
    _encode(obj, parts, standard, 0)
    return "".join(parts).encode("utf-8")


def dumps(obj: Any) -> bytes:
    """The client's request bodies: standard JSON except for MessageQueue keys."""
    return encode(obj, standard=True)


def mq_keyed_json(items: Iterable[tuple[MessageQueue, Any]]) -> str:
    """A map keyed by MessageQueue, in fastjson's object-key form, as text."""
    return encode(dict(items)).decode("utf-8")


def _encode(obj: Any, out: list[str], standard: bool, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise JsonFormatError("object nested too deeply to encode")
    quote = encode_basestring_ascii if standard else encode_basestring
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(quote(obj))
    elif isinstance(obj, int):
        out.append(str(int(obj)))
    elif isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise JsonFormatError(f"cannot encode {obj!r} as JSON")
        out.append(repr(obj))
    elif isinstance(obj, Mapping):
        out.append("{")
        first = True
        for key in sorted(obj, key=_sort_key):
            value = obj[key]
            if value is None:
                continue
            if not first:
                out.append(",")
            first = False
            if isinstance(key, bool):
                out.append(quote("true" if key else "false"))
            elif isinstance(key, int):
                out.append(f'"{key}"' if standard else str(key))
            elif isinstance(key, str):
                out.append(quote(key))
            elif isinstance(key, MessageQueue):
                _encode(key.to_json(), out, standard, depth + 1)
            else:
                raise JsonFormatError(f"unsupported map key type {type(key).__name__}")
            out.append(":")
            _encode(value, out, standard, depth + 1)
        out.append("}")
    elif isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=_sort_key) if isinstance(obj, set | frozenset) else obj
        out.append("[")
        for i, item in enumerate(items):
            if i:
                out.append(",")
            _encode(item, out, standard, depth + 1)
        out.append("]")
    elif hasattr(obj, "to_json"):
        _encode(obj.to_json(), out, standard, depth + 1)
    else:
        raise JsonFormatError(f"cannot encode {type(obj).__name__} as JSON")


# ---------------------------------------------------------------------------------
# Decoding

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")
# fastjson accepts bare identifiers as keys too (AllowUnQuotedFieldNames).
_BARE_KEY = re.compile(r"[A-Za-z_$][\w$]*")


def _text(data: bytes | bytearray | memoryview | str) -> str:
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonFormatError(f"body is not UTF-8: {exc}") from None
    return data


def decode(data: bytes | bytearray | memoryview | str, *, str_keys: bool = False) -> Any:
    """Parse standard JSON or fastjson's non-standard forms.

    A bare numeric key comes back as ``int`` unless ``str_keys`` is set.
    """
    text = _text(data)
    try:
        return json.loads(text)
    except RecursionError:
        raise JsonFormatError("JSON nested too deeply") from None
    except ValueError:
        pass
    return _Parser(text, str_keys).parse()


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """The client's view of a body: ``None`` when empty, numeric keys as strings."""
    text = _text(data)
    if not text.strip():
        return None
    return decode(text, str_keys=True)


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


class _Parser:
    __slots__ = ("pos", "str_keys", "text")

    def __init__(self, text: str, str_keys: bool) -> None:
        self.text = text
        self.pos = 0
        self.str_keys = str_keys

    def fail(self, what: str) -> JsonFormatError:
        snippet = self.text[self.pos : self.pos + 20]
        return JsonFormatError(f"invalid JSON at offset {self.pos}: {what} (near {snippet!r})")

    def skip_ws(self) -> None:
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def parse(self) -> Any:
        value = self.value(0)
        self.skip_ws()
        if self.pos != len(self.text):
            raise self.fail("trailing data")
        return value

    def value(self, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise self.fail("nested too deeply")
        self.skip_ws()
        text, pos = self.text, self.pos
        if pos >= len(text):
            raise self.fail("unexpected end of input")
        ch = text[pos]
        if ch == "{":
            return self.obj(depth)
        if ch == "[":
            return self.array(depth)
        if ch == '"':
            return self.string()
        if ch == "'":  # fastjson accepts single quotes; so do we
            end = text.find("'", pos + 1)
            if end < 0:
                raise self.fail("unterminated string")
            self.pos = end + 1
            return text[pos + 1 : end]
        for literal, result in (("null", None), ("true", True), ("false", False)):
            if text.startswith(literal, pos):
                self.pos = pos + len(literal)
                return result
        match = _NUMBER.match(text, pos)
        if match is None:
            raise self.fail("expected a value")
        self.pos = match.end()
        if match.group(1) or match.group(2):
            return float(match.group())
        return int(match.group())

    def string(self) -> str:
        try:
            value, self.pos = scanstring(self.text, self.pos + 1, True)
        except ValueError as exc:
            raise self.fail(f"bad string: {exc}") from None
        return value

    def key(self, depth: int) -> Any:
        self.skip_ws()
        ch = self.text[self.pos : self.pos + 1]
        if not ch or not (ch in "\"'{[-" or ch.isdigit()):
            match = _BARE_KEY.match(self.text, self.pos)
            if match is None:
                raise self.fail("expected a key")
            self.pos = match.end()
            return match.group()
        raw = self.value(depth + 1)
        if isinstance(raw, str):
            return raw
        if isinstance(raw, int):
            return str(raw) if self.str_keys else raw
        if isinstance(raw, float):
            return str(raw)
        if isinstance(raw, dict) and raw.keys() >= _MQ_FIELDS:
            try:
                return MessageQueue.from_json(raw)
            except (TypeError, ValueError):
                raise self.fail("bad MessageQueue key") from None
        return _hashable(raw)

    def obj(self, depth: int) -> dict[Any, Any]:
        self.pos += 1
        result: dict[Any, Any] = {}
        self.skip_ws()
        if self.text.startswith("}", self.pos):
            self.pos += 1
            return result
        while True:
            key = self.key(depth)
            self.skip_ws()
            if not self.text.startswith(":", self.pos):
                raise self.fail("expected ':'")
            self.pos += 1
            result[key] = self.value(depth + 1)
            self.skip_ws()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif self.text.startswith("}", self.pos):
                self.pos += 1
                return result
            else:
                raise self.fail("expected ',' or '}'")

    def array(self, depth: int) -> list[Any]:
        self.pos += 1
        result: list[Any] = []
        self.skip_ws()
        if self.text.startswith("]", self.pos):
            self.pos += 1
            return result
        while True:
            result.append(self.value(depth + 1))
            self.skip_ws()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif self.text.startswith("]", self.pos):
                self.pos += 1
                return result
            else:
                raise self.fail("expected ',' or ']'")


def long_keys(mapping: Any) -> dict[int, Any]:
    """A Long-keyed map as parsed from either dialect: quoted keys become ints.

    Standard JSON delivers ``{"0": ...}``, the unquoted form ``{0: ...}``; callers
    that need the numeric keys normalise with this. Non-numeric keys raise.
    """
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise JsonFormatError(f"expected an object, got {type(mapping).__name__}")
    try:
        return {int(k): v for k, v in mapping.items()}
    except (TypeError, ValueError):
        raise JsonFormatError(f"map keys are not all integers: {list(mapping)[:5]}") from None
