"""Queue allocation strategies (pure): who consumes which queue in a clustering group."""

from __future__ import annotations

from collections.abc import Sequence

from ledgermq.client.message import MessageQueue


def allocate_averagely(
    client_id: str, all_queues: Sequence[MessageQueue], all_client_ids: Sequence[str]
) -> list[MessageQueue]:
    """Contiguous slices, the first `len(queues) % len(cids)` clients get one extra.

    Every member must see the same sorted lists, so both are sorted here; the result
    matches Java's AllocateMessageQueueAveragely, so Java and Python members can share a
    group.
    """
    queues = sorted(all_queues)
    cids = sorted(set(all_client_ids))
    if client_id not in cids or not queues:
        return []
    index = cids.index(client_id)
    n_q, n_c = len(queues), len(cids)
    if n_q <= n_c:
        return [queues[index]] if index < n_q else []
    base, extra = divmod(n_q, n_c)
    size = base + (1 if index < extra else 0)
    start = index * base + min(index, extra)
    return queues[start : start + size]


def allocate_by_circle(
    client_id: str, all_queues: Sequence[MessageQueue], all_client_ids: Sequence[str]
) -> list[MessageQueue]:
    """Round-robin dealing (Java's AllocateMessageQueueAveragelyByCircle)."""
    queues = sorted(all_queues)
    cids = sorted(set(all_client_ids))
    if client_id not in cids:
        return []
    index = cids.index(client_id)
    return queues[index :: len(cids)]
