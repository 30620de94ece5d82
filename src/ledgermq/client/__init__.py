"""Python client for ledgermq and Apache RocketMQ 5 (remoting protocol).

producer = Producer("pg", "127.0.0.1:9876")
await producer.start()
await producer.send(Message("Topic", b"hello", tags="A"))

consumer = PushConsumer("cg", "127.0.0.1:9876")
consumer.subscribe("Topic", "A || B")
consumer.register_listener(lambda msgs: ConsumeResult.SUCCESS)
await consumer.start()
"""

from ledgermq.client.admin import AdminClient, ClusterInfo, ConsumeStats, TopicOffset
from ledgermq.client.allocate import allocate_averagely, allocate_by_circle
from ledgermq.client.errors import MQBrokerError, MQClientError
from ledgermq.client.instance import ClientInstance, ClientRegistry
from ledgermq.client.lite_pull_consumer import LitePullConsumer
from ledgermq.client.message import (
    ConsumeResult,
    Message,
    MessageExt,
    MessageQueue,
    OrderlyResult,
    SendResult,
    SendStatus,
)
from ledgermq.client.producer import Producer, select_by_hash
from ledgermq.client.push_consumer import PushConsumer
from ledgermq.client.simple_consumer import ReceivedMessage, SimpleConsumer
from ledgermq.client.sync import SyncProducer
from ledgermq.client.transaction import LocalTransactionState, TransactionProducer

__all__ = [
    "AdminClient",
    "ClientInstance",
    "ClientRegistry",
    "ClusterInfo",
    "ConsumeResult",
    "ConsumeStats",
    "LitePullConsumer",
    "LocalTransactionState",
    "MQBrokerError",
    "MQClientError",
    "Message",
    "MessageExt",
    "MessageQueue",
    "OrderlyResult",
    "Producer",
    "PushConsumer",
    "ReceivedMessage",
    "SendResult",
    "SendStatus",
    "SimpleConsumer",
    "SyncProducer",
    "TopicOffset",
    "TransactionProducer",
    "allocate_averagely",
    "allocate_by_circle",
    "select_by_hash",
]
