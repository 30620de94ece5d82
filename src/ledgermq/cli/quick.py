"""`ledgermq produce` and `ledgermq consume`: quick manual use from a shell."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from ledgermq.cli.runtime import run_async


async def _produce(args: argparse.Namespace) -> int:
    from ledgermq.client.message import Message
    from ledgermq.client.producer import Producer

    producer = Producer(args.group, args.namesrv)
    await producer.start()
    failures = 0
    try:
        bodies = [args.message.encode()] if args.message is not None else None
        if bodies is None:
            bodies = [line.rstrip("\n").encode() for line in sys.stdin]
        for i in range(args.count):
            for body in bodies:
                msg = Message(
                    args.topic, body, tags=args.tags, keys=args.keys, delay_level=args.delay_level
                )
                try:
                    result = await producer.send(msg)
                except Exception as exc:  # noqa: BLE001 - reported per message
                    failures += 1
                    print(f"send failed: {exc}", file=sys.stderr)
                    continue
                line = {
                    "status": result.status.value,
                    "msgId": result.msg_id,
                    "offsetMsgId": result.offset_msg_id,
                    "queue": str(result.message_queue),
                    "queueOffset": result.queue_offset,
                }
                print(
                    json.dumps(line)
                    if args.json
                    else f"{i}: {line['status']} msgId={line['msgId']} queue={line['queue']} "
                    f"queueOffset={line['queueOffset']}"
                )
    finally:
        await producer.shutdown()
    return 1 if failures else 0


async def _consume(args: argparse.Namespace) -> int:
    from ledgermq.client.message import ConsumeResult
    from ledgermq.client.push_consumer import PushConsumer

    done = asyncio.Event()
    seen = 0

    def listener(msgs: list) -> ConsumeResult:
        nonlocal seen
        for msg in msgs:
            seen += 1
            if args.json:
                print(
                    json.dumps(
                        {
                            "topic": msg.topic,
                            "queueId": msg.queue_id,
                            "queueOffset": msg.queue_offset,
                            "msgId": msg.msg_id,
                            "tags": msg.tags,
                            "keys": msg.keys,
                            "body": msg.body.decode(errors="replace"),
                        }
                    ),
                    flush=True,
                )
            else:
                print(
                    f"{msg.topic}#{msg.queue_id}@{msg.queue_offset} tags={msg.tags} "
                    f"msgId={msg.msg_id}: {msg.body.decode(errors='replace')}",
                    flush=True,
                )
            if args.count and seen >= args.count:
                done.set()
        return ConsumeResult.SUCCESS

    consumer = PushConsumer(
        args.group,
        args.namesrv,
        consume_from_where="CONSUME_FROM_FIRST_OFFSET"
        if args.from_first
        else "CONSUME_FROM_LAST_OFFSET",
    )
    consumer.subscribe(args.topic, args.expression)
    consumer.register_listener(listener)
    await consumer.start()
    stop = asyncio.ensure_future(done.wait())
    from ledgermq.cli.runtime import wait_for_shutdown_signal

    signal_wait = asyncio.ensure_future(wait_for_shutdown_signal())
    waiters = [stop, signal_wait]
    timeout = args.timeout if args.timeout > 0 else None
    await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    await consumer.shutdown()
    return 0


def run(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"ledgermq {command}")
    parser.add_argument("-n", "--namesrv", required=True, help="NameServer address list")
    parser.add_argument("-t", "--topic", required=True)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    if command == "produce":
        parser.add_argument("-g", "--group", default="ledgermq_cli_producer")
        parser.add_argument("-m", "--message", help="body text (default: one per stdin line)")
        parser.add_argument("-c", "--count", type=int, default=1, help="send it this many times")
        parser.add_argument("--tags")
        parser.add_argument("--keys")
        parser.add_argument("--delay-level", type=int, default=0)
    else:
        parser.add_argument("-g", "--group", default="ledgermq_cli_consumer")
        parser.add_argument("-s", "--expression", default="*", help="tag expression, e.g. 'A || B'")
        parser.add_argument("-c", "--count", type=int, default=0, help="exit after N messages")
        parser.add_argument(
            "--from-first",
            action="store_true",
            help="a new group starts at the first offset, not the last",
        )
        parser.add_argument("--timeout", type=float, default=0, help="exit after S seconds")
    args = parser.parse_args(argv)
    return run_async(lambda: _produce(args) if command == "produce" else _consume(args))
