"""Config files with RocketMQ's key names.

A config class is a dataclass whose fields are snake_case; the file key is the
camelCase spelling (``broker_cluster_name`` <-> ``brokerClusterName``) unless the field
names it with ``setting(key=...)``. Unknown keys are reported (the caller warns), bad
values raise `ConfigError` naming the key, so a typo never silently falls back.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_type_hints


class ConfigError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key '{key}': {message}")
        self.key = key


def setting(
    default: Any = dataclasses.MISSING,
    *,
    key: str | None = None,
    choices: Iterable[str] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    metadata = {
        "key": key,
        "choices": tuple(choices) if choices else None,
        "minimum": minimum,
        "maximum": maximum,
    }
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def camel_key(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def config_keys(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """Map from file key to dataclass field."""
    return {
        (f.metadata.get("key") or camel_key(f.name)): f for f in dataclasses.fields(cls) if f.init
    }


_LINE_CONTINUATION = re.compile(r"(?<!\\)\\$")


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java .properties text (the subset RocketMQ configs use)."""
    result: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.strip() if not logical else raw.lstrip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if _LINE_CONTINUATION.search(line):
            logical += line[:-1]
            continue
        logical += line
        match = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)$", logical)
        if match:
            result[match.group(1)] = match.group(2).strip()
        elif logical:
            result[logical] = ""
        logical = ""
    return result


def format_properties(values: Mapping[str, object]) -> str:
    return "".join(f"{k}={_to_text(v)}\n" for k, v in values.items())


def _to_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def load_file(path: str | Path) -> dict[str, str]:
    """Load a .properties file, or a JSON object file (rmq-proxy.json style)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read config file: {exc.strerror}") from None
    if p.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise ConfigError(str(path), f"invalid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ConfigError(str(path), "JSON config must be an object")
        return {str(k): _to_text(v) for k, v in obj.items()}
    return parse_properties(text)


def _convert(key: str, field: dataclasses.Field[Any], hint: Any, raw: str) -> Any:
    text = raw.strip()
    meta = field.metadata
    if hint is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(key, f"expected true or false, got {raw!r}")
    if hint is int:
        try:
            value: Any = int(text)
        except ValueError:
            raise ConfigError(key, f"expected an integer, got {raw!r}") from None
    elif hint is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(key, f"expected a number, got {raw!r}") from None
    else:
        value = raw.strip()
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(key, f"expected one of {', '.join(meta['choices'])}, got {raw!r}")
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise ConfigError(key, f"must be at least {meta['minimum']}, got {raw!r}")
    if meta.get("maximum") is not None and value > meta["maximum"]:
        raise ConfigError(key, f"must be at most {meta['maximum']}, got {raw!r}")
    return value


def apply_properties(obj: Any, props: Mapping[str, str]) -> list[str]:
    """Set fields of the dataclass instance `obj` from `props`; return unknown keys."""
    fields = config_keys(type(obj))
    hints = get_type_hints(type(obj))
    unknown: list[str] = []
    for key, raw in props.items():
        field = fields.get(key)
        if field is None:
            unknown.append(key)
            continue
        setattr(obj, field.name, _convert(key, field, hints[field.name], raw))
    return unknown


def to_properties(obj: Any) -> dict[str, str]:
    return {key: _to_text(getattr(obj, f.name)) for key, f in config_keys(type(obj)).items()}
