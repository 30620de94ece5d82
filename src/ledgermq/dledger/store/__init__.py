"""DLedger's on-disk log: entry codec, segmented entry store with index, recovery."""

from ledgermq.dledger.store.entry_codec import Entry, EntryDecodeError, decode_entry, encode_entry
from ledgermq.dledger.store.entry_store import (
    AppendMismatchError,
    EntryNotFoundError,
    EntryStore,
    HardStateFile,
    StoreCorruptError,
    StoreError,
    StoreFullError,
)

__all__ = [
    "AppendMismatchError",
    "Entry",
    "EntryDecodeError",
    "EntryNotFoundError",
    "EntryStore",
    "HardStateFile",
    "StoreCorruptError",
    "StoreError",
    "StoreFullError",
    "decode_entry",
    "encode_entry",
]
