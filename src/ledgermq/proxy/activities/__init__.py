"""One module per group of RPCs; `ledgermq.proxy.service` wires them to gRPC.

Each activity takes the decoded request and a `CallContext` and returns the response
message, raising `ProxyError` for a failure the client should see as a status.
"""
