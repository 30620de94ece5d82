"""The Settings the proxy answers on Telemetry (pure).

The reply echoes what the client said and fills the server-owned fields clients
rely on (PROTOCOL.md 10.3): a backoff policy (Node.js crashes without one),
publishing.max_body_size > 0 and validate_message_type for producers,
receive_batch_size, long_polling_timeout and fifo for consumers, metric.on.
"""

from __future__ import annotations

from ledgermq.proxy.config import ProxyConfig
from ledgermq.proxy.protocol import definition_pb2 as pb

_CONSUMERS = (
    pb.PUSH_CONSUMER,
    pb.SIMPLE_CONSUMER,
    pb.PULL_CONSUMER,
    pb.LITE_PUSH_CONSUMER,
    pb.LITE_SIMPLE_CONSUMER,
)
# Consumer redelivery waits: the broker's delay levels from level 3 (10 s) on, as the
# default retry policy of a RocketMQ 5 consumer group does.
_CONSUMER_FIRST_LEVEL = 3
_CONSUMER_MAX_ATTEMPTS = 17


def _ms(value: int) -> object:
    from google.protobuf.duration_pb2 import Duration

    return Duration(seconds=value // 1000, nanos=(value % 1000) * 1_000_000)


def producer_backoff(config: ProxyConfig) -> pb.RetryPolicy:
    return pb.RetryPolicy(
        max_attempts=config.grpc_client_producer_max_attempts,
        exponential_backoff=pb.ExponentialBackoff(
            initial=_ms(config.grpc_client_producer_backoff_initial_millis),
            max=_ms(config.grpc_client_producer_backoff_max_millis),
            multiplier=float(config.grpc_client_producer_backoff_multiplier),
        ),
    )


def consumer_backoff(config: ProxyConfig) -> pb.RetryPolicy:
    levels = config.delay_levels_ms()[_CONSUMER_FIRST_LEVEL - 1 :] or config.delay_levels_ms()
    return pb.RetryPolicy(
        max_attempts=_CONSUMER_MAX_ATTEMPTS,
        customized_backoff=pb.CustomizedBackoff(next=[_ms(ms) for ms in levels]),
    )


def settings_reply(client: pb.Settings, config: ProxyConfig, *, fifo: bool = False) -> pb.Settings:
    reply = pb.Settings()
    reply.CopyFrom(client)
    reply.metric.on = False
    reply.metric.ClearField("endpoints")
    if client.client_type in _CONSUMERS or client.WhichOneof("pub_sub") == "subscription":
        reply.backoff_policy.CopyFrom(consumer_backoff(config))
        sub = reply.subscription
        sub.fifo = fifo
        sub.receive_batch_size = config.grpc_client_consumer_receive_batch_size
        sub.long_polling_timeout.CopyFrom(
            _ms(config.grpc_client_consumer_max_long_polling_timeout_millis)
        )
    else:
        reply.backoff_policy.CopyFrom(producer_backoff(config))
        pub = reply.publishing
        pub.max_body_size = config.max_message_size
        pub.validate_message_type = True
    return reply
