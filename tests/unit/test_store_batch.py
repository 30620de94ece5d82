"""The batch fast path (`MessageStore.put_batch`) must store exactly what the general path
(`put_messages`) stores: same record bytes, same ConsumeQueue units, same index entries."""

import pytest

from ledgermq.common.message import BatchItem, encode_properties
from ledgermq.store.message_store import (
    BatchToStore,
    GetMessageStatus,
    MessageToStore,
    PutMessageStatus,
)

from .test_store import Clock, open_store


def items(n: int, start: int = 0) -> list[BatchItem]:
    out = []
    for i in range(start, start + n):
        props = {"TAGS": f"t{i % 3}", "KEYS": f"k{i} shared", "UNIQ_KEY": f"U{i:08d}"}
        out.append(BatchItem(f"body-{i}".encode() * (i % 7 + 1), i % 4, props, None))
    return out


def as_messages(batch: BatchToStore) -> list[MessageToStore]:
    return [
        MessageToStore(
            topic=batch.topic,
            queue_id=batch.queue_id,
            body=it.body,
            flag=it.flag,
            properties=dict(it.properties),
            sys_flag=batch.sys_flag,
            born_timestamp=batch.born_timestamp,
            born_host=batch.born_host,
            reconsume_times=batch.reconsume_times,
        )
        for it in batch.items
    ]


def stored(store, topic: str, qid: int) -> tuple[list[bytes], list]:
    """Every record the queue leads to, and its raw ConsumeQueue units."""
    r = store.get_messages(topic, qid, 0, 10_000, max_bytes=1 << 30)
    assert r.status is GetMessageStatus.FOUND
    cq = store._cq(topic, qid, False)
    units = [cq.get(i) for i in range(cq.max_offset)]
    return [bytes(b) for b in r.messages], units


@pytest.mark.parametrize(
    ("topic", "born_host", "store_host"),
    [
        ("T", ("192.168.0.2", 5555), ("10.0.0.1", 10911)),
        ("T" * 200, ("2001:db8::7", 42), ("10.0.0.1", 10911)),  # V2 magic, IPv6 born host
        ("Q", ("192.168.0.2", 5555), ("fe80::1", 10911)),  # IPv6 store host
    ],
)
async def test_put_batch_writes_what_put_messages_writes(tmp_path, topic, born_host, store_host):
    clock = Clock()
    fast, _ = await open_store(tmp_path / "fast", clock=clock, store_host=store_host)
    slow, _ = await open_store(tmp_path / "slow", clock=clock, store_host=store_host)
    try:
        # 3 batches of 40 cross the 50-unit ConsumeQueue files of the test config
        for b in range(3):
            batch = BatchToStore(
                topic=topic,
                queue_id=1,
                items=items(40, b * 40),
                sys_flag=0,
                born_timestamp=5000 + b,
                born_host=born_host,
                reconsume_times=b,
            )
            r_fast = fast.put_batch(batch)
            r_slow = slow.put_messages(as_messages(batch))
            assert r_fast.status is PutMessageStatus.PUT_OK, r_fast.remark
            assert r_fast.msg_ids == r_slow.msg_ids
            assert r_fast.queue_offsets == r_slow.queue_offsets == list(range(b * 40, b * 40 + 40))
            assert r_fast.commit_log_offsets == r_slow.commit_log_offsets
            for phy in r_fast.commit_log_offsets:
                assert fast.read_record(phy) == slow.read_record(phy)
        assert stored(fast, topic, 1) == stored(slow, topic, 1)
        assert fast.get_max_offset(topic, 1) == 120
        for key in ("k7", "k119", "shared"):
            found = [m.commit_log_offset for m in fast.query_by_key(topic, key, 200, 0, 1 << 62)]
            want = [m.commit_log_offset for m in slow.query_by_key(topic, key, 200, 0, 1 << 62)]
            assert sorted(found) == sorted(want) != []
    finally:
        await fast.close()
        await slow.close()


async def test_put_batch_stores_the_given_properties_text(tmp_path):
    store, _ = await open_store(tmp_path)
    try:
        props = {"TAGS": "a", "CLUSTER": "c"}
        text = encode_properties(props)
        r = store.put_batch(
            BatchToStore("T", 0, [BatchItem(b"x", 0, props, text)], born_host=("1.2.3.4", 1))
        )
        assert r.status is PutMessageStatus.PUT_OK
        msg = store.look_message(r.commit_log_offsets[0])
        assert msg is not None and msg.properties == props
    finally:
        await store.close()


async def test_put_batch_rejects_bad_items_and_stores_nothing(tmp_path):
    store, _ = await open_store(tmp_path, max_message_size=100)
    try:
        good = BatchItem(b"x", 0, {}, None)
        cases = [
            (BatchToStore("T", 0, []), PutMessageStatus.MESSAGE_ILLEGAL),
            (BatchToStore("T", 0, [good, BatchItem(b"y" * 101, 0, {}, None)]),
             PutMessageStatus.MESSAGE_ILLEGAL),
            (BatchToStore("a/b", 0, [good]), PutMessageStatus.MESSAGE_ILLEGAL),
            (BatchToStore("T", -1, [good]), PutMessageStatus.MESSAGE_ILLEGAL),
            (BatchToStore("T", 0, [good, BatchItem(b"", 0, {"K": "v" * 40000}, None)]),
             PutMessageStatus.PROPERTIES_SIZE_EXCEEDED),
            (BatchToStore("T", 0, [good], born_host=("not-an-ip", 1)),
             PutMessageStatus.MESSAGE_ILLEGAL),
        ]  # fmt: skip
        for batch, status in cases:
            r = store.put_batch(batch)
            assert r.status is status, (batch, r)
            assert r.remark
        assert store.get_max_offset("T", 0) == 0
        assert store.commitlog.wrote == 0
    finally:
        await store.close()
