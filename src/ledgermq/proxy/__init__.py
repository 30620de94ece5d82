"""gRPC proxy: the apache.rocketmq.v2 MessagingService in front of our brokers.

The proxy speaks gRPC to the official v5 clients and remoting to the NameServer and
brokers through `ledgermq.client`. It runs as its own process (`ledgermq proxy`,
cluster mode) or inside a broker (`ledgermq broker --enable-proxy`, local mode).
"""
