"""Errors of the remoting layer, for callers and for request handlers."""

from __future__ import annotations

from ledgermq.remoting.codes import ResponseCode


class RemotingError(Exception):
    """Raised by a request handler to answer with `code` and a readable `remark`."""

    def __init__(self, code: int, remark: str) -> None:
        super().__init__(remark)
        self.code = int(code)
        self.remark = remark


class RemotingException(Exception):
    """Base of client-side transport failures."""


class RemotingConnectError(RemotingException):
    pass


class RemotingTimeoutError(RemotingException):
    pass


class RemotingSendError(RemotingException):
    """The connection closed before the reply arrived."""


class RemotingResponseError(RemotingException):
    """A peer answered a request with a non-success code."""

    def __init__(self, code: int, remark: str | None) -> None:
        try:
            name = ResponseCode(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"{name} ({code}): {remark or ''}".rstrip(": "))
        self.code = code
        self.remark = remark
