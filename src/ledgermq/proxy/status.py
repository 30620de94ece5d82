"""v2 status codes: building Status messages and mapping remoting answers onto them.

Every v2 response carries a Status, and the official clients treat a missing one (or
code 0) as an illegal response, so each RPC answers `ok()` or the `ProxyError` it
raised -- never a bare gRPC error for a request it understood.
"""

from __future__ import annotations

from ledgermq.proxy.protocol import definition_pb2 as pb
from ledgermq.remoting.codes import ResponseCode

Code = pb.Code


class ProxyError(Exception):
    """A request failure with the v2 code the client should see."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def status(self) -> pb.Status:
        return pb.Status(code=self.code, message=self.message)


def ok() -> pb.Status:
    return pb.Status(code=Code.OK, message="OK")


def status(code: int, message: str) -> pb.Status:
    return pb.Status(code=code, message=message)


def not_implemented(what: str) -> pb.Status:
    return pb.Status(
        code=Code.NOT_IMPLEMENTED,
        message=f"{what} is not implemented by this proxy yet",
    )


def code_name(code: int) -> str:
    try:
        return Code.Name(code)
    except ValueError:
        return str(code)


# Remoting response code -> v2 code (PROTOCOL.md 10.2 plus what the Java proxy does).
_FROM_REMOTING: dict[int, int] = {
    ResponseCode.SUCCESS: Code.OK,
    ResponseCode.SYSTEM_ERROR: Code.INTERNAL_SERVER_ERROR,
    ResponseCode.SYSTEM_BUSY: Code.TOO_MANY_REQUESTS,
    ResponseCode.REQUEST_CODE_NOT_SUPPORTED: Code.NOT_IMPLEMENTED,
    ResponseCode.FLUSH_DISK_TIMEOUT: Code.MASTER_PERSISTENCE_TIMEOUT,
    ResponseCode.SLAVE_NOT_AVAILABLE: Code.HA_NOT_AVAILABLE,
    ResponseCode.FLUSH_SLAVE_TIMEOUT: Code.SLAVE_PERSISTENCE_TIMEOUT,
    ResponseCode.MESSAGE_ILLEGAL: Code.BAD_REQUEST,
    ResponseCode.SERVICE_NOT_AVAILABLE: Code.INTERNAL_SERVER_ERROR,
    ResponseCode.NO_PERMISSION: Code.FORBIDDEN,
    ResponseCode.TOPIC_NOT_EXIST: Code.TOPIC_NOT_FOUND,
    ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST: Code.CONSUMER_GROUP_NOT_FOUND,
}


def from_remoting(code: int) -> int:
    """The v2 code for a remoting response code (unknown ones are server errors)."""
    return _FROM_REMOTING.get(code, Code.INTERNAL_SERVER_ERROR)


def broker_error(code: int, remark: str | None, where: str) -> ProxyError:
    text = remark or "no remark"
    return ProxyError(from_remoting(code), f"broker {where} answered code {code}: {text}")
