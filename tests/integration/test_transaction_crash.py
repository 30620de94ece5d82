"""kill -9 a real broker with one transaction settled and one pending; after the restart
the pending one is checked and committed, the settled one is neither asked about nor
delivered twice."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from ledgermq.common.message import (
    decode_record,
    decode_records,
    encode_properties,
    parse_offset_msg_id,
)
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode, ResponseCode
from ledgermq.remoting.connection import Dispatcher
from tests.procs import ProcessGroup, free_port_pair

pytestmark = pytest.mark.timeout(120)

TOPIC = "TxCrashTopic"
PG = "tx-crash-group"


def _broker_conf(tmp_path, port: int) -> str:
    conf = tmp_path / "broker.conf"
    conf.write_text(
        "\n".join(
            [
                "brokerClusterName=TxCluster",
                "brokerName=tx-broker",
                f"listenPort={port}",
                "brokerIP1=127.0.0.1",
                f"storePathRootDir={tmp_path / 'store'}",
                "flushDiskType=SYNC_FLUSH",
                "transactionCheckInterval=200",
                "transactionTimeOut=1000",
            ]
        )
    )
    return str(conf)


def _half(body: bytes, uniq: str) -> RemotingCommand:
    props = {"TRAN_MSG": "true", "PGROUP": PG, "UNIQ_KEY": uniq, "WAIT": "true"}
    return RemotingCommand(
        code=RequestCode.SEND_MESSAGE_V2,
        ext_fields={
            "a": PG,
            "b": TOPIC,
            "c": "TBW102",
            "d": "1",
            "e": "0",
            "f": "4",
            "g": str(int(time.time() * 1000)),
            "h": "0",
            "i": encode_properties(props),
            "j": "0",
            "k": "false",
            "m": "false",
        },
        body=body,
    )


def _end(group: str, queue_offset: str, phy: str, state: int, msg_id: str, check: bool):
    return RemotingCommand(
        code=RequestCode.END_TRANSACTION,
        ext_fields={
            "producerGroup": group,
            "tranStateTableOffset": queue_offset,
            "commitLogOffset": phy,
            "commitOrRollback": str(state),
            "msgId": msg_id,
            "fromTransactionCheck": "true" if check else "false",
        },
    )


async def _visible(client: RemotingClient, addr: str) -> list[bytes]:
    reply = await client.invoke(
        addr,
        RemotingCommand(
            code=RequestCode.PULL_MESSAGE,
            ext_fields={
                "consumerGroup": "reader",
                "topic": TOPIC,
                "queueId": "0",
                "queueOffset": "0",
                "maxMsgNums": "32",
                "sysFlag": "4",
                "subscription": "*",
                "commitOffset": "0",
                "suspendTimeoutMillis": "0",
                "subVersion": "0",
            },
        ),
        timeout=10,
    )
    if reply.code != ResponseCode.SUCCESS:
        return []
    return [m.body for m in decode_records(reply.body)]


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_pending_transaction_survives_kill_9(tmp_path, processes: ProcessGroup):
    port = free_port_pair()
    conf = _broker_conf(tmp_path, port)
    broker = processes.create(
        ["broker", "-c", conf], ready_text="boot success", log_name="broker.log"
    )
    await asyncio.to_thread(broker.start)
    addr = f"127.0.0.1:{port}"

    client = RemotingClient()
    try:
        settled = await client.invoke(addr, _half(b"settled", "U-SETTLED"))
        pending = await client.invoke(addr, _half(b"pending", "U-PENDING"))
        assert settled.code == pending.code == ResponseCode.SUCCESS
        _, _, phy = parse_offset_msg_id(settled.ext_fields["msgId"])
        conn = await client.connection(addr)
        conn.oneway(_end(PG, settled.ext_fields["queueOffset"], str(phy), 8, "U-SETTLED", False))

        async def settled_visible() -> bool:
            return await _visible(client, addr) == [b"settled"]

        await _until(settled_visible, 10, "the commit before the crash")
    finally:
        await client.close()
    broker.kill()

    await asyncio.to_thread(broker.start)
    asked: list[bytes] = []

    def on_check(conn, cmd):
        msg, _ = decode_record(cmd.body)
        asked.append(msg.body)
        ext = cmd.ext_fields
        conn.oneway(
            _end(PG, ext["tranStateTableOffset"], ext["commitLogOffset"], 8, ext["msgId"], True)
        )

    dispatcher = Dispatcher()
    dispatcher.register(RequestCode.CHECK_TRANSACTION_STATE, on_check)
    producer = RemotingClient(dispatcher)
    try:
        heartbeat = json.dumps(
            {"clientID": "tx@1", "producerDataSet": [{"groupName": PG}], "consumerDataSet": []}
        ).encode()
        r = await producer.invoke(
            addr, RemotingCommand(code=RequestCode.HEART_BEAT, body=heartbeat)
        )
        assert r.code == ResponseCode.SUCCESS

        async def both_visible() -> bool:
            return sorted(await _visible(producer, addr)) == [b"pending", b"settled"]

        await _until(both_visible, 30, "the pending transaction's commit after the restart")
        # a later transaction is checked in later rounds; by then nothing earlier has been
        # asked about again or delivered twice
        assert (await producer.invoke(addr, _half(b"marker", "U-MARKER"))).code == 0

        async def marker_visible() -> bool:
            return len(await _visible(producer, addr)) == 3

        await _until(marker_visible, 30, "the marker transaction's commit")
        assert asked == [b"pending", b"marker"]
        assert sorted(await _visible(producer, addr)) == [b"marker", b"pending", b"settled"]
    finally:
        await producer.close()
        broker.stop()
    assert "Traceback" not in broker.output()
