"""ledgermq: Apache RocketMQ 5 compatible message queue."""

__version__ = "0.1.0"
