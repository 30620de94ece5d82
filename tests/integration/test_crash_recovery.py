"""kill -9 a real broker process in the middle of SYNC_FLUSH sends, restart it, and
read back every message it acknowledged, at the queue offset it acknowledged."""

from __future__ import annotations

import asyncio

from ledgermq.common.message import decode_records
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.errors import RemotingException
from tests.procs import ProcessGroup, ServerProcess, free_port_pair

TOPIC = "CrashTopic"
QUEUES = 4


def _broker_conf(tmp_path, port: int) -> str:
    conf = tmp_path / "broker.conf"
    conf.write_text(
        "\n".join(
            [
                "brokerClusterName=CrashCluster",
                "brokerName=crash-broker",
                "brokerId=0",
                f"listenPort={port}",
                "brokerIP1=127.0.0.1",
                f"storePathRootDir={tmp_path / 'store'}",
                "flushDiskType=SYNC_FLUSH",
                # Small segments so the crash window also covers file rollover.
                "mappedFileSizeCommitLog=262144",
                "mappedFileSizeConsumeQueue=6000",
            ]
        )
    )
    return str(conf)


def _send_request(seq: int) -> RemotingCommand:
    return RemotingCommand(
        code=RequestCode.SEND_MESSAGE_V2,
        ext_fields={
            "a": "crash-producer",
            "b": TOPIC,
            "c": "TBW102",
            "d": str(QUEUES),
            "e": str(seq % QUEUES),
            "f": "0",
            "g": "0",
            "h": "0",
            "i": f"KEYS\x01k{seq}\x02",
            "j": "0",
            "k": "false",
            "m": "false",
        },
        body=f"message-{seq:08d}".encode() + b"x" * 200,
    )


async def _produce_until_killed(addr: str, broker: ServerProcess, kill_after: int):
    client = RemotingClient()
    acked: dict[int, tuple[int, int]] = {}  # seq -> (queueId, queueOffset)
    next_seq = 0
    killed = asyncio.Event()

    async def one_sender():
        nonlocal next_seq
        while not killed.is_set():
            seq = next_seq
            next_seq += 1
            try:
                reply = await client.invoke(addr, _send_request(seq), timeout=5)
            except RemotingException:
                return
            if reply.code == ResponseCode.SUCCESS:
                acked[seq] = (
                    int(reply.ext_fields["queueId"]),
                    int(reply.ext_fields["queueOffset"]),
                )
                if len(acked) >= kill_after and not killed.is_set():
                    killed.set()
                    broker.kill()

    await asyncio.gather(*(one_sender() for _ in range(32)))
    await client.close()
    return acked


async def _pull_all(addr: str) -> dict[tuple[int, int], bytes]:
    client = RemotingClient()
    stored: dict[tuple[int, int], bytes] = {}
    for qid in range(QUEUES):
        offset = 0
        while True:
            reply = await client.invoke(
                addr,
                RemotingCommand(
                    code=RequestCode.PULL_MESSAGE,
                    ext_fields={
                        "consumerGroup": "checker",
                        "topic": TOPIC,
                        "queueId": str(qid),
                        "queueOffset": str(offset),
                        "maxMsgNums": "32",
                        "sysFlag": "4",  # SUBSCRIPTION: the filter comes with the pull
                        "subscription": "*",
                        "commitOffset": "0",
                        "suspendTimeoutMillis": "0",
                        "subVersion": "0",
                    },
                ),
                timeout=10,
            )
            for field in ("suggestWhichBrokerId", "nextBeginOffset", "minOffset", "maxOffset"):
                assert field in reply.ext_fields, f"pull reply without {field}"
            if reply.code != ResponseCode.SUCCESS:
                break
            for msg in decode_records(reply.body):
                stored[(msg.queue_id, msg.queue_offset)] = msg.body
            offset = int(reply.ext_fields["nextBeginOffset"])
    await client.close()
    return stored


async def test_every_sync_flush_ack_survives_kill_9(tmp_path, processes: ProcessGroup):
    port = free_port_pair()
    conf = _broker_conf(tmp_path, port)
    # The `processes` fixture kills the broker at teardown, however this test ends.
    broker = processes.create(
        ["broker", "-c", conf], ready_text="boot success", log_name="broker.log"
    )
    await asyncio.to_thread(broker.start)
    addr = f"127.0.0.1:{port}"
    client = RemotingClient()
    try:
        created = await client.invoke(
            addr,
            RemotingCommand(
                code=RequestCode.UPDATE_AND_CREATE_TOPIC,
                ext_fields={
                    "topic": TOPIC,
                    "defaultTopic": "TBW102",
                    "readQueueNums": str(QUEUES),
                    "writeQueueNums": str(QUEUES),
                    "perm": "6",
                    "topicFilterType": "SINGLE_TAG",
                    "order": "false",
                },
            ),
        )
        assert created.code == ResponseCode.SUCCESS, created.remark
    finally:
        await client.close()

    acked = await _produce_until_killed(addr, broker, kill_after=3000)
    assert len(acked) >= 3000

    await asyncio.to_thread(broker.start)
    try:
        stored = await _pull_all(addr)
    finally:
        broker.stop()

    lost = [
        seq
        for seq, where in acked.items()
        if stored.get(where, b"")[:16] != f"message-{seq:08d}".encode()
    ]
    assert not lost, f"{len(lost)} acknowledged messages lost or moved, e.g. {lost[:5]}"
    assert "Traceback" not in broker.output()
