"""LocalFileOffsetStore writes through the Disk layer (DESIGN principle 4)."""

from __future__ import annotations

import json

import pytest

from ledgermq.client.message import MessageQueue
from ledgermq.client.offset_store import LocalFileOffsetStore
from ledgermq.storage.disk import DiskFullError, FaultyDisk, OsDisk

MQ0 = MessageQueue("T", "broker-a", 0)
MQ1 = MessageQueue("T", "broker-a", 1)


class CountingDisk(FaultyDisk):
    """Records which files were replaced (the one door every write must use)."""

    def __init__(self) -> None:
        super().__init__(OsDisk())
        self.replaced: list[str] = []

    def replace_file(self, path: str, data: bytes) -> None:
        self.replaced.append(path)
        super().replace_file(path, data)


async def test_round_trip_through_the_disk(tmp_path):
    path = tmp_path / "cid" / "g" / "offsets.json"
    disk = CountingDisk()
    store = LocalFileOffsetStore(path, disk=disk)
    store.update(MQ0, 5)
    store.update(MQ1, 9)
    await store.persist()
    store.update(MQ0, 7)
    await store.persist()
    assert disk.replaced == [str(path), str(path.with_suffix(".json.bak")), str(path)]
    table = json.loads(path.read_text())["offsetTable"]
    assert {(e["queueId"], e["offset"]) for e in table} == {(0, 7), (1, 9)}

    again = LocalFileOffsetStore(path)  # the default OsDisk
    await again.load()
    assert (again.get(MQ0), again.get(MQ1)) == (7, 9)
    assert await again.read(MessageQueue("T", "broker-a", 5), from_store=True) == -1
    assert not path.with_suffix(".json.tmp").exists()


async def test_survives_a_partial_tmp_file_and_a_torn_main_file(tmp_path):
    path = tmp_path / "offsets.json"
    store = LocalFileOffsetStore(path)
    store.update(MQ0, 3)
    await store.persist()
    store.update(MQ0, 4)
    await store.persist()

    # A crash while writing the next version leaves a partial tmp file behind.
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(b'{"offsetTable": [{"topic": "T", "bro')
    again = LocalFileOffsetStore(path)
    await again.load()
    assert again.get(MQ0) == 4
    again.update(MQ0, 6)
    await again.persist()
    assert not tmp.exists()
    third = LocalFileOffsetStore(path)
    await third.load()
    assert third.get(MQ0) == 6

    # A main file that is garbage (e.g. written by something else) falls back to .bak.
    path.write_bytes(b"\x00\x00garbage")
    fallback = LocalFileOffsetStore(path)
    await fallback.load()
    assert fallback.get(MQ0) == 4


async def test_disk_full_keeps_the_previous_file(tmp_path):
    path = tmp_path / "offsets.json"
    disk = FaultyDisk(OsDisk())
    store = LocalFileOffsetStore(path, disk=disk)
    store.update(MQ0, 1)
    await store.persist()
    disk.space_left = 0
    store.update(MQ0, 2)
    with pytest.raises(DiskFullError):
        await store.persist()
    reread = LocalFileOffsetStore(path)
    await reread.load()
    assert reread.get(MQ0) == 1
