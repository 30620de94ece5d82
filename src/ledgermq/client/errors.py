"""Errors raised by the client library."""

from __future__ import annotations

from ledgermq.remoting.codes import ResponseCode


class MQClientError(Exception):
    """A failure on the client side: bad argument, no route, transport trouble, timeouts."""


class MQBrokerError(MQClientError):
    """A broker or NameServer answered with a non-success response code."""

    def __init__(self, code: int, remark: str | None, addr: str | None = None) -> None:
        try:
            name = ResponseCode(code).name
        except ValueError:
            name = str(code)
        where = f" from {addr}" if addr else ""
        super().__init__(f"{name} ({code}){where}: {remark or ''}".rstrip(": "))
        self.code = int(code)
        self.remark = remark
        self.addr = addr
