#!/usr/bin/env python3
"""Interop driver for Apache's official v5 Python client (rocketmq-python-client==5.1.2).

Runs with the interop venv's python (.venv-interop-py5, made by
tests/interop/setup_venv_py5.sh), never with the ledgermq environment: the package's
import name `rocketmq` collides with other RocketMQ packages, and this script must
not import ledgermq. It prints exactly one JSON line on stdout.

    produce     --endpoint H:P --topic T --count N [--tag X] [--keys K ...]
                [--message-group G] [--delay-seconds S] [--body-size B]
    raw-send    --endpoint H:P --topic T [--body-size B] [--message-type NORMAL]
    raw-route   --endpoint H:P --topic T
    telemetry   --endpoint H:P --topic T
    transaction --endpoint H:P --topic T --resolution commit|rollback|unknown
                [--check-result commit|rollback] [--timeout S]
    simple      --endpoint H:P --topic T --group G --count N [--invisible S]
                [--await S] [--change-to S] [--timeout S] [--no-ack]
    push        --endpoint H:P --topic T --group G --count N [--fail-once]
                [--work-ms M] [--timeout S]
    descriptors                      (the client's proto descriptors, as JSON)

Quirks of the package learnt while writing this:
- Producer(ClientConfiguration(endpoints, Credentials()), topics); startup() fetches
  the routes of `topics` and raises if that fails (unknown or illegal topic).
- send() returns SendReceipt(message_id, transaction_id, message_queue, offset);
  server statuses other than OK raise ClientException subclasses with `.code`.
- Message.delivery_timestamp is copied into Timestamp.seconds: it is in seconds.
- The client validates the body against publishing.max_body_size from the server's
  Settings reply, so server-side size checks are exercised with raw-send.
- It logs under $HOME/logs; the test points HOME at a temporary directory.
- Transactions: Producer(config, topics, checker); begin_transaction(), send(msg,
  transaction), then transaction.commit()/rollback(). The checker's check(message)
  answers the server's recover_orphaned_transaction_command.
- SimpleConsumer(config, group, {topic: FilterExpression()}, await_duration=S):
  receive(max, invisible_seconds) pops from the route queues in turn; ack(msg);
  change_invisible_duration(msg, seconds) swaps the message's receipt handle.
- PushConsumer(config, group, listener, {topic: FilterExpression()}): a failed
  listener call is nacked with ChangeInvisibleDuration (the backoff of its Settings);
  a FIFO group (Settings.subscription.fifo) retries locally instead.
"""

import argparse
import json
import os
import sys
import time
import uuid


def _emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _stub(endpoint):
    import grpc
    from rocketmq.grpc_protocol import service_pb2_grpc

    channel = grpc.insecure_channel(endpoint)
    return channel, service_pb2_grpc.MessagingServiceStub(channel)


def _metadata():
    return [
        ("x-mq-language", "PYTHON"),
        ("x-mq-protocol", "GRPC_V2"),
        ("x-mq-client-version", "5.1.2"),
        ("x-mq-client-id", "interop@%d@0@raw" % os.getpid()),
        ("x-mq-request-id", str(uuid.uuid4())),
        ("x-mq-namespace", ""),
        ("authorization", "MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=00"),
    ]


def _endpoints(endpoint):
    from rocketmq.grpc_protocol import definition_pb2

    host, port = endpoint.rsplit(":", 1)
    return definition_pb2.Endpoints(
        scheme=definition_pb2.IPv4, addresses=[definition_pb2.Address(host=host, port=int(port))]
    )


def cmd_produce(a):
    from rocketmq import ClientConfiguration, Credentials, Message, Producer

    config = ClientConfiguration(a.endpoint, Credentials(), request_timeout=5)
    producer = Producer(config, (a.topic,))
    result = {"sent": [], "errors": []}
    try:
        producer.startup()
    except Exception as e:  # noqa: BLE001
        result["errors"].append({"stage": "startup", "type": type(e).__name__, "text": str(e),
                                 "code": getattr(e, "code", None)})
        _emit(result)
        return 1
    try:
        for i in range(a.count):
            msg = Message()
            msg.topic = a.topic
            msg.body = (b"x" * a.body_size) if a.body_size else ("body-%d" % i).encode()
            if a.tag:
                msg.tag = a.tag
            if a.keys:
                msg.keys = a.keys[0] if len(a.keys) == 1 else a.keys[0]
            if a.message_group:
                msg.message_group = a.message_group
            if a.delay_seconds:
                msg.delivery_timestamp = int(time.time()) + a.delay_seconds
            if a.property:
                for kv in a.property:
                    k, _, v = kv.partition("=")
                    msg.add_property(k, v)
            try:
                r = producer.send(msg)
                result["sent"].append({"message_id": r.message_id, "offset": r.offset,
                                       "transaction_id": r.transaction_id,
                                       "queue_id": r.message_queue.queue_id
                                       if hasattr(r.message_queue, "queue_id") else None})
            except Exception as e:  # noqa: BLE001
                result["errors"].append({"stage": "send", "type": type(e).__name__,
                                         "text": str(e), "code": getattr(e, "code", None)})
    finally:
        producer.shutdown()
    _emit(result)
    return 0 if not result["errors"] else 1


