"""The broker's request code -> handler table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledgermq.broker.processors.admin import AdminProcessor
from ledgermq.broker.processors.client_manage import ClientManageProcessor
from ledgermq.broker.processors.end_transaction import EndTransactionProcessor
from ledgermq.broker.processors.lock import LockProcessor
from ledgermq.broker.processors.offsets import OffsetProcessor
from ledgermq.broker.processors.pull import PullProcessor
from ledgermq.broker.processors.query import QueryProcessor
from ledgermq.broker.processors.send import SendProcessor
from ledgermq.broker.processors.send_back import SendBackProcessor
from ledgermq.broker.processors.topic_admin import TopicAdminProcessor
from ledgermq.remoting.codes import RequestCode as R
from ledgermq.remoting.connection import Dispatcher

if TYPE_CHECKING:
    from ledgermq.broker.broker import Broker


def register_processors(broker: Broker, d: Dispatcher) -> None:
    send = SendProcessor(broker)
    d.register(R.SEND_MESSAGE, send.handle, group=send.handle_group)
    d.register(R.SEND_MESSAGE_V2, send.handle, group=send.handle_group)
    d.register(R.SEND_BATCH_MESSAGE, send.handle_batch)
    d.register(R.CONSUMER_SEND_MSG_BACK, SendBackProcessor(broker).handle)
    d.register(R.END_TRANSACTION, EndTransactionProcessor(broker).handle)

    pull = PullProcessor(broker)
    d.register(R.PULL_MESSAGE, pull.handle)
    d.register(R.LITE_PULL_MESSAGE, pull.handle)

    offsets = OffsetProcessor(broker)
    d.register(R.QUERY_CONSUMER_OFFSET, offsets.query_consumer_offset)
    d.register(R.UPDATE_CONSUMER_OFFSET, offsets.update_consumer_offset)
    d.register(R.GET_MAX_OFFSET, offsets.get_max_offset)
    d.register(R.GET_MIN_OFFSET, offsets.get_min_offset)
    d.register(R.SEARCH_OFFSET_BY_TIMESTAMP, offsets.search_offset)
    d.register(R.GET_EARLIEST_MSG_STORETIME, offsets.earliest_store_time)
    d.register(R.GET_ALL_CONSUMER_OFFSET, offsets.get_all_consumer_offsets)
    d.register(R.GET_ALL_DELAY_OFFSET, offsets.get_all_delay_offsets)

    clients = ClientManageProcessor(broker)
    d.register(R.HEART_BEAT, clients.heartbeat)
    d.register(R.UNREGISTER_CLIENT, clients.unregister)
    d.register(R.GET_CONSUMER_LIST_BY_GROUP, clients.consumer_list)
    d.register(R.CHECK_CLIENT_CONFIG, clients.check_client_config)
    d.register(R.GET_CONSUMER_CONNECTION_LIST, clients.consumer_connections)
    d.register(R.GET_PRODUCER_CONNECTION_LIST, clients.producer_connections)
    d.register(R.GET_CONSUMER_RUNNING_INFO, clients.consumer_running_info)

    lock = LockProcessor(broker)
    d.register(R.LOCK_BATCH_MQ, lock.lock)
    d.register(R.UNLOCK_BATCH_MQ, lock.unlock)

    query = QueryProcessor(broker)
    d.register(R.QUERY_MESSAGE, query.query_message)
    d.register(R.VIEW_MESSAGE_BY_ID, query.view_by_id)

    topics = TopicAdminProcessor(broker)
    d.register(R.UPDATE_AND_CREATE_TOPIC, topics.create_or_update)
    d.register(R.DELETE_TOPIC_IN_BROKER, topics.delete)
    d.register(R.GET_TOPIC_CONFIG, topics.get)
    d.register(R.GET_ALL_TOPIC_CONFIG, topics.get_all)

    admin = AdminProcessor(broker)
    d.register(R.GET_BROKER_RUNTIME_INFO, admin.runtime_info)
    d.register(R.GET_BROKER_CONFIG, admin.get_broker_config)
    d.register(R.UPDATE_BROKER_CONFIG, admin.update_broker_config)
    d.register(R.GET_TOPIC_STATS_INFO, admin.topic_stats)
    d.register(R.GET_CONSUME_STATS, admin.consume_stats)
    d.register(R.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, admin.update_subscription_group)
    d.register(R.GET_ALL_SUBSCRIPTIONGROUP_CONFIG, admin.get_all_subscription_groups)
    d.register(R.DELETE_SUBSCRIPTIONGROUP, admin.delete_subscription_group)
    d.register(R.INVOKE_BROKER_TO_RESET_OFFSET, admin.reset_offset)
