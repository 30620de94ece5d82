"""POP consumption (RocketMQ 5): broker-managed invisibility, acks and redelivery."""
