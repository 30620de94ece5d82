"""HandleRenewer with a fake broker and a fake clock."""

from __future__ import annotations

import asyncio

from ledgermq.common.pop_handle import ExtraInfo
from ledgermq.proxy.receipt import ReceiptHandle
from ledgermq.proxy.renew import HandleRenewer, RenewPolicy
from ledgermq.proxy.status import Code, ProxyError

POLICY = RenewPolicy(slice_ms=60_000, ahead_ms=10_000, max_ms=300_000, period_s=0.01)


def handle(pop_time=0, invisible=60_000, offset=5) -> ReceiptHandle:
    return ReceiptHandle(ExtraInfo(offset, pop_time, invisible, 1, "0", "b", 0, offset), 77)


class FakeBroker:
    def __init__(self, clock) -> None:
        self.clock = clock
        self.changes: list[tuple[ReceiptHandle, int]] = []
        self.refuse = False
        self.gate: asyncio.Event | None = None

    async def change(self, group, topic, h, invisible_ms):
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse:
            raise ProxyError(Code.INVALID_RECEIPT_HANDLE, "stale")
        self.changes.append((h, invisible_ms))
        return h.renewed(self.clock[0], invisible_ms, h.info.revive_qid)


def make(online=lambda cid: True):
    now = [0]
    broker = FakeBroker(now)
    renewer = HandleRenewer(broker.change, POLICY, client_online=online, clock_ms=lambda: now[0])
    return renewer, broker, now


async def test_renews_only_when_about_to_expire_and_ack_gets_the_newest():
    renewer, broker, now = make()
    first = handle()
    renewer.track("c1", "G", "T", first)
    now[0] = 49_000  # 11 s left
    assert await renewer.renew_due() == 0
    now[0] = 51_000  # 9 s left
    assert await renewer.renew_due() == 1
    assert broker.changes == [(first, 60_000)]
    now[0] = 100_000  # the renewed one runs to 111 s: not yet
    assert await renewer.renew_due() == 0
    newest = await renewer.release("G", first.encode())
    assert newest is not None and newest.expires_at_ms == 111_000
    assert await renewer.release("G", first.encode()) is None and len(renewer) == 0


async def test_stops_for_a_gone_client_after_the_maximum_and_when_refused():
    online = {"c1": True, "c2": True, "c3": True}
    renewer, broker, now = make(lambda cid: online[cid])
    renewer.track("c1", "G", "T", handle(offset=1))
    renewer.track("c2", "G", "T", handle(offset=2))
    online["c1"] = False
    now[0] = 55_000
    assert await renewer.renew_due() == 1 and len(renewer) == 1  # c1 forgotten, c2 renewed
    now[0] = 301_000
    assert await renewer.renew_due() == 0 and len(renewer) == 0  # past renewMaxTimeMillis
    renewer.track("c3", "G", "T", handle(pop_time=301_000, offset=3))
    broker.refuse = True
    now[0] = 355_000
    await renewer.renew_due()
    assert len(renewer) == 0
    assert renewer.drop_client("c3") == 0


async def test_drop_client_and_expired_handles():
    renewer, _, now = make()
    renewer.track("c1", "G", "T", handle(offset=1))
    renewer.track("c1", "G", "T", handle(offset=2))
    assert renewer.drop_client("c1") == 2
    renewer.track("c2", "G", "T", handle(offset=3))
    now[0] = 61_000  # already expired: the broker revives it, renewing is pointless
    assert await renewer.renew_due() == 0 and len(renewer) == 0


async def test_release_waits_for_a_renewal_in_flight():
    renewer, broker, now = make()
    first = handle()
    renewer.track("c1", "G", "T", first)
    broker.gate = asyncio.Event()
    now[0] = 55_000
    scan = asyncio.create_task(renewer.renew_due())
    await asyncio.sleep(0)
    release = asyncio.create_task(renewer.release("G", first.encode()))
    await asyncio.sleep(0.01)
    assert not release.done()
    broker.gate.set()
    newest = await release
    await scan
    assert newest is not None and newest.info.pop_time == 55_000


async def test_scanner_task_runs_and_stops():
    renewer, broker, now = make()
    renewer.track("c1", "G", "T", handle())
    now[0] = 55_000
    renewer.start()
    for _ in range(200):
        if broker.changes:
            break
        await asyncio.sleep(0.01)
    await renewer.stop()
    assert broker.changes