def cmd_raw_send(a):
    from rocketmq.grpc_protocol import definition_pb2, service_pb2

    channel, stub = _stub(a.endpoint)
    req = service_pb2.SendMessageRequest()
    msg = req.messages.add()
    msg.topic.name = a.topic
    msg.body = b"y" * a.body_size
    sp = msg.system_properties
    sp.message_id = "01" + uuid.uuid4().hex.upper()
    sp.message_type = definition_pb2.MessageType.Value(a.message_type)
    sp.body_encoding = definition_pb2.IDENTITY
    sp.born_timestamp.seconds = int(time.time())
    sp.born_host = "127.0.0.1"
    if a.message_group:
        sp.message_group = a.message_group
    resp = stub.SendMessage(req, metadata=_metadata(), timeout=10)
    channel.close()
    _emit({"code": resp.status.code, "message": resp.status.message,
           "entries": [{"code": e.status.code, "message": e.status.message,
                        "message_id": e.message_id, "offset": e.offset} for e in resp.entries]})
    return 0


def cmd_raw_route(a):
    from rocketmq.grpc_protocol import definition_pb2, service_pb2

    channel, stub = _stub(a.endpoint)
    req = service_pb2.QueryRouteRequest(
        topic=definition_pb2.Resource(name=a.topic), endpoints=_endpoints(a.endpoint))
    resp = stub.QueryRoute(req, metadata=_metadata(), timeout=10)
    channel.close()
    queues = [{"id": q.id, "permission": definition_pb2.Permission.Name(q.permission),
               "broker": q.broker.name, "broker_id": q.broker.id,
               "endpoints": ["%s:%d" % (x.host, x.port) for x in q.broker.endpoints.addresses],
               "accept": [definition_pb2.MessageType.Name(t) for t in q.accept_message_types]}
              for q in resp.message_queues]
    _emit({"code": resp.status.code, "message": resp.status.message, "queues": queues})
    return 0


def cmd_telemetry(a):
    from rocketmq.grpc_protocol import definition_pb2, service_pb2

    channel, stub = _stub(a.endpoint)
    cmd = service_pb2.TelemetryCommand()
    s = cmd.settings
    s.client_type = definition_pb2.PRODUCER
    s.access_point.CopyFrom(_endpoints(a.endpoint))
    s.request_timeout.seconds = 3
    s.publishing.topics.add().name = a.topic
    s.publishing.max_body_size = 128 * 1024 * 1024
    s.publishing.validate_message_type = True
    s.user_agent.language = definition_pb2.PYTHON
    s.metric.on = False
    replies = stub.Telemetry(iter([cmd]), metadata=_metadata(), timeout=10)
    first = next(replies)
    replies.cancel()
    channel.close()
    st = first.settings
    _emit({
        "code": first.status.code,
        "has_settings": first.HasField("settings"),
        "max_body_size": st.publishing.max_body_size,
        "validate_message_type": st.publishing.validate_message_type,
        "backoff_max_attempts": st.backoff_policy.max_attempts,
        "backoff_strategy": st.backoff_policy.WhichOneof("strategy"),
        "metric_on": st.metric.on,
        "client_type": st.client_type,
    })
    return 0


def _message_record(m, started):
    return {"message_id": m.message_id, "body": m.body.decode(errors="replace"),
            "attempt": m.delivery_attempt, "group": m.message_group, "tag": m.tag,
            "at": round(time.monotonic() - started, 3)}


