"""Sans-I/O Raft core of ledgermq.dledger (DESIGN principle 1)."""

from .node import Config, RaftNode
from .storage import MemoryStorage, StorageView
from .types import (
    ENTRY_NOOP,
    ENTRY_NORMAL,
    Entry,
    ErrorCode,
    HardState,
    Message,
    MsgType,
    ProposeError,
    ReadState,
    Ready,
    Role,
)

__all__ = [
    "ENTRY_NOOP",
    "ENTRY_NORMAL",
    "Config",
    "Entry",
    "ErrorCode",
    "HardState",
    "MemoryStorage",
    "Message",
    "MsgType",
    "ProposeError",
    "RaftNode",
    "ReadState",
    "Ready",
    "Role",
    "StorageView",
]
