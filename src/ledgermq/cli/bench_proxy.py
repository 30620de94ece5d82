"""`ledgermq bench proxy-produce`: SendMessage throughput through the gRPC proxy.

The gRPC counterpart of `bench produce`: same output fields, same in-flight model (N
workers, each awaiting one SendMessage with one message at a time), its own process.
It calls our generated stubs on grpc.aio directly (no client library in between) and
sends what the official v5 clients send: the x-mq-* metadata on every call and the
system properties message_id, message_type, born_timestamp, born_host, body_encoding.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import time
import uuid

from ledgermq.cli.bench import BenchResult, Progress, _flush_mode, produce_result

CLIENT_VERSION = "5.1.2"


def _metadata_base(client_id: str) -> list[tuple[str, str]]:
    """The headers the Python v5 client puts on every call (PROTOCOL.md 10.3); ACL is
    off, so `authorization` carries an empty credential as that client sends it."""
    now = time.strftime("%Y%m%dT%H%M%SZ", time.localtime())
    return [
        ("x-mq-language", "PYTHON"),
        ("x-mq-protocol", "GRPC_V2"),
        ("x-mq-client-version", CLIENT_VERSION),
        ("x-mq-client-id", client_id),
        ("x-mq-date-time", now),
        ("x-mq-namespace", ""),
        (
            "authorization",
            "MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=00",
        ),
    ]


class MessageIds:
    """Ids shaped like the v5 clients' (version 01, host and pid bits, a counter), as
    34 uppercase hex digits; unique within this run and across processes."""

    def __init__(self) -> None:
        self._prefix = f"01{uuid.uuid4().hex[:12]}{os.getpid() & 0xFFFF:04X}".upper()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:016X}"


async def bench_proxy_produce(args: argparse.Namespace) -> BenchResult:
    import grpc
    from google.protobuf.timestamp_pb2 import Timestamp

    from ledgermq.proxy.protocol import definition_pb2 as pb
    from ledgermq.proxy.protocol import service_pb2 as svc
    from ledgermq.proxy.protocol import service_pb2_grpc as svc_grpc

    host, _, port = args.endpoint.rpartition(":")
    options = [
        ("grpc.max_send_message_length", 130 * 1024 * 1024),
        ("grpc.max_receive_message_length", 130 * 1024 * 1024),
        # Separate channels must not share one subchannel (one TCP connection).
        ("grpc.use_local_subchannel_pool", 1),
    ]
    channels = [
        grpc.aio.insecure_channel(args.endpoint, options=options) for _ in range(args.channels)
    ]
    stubs = [svc_grpc.MessagingServiceStub(ch) for ch in channels]
    client_id = f"{socket.gethostname()}@{os.getpid()}@0@{uuid.uuid4().hex[:10]}"
    base = _metadata_base(client_id)
    born_host = socket.gethostname()
    ids = MessageIds()
    body = b"x" * args.size
    topic = pb.Resource(name=args.topic)

    def request() -> tuple[svc.SendMessageRequest, list[tuple[str, str]]]:
        born = Timestamp()
        born.GetCurrentTime()
        msg = pb.Message(
            topic=topic,
            system_properties=pb.SystemProperties(
                message_id=ids.next(),
                message_type=pb.NORMAL,
                born_timestamp=born,
                born_host=born_host,
                body_encoding=pb.IDENTITY,
            ),
            body=body,
        )
        return svc.SendMessageRequest(messages=[msg]), [
            *base,
            ("x-mq-request-id", str(uuid.uuid4())),
        ]

    async def send(stub: svc_grpc.MessagingServiceStub) -> bool:
        req, metadata = request()
        resp = await stub.SendMessage(req, metadata=metadata, timeout=args.timeout)
        return resp.status.code == pb.OK and len(resp.entries) == 1

    # The route (as the clients fetch it first) and one send, outside the measured window.
    try:
        route = await stubs[0].QueryRoute(
            svc.QueryRouteRequest(
                topic=topic,
                endpoints=pb.Endpoints(
                    scheme=pb.IPv4, addresses=[pb.Address(host=host, port=int(port))]
                ),
            ),
            metadata=[*base, ("x-mq-request-id", str(uuid.uuid4()))],
            timeout=args.timeout,
        )
    except grpc.RpcError as exc:
        raise SystemExit(
            f"QueryRoute to {args.endpoint} failed: {exc.code()} {exc.details()}"
        ) from None
    if route.status.code != pb.OK:
        raise SystemExit(f"QueryRoute {args.topic}: {route.status.code} {route.status.message}")
    for stub in stubs:
        if not await send(stub):
            raise SystemExit(f"the first SendMessage to {args.endpoint} failed")

    latencies: list[float] = []
    progress = Progress(not args.json or args.progress)
    stop_at = time.monotonic() + args.duration
    remaining = args.count if args.count else None
    errors = 0

    async def worker(stub: svc_grpc.MessagingServiceStub) -> None:
        nonlocal remaining, errors
        while time.monotonic() < stop_at:
            if remaining is not None:
                if remaining <= 0:
                    return
                remaining -= 1
            started = time.perf_counter()
            try:
                ok = await send(stub)
            except grpc.RpcError:
                ok = False
            if not ok:
                errors += 1
                progress.errors += 1
                if remaining is not None:
                    remaining += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            progress.count += 1

    progress.start()
    started = time.monotonic()
    cpu_started = time.process_time()
    await asyncio.gather(*(worker(stubs[i % len(stubs)]) for i in range(args.inflight)))
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_started
    progress.stop()
    for ch in channels:
        await ch.close()
    flush = await _flush_mode(args.namesrv, args.topic) if args.namesrv else "unknown (no -n)"
    return produce_result("proxy-produce", latencies, 1, errors, elapsed, cpu, args, flush)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", required=True, help="the proxy's gRPC address, host:port")
    p.add_argument("-n", "--namesrv", help="NameServer, only to report the brokers' flushDiskType")
    p.add_argument("-t", "--topic", default="BenchTopic")
    p.add_argument("-s", "--size", type=int, default=1024, help="body bytes (1024)")
    p.add_argument("--inflight", type=int, default=64, help="requests in flight (64)")
    p.add_argument("--channels", type=int, default=1, help="gRPC channels (connections), 1")
    p.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--count", type=int, default=0, help="stop after this many messages")
    p.add_argument("--timeout", type=float, default=10.0, help="SendMessage deadline, s")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--progress", action="store_true", help="progress even with --json")