def cmd_transaction(a):
    """One transactional message, resolved by `--resolution`; `unknown` leaves it open and
    waits until the server's check has been answered by the checker."""
    import threading

    from rocketmq import (ClientConfiguration, Credentials, Message, Producer,
                          TransactionChecker, TransactionResolution)

    checked = []
    answered = threading.Event()

    class Checker(TransactionChecker):
        def check(self, message):
            checked.append({"message_id": message.message_id,
                            "body": message.body.decode(errors="replace")})
            answered.set()
            return (TransactionResolution.COMMIT if a.check_result == "commit"
                    else TransactionResolution.ROLLBACK)

    config = ClientConfiguration(a.endpoint, Credentials(), request_timeout=5)
    producer = Producer(config, (a.topic,), Checker())
    producer.startup()
    result = {"sent": [], "checked": checked, "errors": []}
    try:
        transaction = producer.begin_transaction()
        msg = Message()
        msg.topic = a.topic
        msg.body = ("tx-%s-%d" % (a.resolution, os.getpid())).encode()
        receipt = producer.send(msg, transaction)
        result["sent"].append({"message_id": receipt.message_id,
                               "transaction_id": receipt.transaction_id,
                               "body": msg.body.decode()})
        if a.resolution == "commit":
            transaction.commit()
        elif a.resolution == "rollback":
            transaction.rollback()
        elif not answered.wait(a.timeout):
            result["errors"].append({"stage": "check", "text": "no transaction check arrived"})
        else:
            time.sleep(1)  # the checker's EndTransaction is sent from a callback thread
    except Exception as e:  # noqa: BLE001
        result["errors"].append({"stage": "transaction", "type": type(e).__name__,
                                 "text": str(e), "code": getattr(e, "code", None)})
    finally:
        producer.shutdown()
    _emit(result)
    return 0


def cmd_simple(a):
    """Receives until `--count` distinct messages were acked (or the timeout). With
    `--change-to S` each message's first delivery is instead made invisible for S
    seconds, and the time it takes to come back is reported."""
    from rocketmq import ClientConfiguration, Credentials, FilterExpression, SimpleConsumer

    config = ClientConfiguration(a.endpoint, Credentials(), request_timeout=5)
    consumer = SimpleConsumer(config, a.group, {a.topic: FilterExpression()},
                              await_duration=a.await_seconds)
    consumer.startup()
    started = time.monotonic()
    deliveries, acked, changed_at, errors = [], {}, {}, []
    try:
        def finished():
            if a.expect:
                return set(a.expect) <= set(acked)
            return len(acked) >= a.count

        while not finished() and time.monotonic() - started < a.timeout:
            try:
                messages = consumer.receive(16, a.invisible)
            except Exception as e:  # noqa: BLE001
                errors.append({"stage": "receive", "type": type(e).__name__, "text": str(e),
                               "code": getattr(e, "code", None)})
                time.sleep(0.5)
                continue
            for m in messages:
                record = _message_record(m, started)
                deliveries.append(record)
                if a.change_to and m.message_id not in changed_at:
                    consumer.change_invisible_duration(m, a.change_to)
                    changed_at[m.message_id] = time.monotonic() - started
                    record["changed"] = True
                    continue
                if m.message_id in changed_at:
                    record["since_change"] = round(record["at"] - changed_at[m.message_id], 3)
                if not a.no_ack:
                    consumer.ack(m)
                acked[m.message_id] = record["body"]
    finally:
        consumer.shutdown()
    _emit({"deliveries": deliveries, "acked": acked, "errors": errors})
    return 0


def cmd_push(a):
    """A PushConsumer until `--count` distinct messages were consumed successfully;
    with `--fail-once` the listener fails each message's first delivery."""
    import threading

    from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression,
                          MessageListener, PushConsumer)

    lock = threading.Lock()
    deliveries, succeeded, failed_once = [], {}, set()
    done = threading.Event()
    started = time.monotonic()

    class Listener(MessageListener):
        def consume(self, message):
            record = _message_record(message, started)
            with lock:  # recorded on arrival: a redelivery during the work shows up
                deliveries.append(record)
            if a.work_ms:
                time.sleep(a.work_ms / 1000)
            with lock:
                if a.fail_once and message.message_id not in failed_once:
                    failed_once.add(message.message_id)
                    record["result"] = "FAILURE"
                    return ConsumeResult.FAILURE
                record["result"] = "SUCCESS"
                succeeded[message.message_id] = record["body"]
                if len(succeeded) >= a.count:
                    done.set()
            return ConsumeResult.SUCCESS

    config = ClientConfiguration(a.endpoint, Credentials(), request_timeout=5)
    consumer = PushConsumer(config, a.group, Listener(), {a.topic: FilterExpression()})
    consumer.startup()
    if a.kill_after_first:
        while not deliveries and time.monotonic() - started < a.timeout:
            time.sleep(0.05)
    else:
        done.wait(a.timeout)
        time.sleep(0.5)  # let the last ack leave
    with lock:
        result = {"deliveries": list(deliveries), "succeeded": dict(succeeded),
                  "fifo": bool(getattr(consumer, "fifo", False))}
    if a.kill_after_first and deliveries:
        _emit(result)
        os._exit(0)  # no shutdown: the proxy must notice the client is gone
    consumer.shutdown()
    _emit(result)
    return 0


