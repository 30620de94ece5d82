"""Mapping store put statuses to remoting response codes (SendMessageProcessor)."""

from __future__ import annotations

from ledgermq.remoting.codes import ResponseCode

PUT_STATUS_CODES: dict[str, tuple[int, str | None]] = {
    "PUT_OK": (ResponseCode.SUCCESS, None),
    "FLUSH_DISK_TIMEOUT": (ResponseCode.FLUSH_DISK_TIMEOUT, None),
    "FLUSH_SLAVE_TIMEOUT": (ResponseCode.FLUSH_SLAVE_TIMEOUT, None),
    "SLAVE_NOT_AVAILABLE": (ResponseCode.SLAVE_NOT_AVAILABLE, None),
    "CREATE_MAPPED_FILE_FAILED": (
        ResponseCode.SYSTEM_ERROR,
        "create mapped file failed, server is busy or broken.",
    ),
    "MESSAGE_ILLEGAL": (ResponseCode.MESSAGE_ILLEGAL, "the message is illegal"),
    "PROPERTIES_SIZE_EXCEEDED": (
        ResponseCode.MESSAGE_ILLEGAL,
        "the message properties are too long",
    ),
    "SERVICE_NOT_AVAILABLE": (
        ResponseCode.SERVICE_NOT_AVAILABLE,
        "service not available now. It may be caused by one of the following reasons: the "
        "broker's disk is full, messages are put to the slave, permission denied",
    ),
    "OS_PAGE_CACHE_BUSY": (ResponseCode.SYSTEM_BUSY, "[PC_SYNCHRONIZED]broker busy"),
    "IN_SYNC_REPLICAS_NOT_ENOUGH": (ResponseCode.SYSTEM_ERROR, "in-sync replicas not enough"),
    "DISK_FULL": (ResponseCode.SERVICE_NOT_AVAILABLE, "the disk is full"),
    "OS_ERROR": (ResponseCode.SYSTEM_ERROR, "the store failed to write"),
    "UNKNOWN_ERROR": (ResponseCode.SYSTEM_ERROR, "UNKNOWN_ERROR"),
}


def put_status_code(status: str, detail: str = "") -> tuple[int, str | None]:
    code, remark = PUT_STATUS_CODES.get(status, (ResponseCode.SYSTEM_ERROR, f"store: {status}"))
    if detail and code != ResponseCode.SUCCESS:
        remark = f"{remark}: {detail}" if remark else detail
    return code, remark
