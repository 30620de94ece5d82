"""The Python SimpleConsumer against a NameServer + broker: receive, ack, change
invisible duration, batch ack, all routed by the broker name in the receipt handle."""

from __future__ import annotations

import time

import pytest

from ledgermq.client import Message, Producer
from ledgermq.client.errors import MQBrokerError, MQClientError
from ledgermq.client.simple_consumer import SimpleConsumer
from tests.cluster import InProcessCluster, running

pytestmark = pytest.mark.timeout(60)


async def receive_until(consumer: SimpleConsumer, want: int, **kw):
    got = []
    deadline = time.monotonic() + 20
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want} received"
        try:
            got += await consumer.receive(poll_time=1.0, **kw)
        except MQClientError as exc:
            if isinstance(exc, MQBrokerError):
                raise
            # the topic's route is not at the NameServer yet
    return got


async def test_simple_consumer_receive_ack_change_and_batch_ack(tmp_path):
    async with running(InProcessCluster(tmp_path)) as c:
        producer = c.track(Producer("pg", c.ns, instance=c.instance()))
        await producer.start()
        for i in range(4):
            await producer.send(Message("SimpleT", f"s{i}".encode(), tags="T"))
        consumer = c.track(SimpleConsumer("sg", c.ns, topic="SimpleT", expression="T"))
        await consumer.start()
        msgs = await receive_until(consumer, 4, invisible_time=0.6)
        assert sorted(m.body for m in msgs) == [b"s0", b"s1", b"s2", b"s3"]
        first, second, *rest = msgs
        await consumer.ack(first)
        await consumer.batch_ack(rest)
        # `second` gets more time, then is acked through its new handle
        renewed = await consumer.change_invisible_duration(second, 30)
        assert renewed.handle.pop_time >= second.handle.pop_time
        assert renewed.handle.invisible_time == 30_000
        await consumer.ack(renewed)
        # nothing comes back once their invisible time has passed
        revive = c.broker.pop.revive
        deadline = time.monotonic() + 10
        while revive.pending_count() or time.time() * 1000 < first.handle.pop_time + 1200:
            assert time.monotonic() < deadline
            assert await consumer.receive(poll_time=0.2) == []
        assert revive.revived == 0


async def test_simple_consumer_sees_unacked_messages_again(tmp_path):
    async with running(InProcessCluster(tmp_path)) as c:
        producer = c.track(Producer("pg", c.ns, instance=c.instance()))
        await producer.start()
        await producer.send(Message("AgainT", b"again"))
        consumer = c.track(SimpleConsumer("sg2", c.ns, topic="AgainT"))
        await consumer.start()
        (m,) = await receive_until(consumer, 1, invisible_time=0.4)
        assert m.reconsume_times == 0
        (again,) = await receive_until(consumer, 1, invisible_time=10)
        assert (again.body, again.topic, again.reconsume_times) == (b"again", "AgainT", 1)
        await consumer.ack(again)
