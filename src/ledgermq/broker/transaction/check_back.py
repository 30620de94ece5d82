"""CHECK_TRANSACTION_STATE (39): ask one producer of a group about a half message.

Whatever registered the producer group by HEARTBEAT gets the request: a remoting client,
or a proxy in cluster mode that forwards it to its gRPC clients. The producer answers
later with END_TRANSACTION (fromTransactionCheck=true).
"""

from __future__ import annotations

import logging
import random

from ledgermq.broker.client_manager import ClientChannel, ClientManager
from ledgermq.broker.topics import TRANS_HALF_TOPIC
from ledgermq.broker.transaction.records import real_queue_id
from ledgermq.common.message import (
    PROPERTY_REAL_TOPIC,
    PROPERTY_UNIQ_KEY,
    MessageExt,
    encode_record,
)
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode

log = logging.getLogger(__name__)


def pick_producer_channel(
    clients: ClientManager, group: str, rng: random.Random
) -> ClientChannel | None:
    """One open connection that registered `group` as a producer, or None."""
    channels = [c for c in clients.producer_channels(group) if c.conn.is_open]
    return rng.choice(channels) if channels else None


def check_request(half: MessageExt, broker_name: str) -> RemotingCommand:
    """The request for the half message `half` (the copy just put, with its offsets)."""
    uniq = half.properties.get(PROPERTY_UNIQ_KEY, "")
    ext = {
        # as upstream: the topic the record was read from, the real one is in the body
        "topic": TRANS_HALF_TOPIC,
        "tranStateTableOffset": str(half.queue_offset),
        "commitLogOffset": str(half.commit_log_offset),
        "offsetMsgId": half.offset_msg_id,
        "bname": broker_name,
    }
    if uniq:
        ext["msgId"] = uniq
        ext["transactionId"] = uniq
    shown = MessageExt(
        topic=half.properties.get(PROPERTY_REAL_TOPIC) or half.topic,
        body=half.body,
        flag=half.flag,
        properties=half.properties,
        queue_id=real_queue_id(half.properties),
        queue_offset=half.queue_offset,
        commit_log_offset=half.commit_log_offset,
        sys_flag=half.sys_flag,
        born_timestamp=half.born_timestamp,
        born_host=half.born_host,
        store_timestamp=half.store_timestamp,
        store_host=half.store_host,
        reconsume_times=half.reconsume_times,
        prepared_transaction_offset=half.prepared_transaction_offset,
    )
    return RemotingCommand(
        code=RequestCode.CHECK_TRANSACTION_STATE, ext_fields=ext, body=encode_record(shown)
    )


def send_check_to_producer(
    clients: ClientManager, group: str, request: RemotingCommand, rng: random.Random
) -> bool:
    """Sends `request` oneway to one producer of `group`; False if none is connected."""
    channel = pick_producer_channel(clients, group, rng)
    if channel is None:
        log.warning("transaction check: no producer of group %s is connected", group)
        return False
    try:
        channel.conn.oneway(request)
    except Exception as exc:  # a closing connection: the next round asks again
        log.warning("transaction check to %s failed: %s", channel.conn.remote_address, exc)
        return False
    return True
