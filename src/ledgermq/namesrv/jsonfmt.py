"""JSON in the two dialects RocketMQ peers speak (PROTOCOL.md section 3.5).

Java (fastjson) writes maps with non-String keys - the Long-keyed ``brokerAddrs`` of a
BrokerData - with *unquoted* keys: ``{0:"10.0.0.1:10911"}``. That is not standard JSON,
but older clients and every ClusterInfo reply expect exactly that. Modern clients ask
for standard JSON instead. Peers send bodies in either form, so parsing is lenient.

The convention here is generic, not tied to any message type: a Python ``int`` map key
stands for a Java Long key. ``encode(obj, standard=False)`` writes int keys bare;
``standard=True`` quotes them. String keys are always quoted. Keys are written sorted,
as Java does with ``MapSortField`` (ints numerically, strings lexicographically), so
replies are deterministic. ``None`` values inside maps are left out, as fastjson does
without ``WriteMapNullValue``.

``decode`` first tries the C ``json`` parser (the common, standard case stays fast) and
falls back to a small recursive-descent parser that also accepts bare keys; a bare
integer key comes back as ``int``, so ``decode(encode(x, standard=False)) == x``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from json.decoder import scanstring
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

__all__ = ["JsonFormatError", "decode", "encode", "long_keys"]

_MAX_DEPTH = 256


class JsonFormatError(ValueError):
    """A body is neither standard JSON nor fastjson's unquoted-key dialect."""


# ---------------------------------------------------------------------------------
# Encoding


def _sort_key(key: object) -> tuple[int, Any]:
    # ints before strings so that a mixed map (never seen in practice) still sorts.
    if isinstance(key, bool):
        return (1, str(key).lower())
    if isinstance(key, int):
        return (0, key)
    return (1, str(key))


def encode(obj: Any, *, standard: bool = True) -> bytes:
    """Encode `obj` (dicts, lists, tuples, sets, str, int, float, bool, None, or objects
    with a ``to_json()`` method returning one of those) as UTF-8 JSON.

    ``standard=False`` writes int map keys unquoted (fastjson's default form).
    ``standard=True`` quotes them and escapes non-ASCII, like fastjson's
    ``BrowserCompatible`` mode that RocketMQ uses for standard-JSON route replies.
    """
    parts: list[str] = []
    _encode(obj, parts, standard, 0)
    return "".join(parts).encode("utf-8")


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
_BARE_KEY = re.compile(r"-?\d+|[A-Za-z_$][\w$]*")


def decode(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse standard JSON or fastjson's unquoted-key form."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonFormatError(f"body is not UTF-8: {exc}") from None
    else:
        text = data
    try:
        return json.loads(text)
    except RecursionError:
        raise JsonFormatError("JSON nested too deeply") from None
    except ValueError:
        pass
    return _Parser(text).parse()


class _Parser:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

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

    def obj(self, depth: int) -> dict[Any, Any]:
        self.pos += 1
        result: dict[Any, Any] = {}
        self.skip_ws()
        if self.text.startswith("}", self.pos):
            self.pos += 1
            return result
        while True:
            self.skip_ws()
            key: Any
            if self.text.startswith('"', self.pos):
                key = self.string()
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if match is None:
                    raise self.fail("expected a key")
                self.pos = match.end()
                token = match.group()
                key = int(token) if token[0] in "-0123456789" else token
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