def cmd_descriptors(a):
    from rocketmq.grpc_protocol import definition_pb2, service_pb2

    out = {}
    for mod in (definition_pb2, service_pb2):
        fd = mod.DESCRIPTOR
        for e in fd.enum_types_by_name.values():
            out["enum " + e.full_name] = sorted([v.name, v.number] for v in e.values)
        pending = list(fd.message_types_by_name.values())
        while pending:
            m = pending.pop()
            pending.extend(m.nested_types)
            for e in m.enum_types:
                out["enum " + e.full_name] = sorted([v.name, v.number] for v in e.values)
            if m.GetOptions().map_entry:
                continue
            out["message " + m.full_name] = sorted(
                [f.name, f.number, f.type, bool(f.is_repeated),
                 (f.message_type or f.enum_type).full_name if (f.message_type or f.enum_type) else ""]
                for f in m.fields)
        for s in fd.services_by_name.values():
            for meth in s.methods:
                out["rpc %s.%s" % (s.full_name, meth.name)] = [
                    meth.input_type.full_name, meth.output_type.full_name,
                    bool(meth.client_streaming), bool(meth.server_streaming)]
    _emit(out)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("produce", "raw-send", "raw-route", "telemetry"):
        s = sub.add_parser(name)
        s.add_argument("--endpoint", required=True)
        s.add_argument("--topic", required=True)
        s.add_argument("--count", type=int, default=1)
        s.add_argument("--tag")
        s.add_argument("--keys", nargs="*")
        s.add_argument("--property", nargs="*")
        s.add_argument("--message-group")
        s.add_argument("--delay-seconds", type=int, default=0)
        s.add_argument("--body-size", type=int, default=0)
        s.add_argument("--message-type", default="NORMAL")
    t = sub.add_parser("transaction")
    t.add_argument("--endpoint", required=True)
    t.add_argument("--topic", required=True)
    t.add_argument("--resolution", choices=("commit", "rollback", "unknown"), required=True)
    t.add_argument("--check-result", choices=("commit", "rollback"), default="commit")
    t.add_argument("--timeout", type=float, default=60)
    for name in ("simple", "push"):
        c = sub.add_parser(name)
        c.add_argument("--endpoint", required=True)
        c.add_argument("--topic", required=True)
        c.add_argument("--group", required=True)
        c.add_argument("--count", type=int, required=True)
        c.add_argument("--timeout", type=float, default=60)
        c.add_argument("--invisible", type=int, default=10)
        c.add_argument("--await-seconds", type=int, default=5)
        c.add_argument("--change-to", type=int, default=0)
        c.add_argument("--no-ack", action="store_true")
        c.add_argument("--fail-once", action="store_true")
        c.add_argument("--work-ms", type=int, default=0)
        c.add_argument("--kill-after-first", action="store_true")
        c.add_argument("--expect", nargs="*", default=[])
    sub.add_parser("descriptors")
    a = p.parse_args()
    handler = {"produce": cmd_produce, "raw-send": cmd_raw_send, "raw-route": cmd_raw_route,
               "telemetry": cmd_telemetry, "descriptors": cmd_descriptors,
               "transaction": cmd_transaction, "simple": cmd_simple,
               "push": cmd_push}[a.cmd]
    try:
        rc = handler(a)
    except Exception as e:  # noqa: BLE001
        _emit({"fatal": "%s: %s" % (type(e).__name__, e)})
        rc = 2
    sys.stdout.flush()
    os._exit(rc)  # the client's scheduler threads would keep the process alive


if __name__ == "__main__":
    main()
