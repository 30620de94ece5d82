"""kill -9 a real broker process between a POP and its redelivery: after the restart the
unacked messages come back once their invisible time is over, the acked one never does,
and nothing is popped a second time from the queue itself."""

from __future__ import annotations

import asyncio
import time

from ledgermq.common.message import decode_records
from ledgermq.common.pop_handle import ExtraInfo
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from tests.procs import ProcessGroup, free_port_pair

TOPIC = "PopCrashTopic"
GROUP = "PopCrashGroup"
INVISIBLE_MS = 2500


def _conf(tmp_path, port: int) -> str:
    conf = tmp_path / "broker.conf"
    conf.write_text(
        "\n".join(
            [
                "brokerClusterName=PopCluster",
                "brokerName=pop-broker",
                f"listenPort={port}",
                "brokerIP1=127.0.0.1",
                f"storePathRootDir={tmp_path / 'store'}",
                "flushDiskType=SYNC_FLUSH",
                "mappedFileSizeCommitLog=1048576",
            ]
        )
    )
    return str(conf)


def _cmd(code: int, ext: dict, body: bytes = b"") -> RemotingCommand:
    return RemotingCommand(code=code, ext_fields={k: str(v) for k, v in ext.items()}, body=body)


def _pop(poll_ms: int) -> RemotingCommand:
    return _cmd(
        RequestCode.POP_MESSAGE,
        {
            "consumerGroup": GROUP,
            "topic": TOPIC,
            "queueId": -1,
            "maxMsgNums": 32,
            "invisibleTime": INVISIBLE_MS,
            "pollTime": poll_ms,
            "bornTime": int(time.time() * 1000),
            "initMode": 0,
        },
    )


async def test_pop_checkpoints_and_acks_survive_kill_9(tmp_path, processes: ProcessGroup):
    port = free_port_pair()
    broker = processes.create(
        ["broker", "-c", _conf(tmp_path, port)], ready_text="boot success", log_name="broker.log"
    )
    await asyncio.to_thread(broker.start)
    addr = f"127.0.0.1:{port}"
    client = RemotingClient()
    try:
        created = await client.invoke(
            addr,
            _cmd(
                RequestCode.UPDATE_AND_CREATE_TOPIC,
                {"topic": TOPIC, "readQueueNums": 1, "writeQueueNums": 1, "perm": 6},
            ),
            5,
        )
        assert created.code == ResponseCode.SUCCESS, created.remark
        for i in range(3):
            sent = await client.invoke(
                addr,
                _cmd(
                    RequestCode.SEND_MESSAGE,
                    {
                        "producerGroup": "pg",
                        "topic": TOPIC,
                        "defaultTopic": "TBW102",
                        "defaultTopicQueueNums": 1,
                        "queueId": 0,
                        "sysFlag": 0,
                        "bornTimestamp": 0,
                        "flag": 0,
                    },
                    f"crash-{i}".encode(),
                ),
                5,
            )
            assert sent.code == ResponseCode.SUCCESS, sent.remark
        reply = await client.invoke(addr, _pop(0), 5)
        assert reply.code == ResponseCode.SUCCESS, reply.remark
        msgs = decode_records(reply.body)
        assert [m.body for m in msgs] == [b"crash-0", b"crash-1", b"crash-2"]
        info = ExtraInfo.parse(msgs[0].properties["POP_CK"])
        acked = await client.invoke(
            addr,
            _cmd(
                RequestCode.ACK_MESSAGE,
                {
                    "consumerGroup": GROUP,
                    "topic": TOPIC,
                    "queueId": 0,
                    "offset": 0,
                    "extraInfo": msgs[0].properties["POP_CK"],
                },
            ),
            5,
        )
        assert acked.code == ResponseCode.SUCCESS, acked.remark
    finally:
        await client.close()
    # right away: the consumer offsets (flushed every 5 s) are not on disk yet
    broker.kill()

    await asyncio.to_thread(broker.start)
    client = RemotingClient()
    seen: list[tuple[bytes, int, float]] = []
    try:
        deadline = time.monotonic() + 20
        quiet_after = info.pop_time + INVISIBLE_MS + 1500  # redelivery done by then
        while len(seen) < 2 or time.time() * 1000 < quiet_after:
            assert time.monotonic() < deadline, f"redelivered so far: {seen}"
            reply = await client.invoke(addr, _pop(500), 5)
            assert reply.code in (ResponseCode.SUCCESS, ResponseCode.PULL_NOT_FOUND), reply.remark
            if reply.code == ResponseCode.SUCCESS:
                seen += [
                    (m.body, m.reconsume_times, time.time() * 1000)
                    for m in decode_records(reply.body)
                ]
    finally:
        await client.close()
        broker.stop()
    assert sorted((body, times) for body, times, _ in seen) == [
        (b"crash-1", 1),
        (b"crash-2", 1),
    ], seen
    assert all(at >= info.pop_time + INVISIBLE_MS for _, _, at in seen), "came back too early"
    assert "Traceback" not in broker.output()
