"""Tolerant JSON for RocketMQ bodies.

Java's fastjson writes maps with non-string keys without quoting them: Long keys come out
as `{0:"127.0.0.1:10911"}` and MessageQueue keys as whole objects
(`{{"brokerName":"b","queueId":0,"topic":"t"}:12}`). Neither is standard JSON, so this
module has its own small recursive-descent parser. Numeric keys become strings (so both
forms of `brokerAddrs` read the same), object keys that look like a MessageQueue become
`MessageQueue`, other object keys become a sorted tuple of items.

`dumps` writes standard JSON, except that MessageQueue keys are written as objects, the
form Java expects for e.g. ResetOffsetBody and ConsumerRunningInfo.
"""

from __future__ import annotations

import json
import re
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from ledgermq.client.message import MessageQueue

_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")
_BARE_KEY = re.compile(r"[A-Za-z_$][\w$]*")
_WS = " \t\n\r"


class JsonBodyError(ValueError):
    pass


class _Parser:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def ws(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in _WS:
            pos += 1
        self.pos = pos

    def fail(self, what: str) -> JsonBodyError:
        snippet = self.text[self.pos : self.pos + 30]
        return JsonBodyError(f"{what} at {self.pos}: {snippet!r}")

    def value(self) -> Any:
        self.ws()
        if self.pos >= len(self.text):
            raise self.fail("unexpected end")
        c = self.text[self.pos]
        if c == "{":
            return self.obj()
        if c == "[":
            return self.arr()
        if c == '"':
            s, self.pos = scanstring(self.text, self.pos + 1)
            return s
        if c == "'":  # fastjson accepts single quotes; so do we
            end = self.text.index("'", self.pos + 1)
            s = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return s
        for word, val in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return val
        m = _NUMBER.match(self.text, self.pos)
        if m is None:
            raise self.fail("unexpected character")
        self.pos = m.end()
        if m.group(1) or m.group(2):
            return float(m.group(0))
        return int(m.group(0))

    def key(self) -> Any:
        self.ws()
        c = self.text[self.pos : self.pos + 1]
        if c in ('"', "'", "{", "[") or c == "-" or c.isdigit():
            raw = self.value()
        else:
            m = _BARE_KEY.match(self.text, self.pos)
            if m is None:
                raise self.fail("bad object key")
            self.pos = m.end()
            return m.group(0)
        return _convert_key(raw)

    def obj(self) -> dict[Any, Any]:
        self.pos += 1
        out: dict[Any, Any] = {}
        self.ws()
        if self.text.startswith("}", self.pos):
            self.pos += 1
            return out
        while True:
            k = self.key()
            self.ws()
            if not self.text.startswith(":", self.pos):
                raise self.fail("expected ':'")
            self.pos += 1
            out[k] = self.value()
            self.ws()
            c = self.text[self.pos : self.pos + 1]
            self.pos += 1
            if c == "}":
                return out
            if c != ",":
                self.pos -= 1
                raise self.fail("expected ',' or '}'")

    def arr(self) -> list[Any]:
        self.pos += 1
        out: list[Any] = []
        self.ws()
        if self.text.startswith("]", self.pos):
            self.pos += 1
            return out
        while True:
            out.append(self.value())
            self.ws()
            c = self.text[self.pos : self.pos + 1]
            self.pos += 1
            if c == "]":
                return out
            if c != ",":
                self.pos -= 1
                raise self.fail("expected ',' or ']'")


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _convert_key(raw: Any) -> Any:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool) or raw is None:
        return json.dumps(raw)
    if isinstance(raw, int | float):
        return str(raw)
    if isinstance(raw, dict):
        if {"topic", "brokerName", "queueId"} <= raw.keys():
            return MessageQueue.from_json(raw)
        return _hashable(raw)
    return _hashable(raw)


def loads(data: bytes | str) -> Any:
    """Parses standard JSON fast, falling back to the tolerant parser."""
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    parser = _Parser(text)
    result = parser.value()
    parser.ws()
    if parser.pos != len(text):
        raise parser.fail("trailing data")
    return result


def _dump(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append("{")
        first = True
        for k, v in value.items():
            if not first:
                out.append(",")
            first = False
            if isinstance(k, MessageQueue):
                out.append(json.dumps(k.to_json(), separators=(",", ":"), sort_keys=True))
            else:
                out.append(json.dumps(str(k)))
            out.append(":")
            _dump(v, out)
        out.append("}")
    elif isinstance(value, list | tuple | set | frozenset):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _dump(v, out)
        out.append("]")
    elif isinstance(value, MessageQueue):
        out.append(json.dumps(value.to_json(), separators=(",", ":"), sort_keys=True))
    else:
        out.append(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def dumps(value: Any) -> bytes:
    out: list[str] = []
    _dump(value, out)
    return "".join(out).encode("utf-8")
