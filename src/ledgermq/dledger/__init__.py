"""DLedger: a Raft-replicated log, usable as a networked library.

* ``core/``: the sans-I/O Raft node; ``store/``: the durable entry store.
* ``protocol.py``: DLedger's codes and the binary request/response bodies.
* ``member.py``: one member of one group, the asyncio driver around the node;
  ``log_storage.py``: the bridge between the node's log and the store;
  ``snapshot.py``: snapshot files (DLedger's ``snapshot/snapshot_<index>/`` layout).
* Membership: single-server changes (learners, promote, remove) through
  CHANGE_MEMBERSHIP 51007 (``DLedgerClient.add_learner`` / ``promote`` /
  ``remove_member``); a new member starts with ``join=True``.
* ``server.py``: ``DLedgerServer``, one port hosting many groups; ``peers.py``: links.
* ``statemachine.py`` / ``kv.py``: what committed entries are applied to, and a
  replicated key-value example with linearizable reads.
* ``client.py``: ``DLedgerClient`` (asyncio) and ``SyncDLedgerClient``.

Indexes seen by clients are DLedger's: 0-based.
"""
