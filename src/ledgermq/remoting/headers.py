"""Typed access to a command's extFields (the custom header).

Clients differ in how they spell values (PROTOCOL.md section 1): the codec has already
turned everything into strings; these helpers parse them and name the field when a
mandatory one is missing or malformed.
"""

from __future__ import annotations

from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import ResponseCode
from ledgermq.remoting.errors import RemotingError

_MISSING = object()


def _raw(cmd: RemotingCommand, key: str, required: bool) -> str | None:
    value = cmd.ext_fields.get(key)
    if value is None or (value == "" and required):
        if required:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"missing mandatory header field '{key}'"
            )
        return None
    return value


def get_str(
    cmd: RemotingCommand, key: str, default: str | None = None, *, required: bool = False
) -> str | None:
    value = _raw(cmd, key, required)
    return default if value is None else value


def req_str(cmd: RemotingCommand, key: str) -> str:
    value = _raw(cmd, key, True)
    assert value is not None
    return value


def get_int(
    cmd: RemotingCommand, key: str, default: int | None = None, *, required: bool = False
) -> int | None:
    value = _raw(cmd, key, required)
    if value is None or value == "" or value == "null":
        if required:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"missing mandatory header field '{key}'"
            )
        return default
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except ValueError:
            raise RemotingError(
                ResponseCode.SYSTEM_ERROR, f"header field '{key}' is not a number: {value!r}"
            ) from None


def req_int(cmd: RemotingCommand, key: str) -> int:
    value = get_int(cmd, key, required=True)
    assert value is not None
    return value


def get_bool(cmd: RemotingCommand, key: str, default: bool = False) -> bool:
    value = cmd.ext_fields.get(key)
    if value is None or value == "":
        return default
    return value.strip().lower() in ("true", "1", "yes")
