#!/usr/bin/env python3
"""Interop driver for Apache's C++-core Python client (rocketmq-client-python==0.5.0rc2).

Run with the interop venv's python (created by tests/interop/setup_venv.sh), NOT with
the ledgermq environment; this script must not import ledgermq:

    .venv-interop-cpp/bin/python tests/interop/cpp_client_driver.py produce \
        --namesrv 127.0.0.1:9876 --topic T --count 10 [--tag TAG] [--keys K] [--group G] \
        [--body-size B] [--orderly --sharding-key-mod M] [--send-timeout-ms 3000] [--timeout S]
    .venv-interop-cpp/bin/python tests/interop/cpp_client_driver.py consume \
        --namesrv 127.0.0.1:9876 --topic T --group G --expect 10 --timeout 30 \
        [--tag-expr 'A || B'] [--fail-first K] [--ready-file PATH] [--threads N]

Prints exactly one JSON line on stdout (everything the native lib might print on fd 1 is
redirected to stderr). Exit 0 = all requested messages sent / expected messages consumed;
1 = partial failure / timeout; 2 = usage or fatal error (client could not start, watchdog).

Quirks of the package / C++ core (librocketmq.so, "2.x" core bundled in the wheel):
- Python API: Producer(group, orderly=False, timeout=ms), set_namesrv_addr(addr) (NOT
  set_name_server_address), start(), send_sync(msg) -> SendResult(status, msg_id, offset),
  send_orderly_with_sharding_key(msg, key) (exists; queue = hash(key) % writeQueueNums),
  shutdown().  Message(topic).set_keys/set_tags/set_property/set_body.
  PushConsumer(group, orderly=False, message_model=CLUSTERING); subscribe(topic, cb, expr);
  cb(RecvMessage) must return ConsumeStatus.CONSUME_SUCCESS / RECONSUME_LATER.
- SendResult has no queue id; msg_id is the client-generated UNIQ_KEY (hex, 32 chars), not
  the broker's offset msgId; offset is the queueOffset from the SEND_MESSAGE response.
- Errors surface as rocketmq.exceptions.* (ProducerSendSyncFailed, PushConsumerStartFailed,
  ...) whose text comes from GetLatestErrorMessage(), e.g. "No route info of this topic: T,
  error:-1,in file rocketmq-client-cpp/src/producer/DefaultMQProducer.cpp line:379".
- Producer.start() does no I/O; the route is fetched lazily on the first send. With no name
  server listening a send fails in ~10 ms (after 5 route attempts for T and TBW102).
- PushConsumer.start() does NOT fail when the name server is unreachable: it returns
  immediately and the consumer just never gets messages, so consume relies on --timeout.
  When the name server is up, start() blocks until the first rebalance has finished
  (including QUERY_CONSUMER_OFFSET / GET_MAX_OFFSET per queue), i.e. after start() returns
  the consumer owns its queues (single consumer) -> --ready-file is written then.
  Consumer default is CONSUME_FROM_LAST_OFFSET (not settable from Python): for a new group
  the start offset is whatever the broker answers to QUERY_CONSUMER_OFFSET; if the broker
  answers QUERY_NOT_FOUND(22) the client uses GET_MAX_OFFSET, i.e. messages produced
  before the consumer started are skipped. Start the consumer first (wait for the ready
  file), then produce -- or make the broker return offset 0 for new groups (Java broker
  does so while the queue's min offset is 0).
- Timers (measured): rebalance (GET_CONSUMER_LIST_BY_GROUP 38) every 10 s, heartbeat (34)
  every 30 s, route refresh (105 for every topic incl. %RETRY%G and TBW102) every 30 s,
  consumer offsets persisted every 5 s via UPDATE_CONSUMER_OFFSET (15, a normal request,
  not oneway) and once more at shutdown AFTER UNREGISTER_CLIENT (35).  Pulls are
  long-polls (PULL_MESSAGE 11, sysFlag 6, suspendTimeoutMillis=15000, maxMsgNums 32).
  Against a responsive server producer start+first send takes ~5 ms and consumer start
  (incl. first rebalance) ~10 ms; a second consumer in the group only gets queues after
  the next 10 s rebalance tick.  shutdown() may block up to a few seconds
  while a long-poll is outstanding -> the driver has a watchdog (hard exit, rc 2, JSON with a
  "Watchdog" error, at --timeout + 10 s for consume / + 5 s for produce) so it never hangs.
- Sync requests time out client-side (GET_ROUTEINFO: 5 s) and on ANY timeout the core
  closes the whole TCP connection.  Against a listener that never answers, start() of a
  consumer blocks ~10 s and each send ~10 s (5 s x route for T, then TBW102), and
  shutdown() may hang -- the watchdog covers it.
- Concurrent consume: the core hands the WHOLE pulled batch (up to 32 msgs, maxMsgNums=32)
  to the C callback wrapper, which calls the Python callback per message and stops at the
  first RECONSUME_LATER; the whole batch is then sent back (CONSUMER_SEND_MSG_BACK), even
  messages already acked and ones never shown to the callback (set_message_batch_max_size
  does not change this). So with --fail-first, sibling messages come back via %RETRY% with
  reconsume_times > 0 and "delivery" 1; "received" lists only real callback invocations.
- The wrapper's callback re-raises Python exceptions inside the ctypes callback; ctypes then
  prints "Exception ignored..." and returns 0, which is CONSUME_SUCCESS (message acked).
  The driver's callback therefore never raises.
- Bodies go through c_char_p: a NUL byte truncates both sent and received bodies. tags,
  keys and get_property() return bytes (topic and id are str). RecvMessage handles are only
  valid inside the callback.
- Logging: the C++ core writes $HOME/logs/rocketmq-cpp/<pid>_rocketmq-cpp.log.N (created on
  first client creation; info level by default, ~1 MB of chatter per minute for a
  consumer). It reads HOME via getenv, so the driver's --log-dir DIR (or env
  CPP_DRIVER_LOG_DIR) sets HOME=DIR before loading the lib -> DIR/logs/rocketmq-cpp/.
  Level is set per client via ffi dll.SetProducerLogLevel/SetPushConsumerLogLevel (not
  exposed by the wrapper); --log-level (default warn) does that. SetXxxLogPath is a no-op
  in the core. Nothing is printed on stdout/stderr by the core normally.  No other env
  vars are needed (ROCKETMQ_HOME is unused for this).  Broadcasting consumers would keep
  offsets in $HOME/.rocketmq_offsets/ (clustering stores them on the broker).
- Client id is "<pid>-<local ip>@DEFAULT" (instance name DEFAULT).
"""
import argparse
import json
import os
import sys
import threading
import time
import traceback

_t0 = time.time()
_out_fd = None
_out_lock = threading.Lock()
_emitted = False


def _grab_stdout():
    """Keep the real stdout for our single JSON line; send fd 1 to stderr."""
    global _out_fd
    sys.stdout.flush()
    _out_fd = os.dup(1)
    os.dup2(2, 1)


def emit(result, code):
    """Write the one JSON line (once) and return the exit code."""
    global _emitted
    with _out_lock:
        if not _emitted:
            _emitted = True
            result.setdefault('elapsed_s', round(time.time() - _t0, 3))
            data = (json.dumps(result, sort_keys=True) + '\n').encode()
            fd = _out_fd if _out_fd is not None else 1
            os.write(fd, data)
    return code


def start_watchdog(seconds, state_fn):
    def run():
        time.sleep(seconds)
        res = state_fn()
        res['ok'] = False
        res.setdefault('errors', []).append({'error': 'Watchdog',
                                             'message': 'driver exceeded %.1fs; hard exit' % seconds})
        emit(res, 2)
        os._exit(2)
    t = threading.Thread(target=run, daemon=True)
    t.start()


def load_client(args):
    log_dir = args.log_dir or os.environ.get('CPP_DRIVER_LOG_DIR')
    if log_dir:
        log_dir = os.path.abspath(log_dir)
        os.makedirs(log_dir, exist_ok=True)
        os.environ['HOME'] = log_dir  # C++ core logs to $HOME/logs/rocketmq-cpp
    import rocketmq.client as client  # noqa: E402  (after HOME is set)
    from rocketmq import ffi, exceptions
    return client, ffi, exceptions


LOG_LEVELS = {'fatal': 1, 'error': 2, 'warn': 3, 'info': 4, 'debug': 5, 'trace': 6}


def log_path():
    return os.path.join(os.environ.get('HOME', '~'), 'logs', 'rocketmq-cpp',
                        '%d_rocketmq-cpp.log.0' % os.getpid())


def err_entry(exc, **extra):
    d = {'error': type(exc).__name__, 'message': str(exc)}
    d.update(extra)
    return d


def make_body(seq, size):
    base = {'seq': seq}
    body = json.dumps(base, separators=(',', ':'))
    if size and size > len(body):
        pad_len = size - len(body) - len(',"pad":""')
        if pad_len > 0:
            base['pad'] = 'x' * pad_len
            body = json.dumps(base, separators=(',', ':'))
    return body


def parse_seq(body):
    try:
        if isinstance(body, bytes):
            body = body.decode('utf-8', 'replace')
        return int(json.loads(body)['seq'])
    except Exception:
        return None


def _s(v):
    if isinstance(v, bytes):
        return v.decode('utf-8', 'replace')
    return v


# ---------------------------------------------------------------- produce
def cmd_produce(args):
    state = {'cmd': 'produce', 'sent': [], 'errors': [], 'log_file': None}
    # A send can block ~10 s per message when the name server accepts but never answers
    # (two 5 s GET_ROUTEINFO timeouts), so the default deadline is generous.
    overall = args.timeout if args.timeout else (args.count * (args.send_timeout_ms / 1000.0 + 10) + 30)
    start_watchdog(overall + 5, lambda: dict(state, sent=list(state['sent']), errors=list(state['errors'])))
    client, ffi, exceptions = load_client(args)
    group = args.group or 'PID_cpp_driver_%d' % os.getpid()
    try:
        producer = client.Producer(group, orderly=args.orderly, timeout=args.send_timeout_ms)
        ffi.dll.SetProducerLogLevel(producer._handle, LOG_LEVELS[args.log_level])
        state['log_file'] = log_path()
        producer.set_namesrv_addr(args.namesrv)
        producer.start()
    except Exception as e:
        state['errors'].append(err_entry(e, phase='start'))
        state['ok'] = False
        return emit(state, 2)
    deadline = _t0 + overall
    try:
        for i in range(args.first_seq, args.first_seq + args.count):
            if time.time() > deadline:
                state['errors'].append({'error': 'Timeout', 'message': 'produce --timeout reached',
                                        'seq': i})
                break
            msg = client.Message(args.topic)
            try:
                if args.tag:
                    msg.set_tags(args.tag)
                if args.keys:
                    msg.set_keys(args.keys)
                msg.set_property('seq', str(i))
                msg.set_body(make_body(i, args.body_size))
                ts = time.time()
                if args.orderly:
                    shard = str(i % args.sharding_key_mod)
                    res = producer.send_orderly_with_sharding_key(msg, shard)
                else:
                    shard = None
                    res = producer.send_sync(msg)
                ent = {'seq': i, 'msg_id': res.msg_id, 'offset': res.offset,
                       'status': res.status.name, 'latency_ms': round((time.time() - ts) * 1000, 2)}
                if shard is not None:
                    ent['sharding_key'] = shard
                state['sent'].append(ent)
            except Exception as e:
                state['errors'].append(err_entry(e, seq=i))
                if args.stop_on_error:
                    break
            finally:
                try:
                    msg.destroy()
                except Exception:
                    pass
    finally:
        try:
            producer.shutdown()
        except Exception as e:
            state['errors'].append(err_entry(e, phase='shutdown'))
    ok = len(state['sent']) == args.count and all(s['status'] == 'OK' for s in state['sent'])
    state['ok'] = ok
    return emit(state, 0 if ok else 1)


# ---------------------------------------------------------------- consume
def cmd_consume(args):
    lock = threading.Lock()
    state = {'cmd': 'consume', 'received': [], 'errors': [], 'log_file': None}
    deliveries = {}   # seq (or msg id) -> delivery count
    acked = set()     # seqs acked with CONSUME_SUCCESS
    done = threading.Event()

    def snapshot():
        with lock:
            s = dict(state)
            s['received'] = list(state['received'])
            s['unique_seqs'] = len(acked)
            return s

    start_watchdog(args.timeout + 10, snapshot)
    client, ffi, exceptions = load_client(args)
    CS = client.ConsumeStatus

    def on_message(m):
        # Must never raise: an exception inside the ctypes callback acks the message.
        try:
            body = m.body
            seq = parse_seq(body)
            ent = {'seq': seq, 'msg_id': _s(m.id), 'tags': _s(m.tags), 'keys': _s(m.keys),
                   'reconsume_times': m.reconsume_times, 'queue_id': m.queue_id,
                   'queue_offset': m.queue_offset, 'topic': _s(m.topic),
                   'born_ts': m.born_timestamp, 'store_ts': m.store_timestamp,
                   't': round(time.time() - _t0, 3)}
            key = seq if seq is not None else ('id', ent['msg_id'])
            with lock:
                n = deliveries.get(key, 0) + 1
                deliveries[key] = n
                status = CS.RECONSUME_LATER if n <= args.fail_first else CS.CONSUME_SUCCESS
                ent['delivery'] = n
                ent['result'] = status.name
                if seq is None:
                    ent['body'] = _s(body)[:200]
                state['received'].append(ent)
                if status == CS.CONSUME_SUCCESS and seq is not None:
                    acked.add(seq)
                    if len(acked) >= args.expect:
                        done.set()
            return status
        except BaseException as e:  # noqa
            try:
                with lock:
                    state['errors'].append(err_entry(e, phase='callback'))
            except Exception:
                pass
            return CS.RECONSUME_LATER

    group = args.group
    try:
        consumer = client.PushConsumer(group)
        ffi.dll.SetPushConsumerLogLevel(consumer._handle, LOG_LEVELS[args.log_level])
        state['log_file'] = log_path()
        consumer.set_namesrv_addr(args.namesrv)
        if args.threads:
            consumer.set_thread_count(args.threads)
        if args.batch_max_size:
            consumer.set_message_batch_max_size(args.batch_max_size)
        consumer.subscribe(args.topic, on_message, args.tag_expr)
        ts = time.time()
        consumer.start()
        state['start_s'] = round(time.time() - ts, 3)
    except Exception as e:
        state['errors'].append(err_entry(e, phase='start'))
        state['ok'] = False
        return emit(state, 2)
    sys.stderr.write(json.dumps({'event': 'started', 'start_s': state['start_s']}) + '\n')
    sys.stderr.flush()
    if args.ready_file:
        with open(args.ready_file, 'w') as f:
            f.write('started\n')
    if args.expect > 0:
        done.wait(max(0.0, _t0 + args.timeout - time.time()))
    else:
        time.sleep(max(0.0, _t0 + args.timeout - time.time()))
    timed_out = args.expect > 0 and not done.is_set()
    if args.linger > 0 and not timed_out:
        time.sleep(args.linger)  # let duplicates/redeliveries show up
    ts = time.time()
    try:
        consumer.shutdown()
    except Exception as e:
        with lock:
            state['errors'].append(err_entry(e, phase='shutdown'))
    res = snapshot()
    res['shutdown_s'] = round(time.time() - ts, 3)
    res['deliveries'] = len(res['received'])
    if timed_out:
        res['errors'].append({'error': 'Timeout',
                              'message': 'saw %d/%d unique seqs within %.1fs' % (
                                  res['unique_seqs'], args.expect, args.timeout)})
    res['ok'] = not timed_out and not any(e.get('phase') == 'callback' for e in res['errors'])
    return emit(res, 0 if res['ok'] else 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)

    def common(p):
        p.add_argument('--namesrv', required=True, help='host:port[;host:port]')
        p.add_argument('--topic', required=True)
        p.add_argument('--log-dir', help='HOME for the C++ core logs (DIR/logs/rocketmq-cpp)')
        p.add_argument('--log-level', default='warn', choices=sorted(LOG_LEVELS))

    p = sub.add_parser('produce')
    common(p)
    p.add_argument('--count', type=int, required=True)
    p.add_argument('--first-seq', type=int, default=0, help='number the messages from here')
    p.add_argument('--tag')
    p.add_argument('--keys')
    p.add_argument('--group')
    p.add_argument('--body-size', type=int, default=0)
    p.add_argument('--orderly', action='store_true')
    p.add_argument('--sharding-key-mod', type=int, default=4)
    p.add_argument('--send-timeout-ms', type=int, default=3000)
    p.add_argument('--timeout', type=float, default=0, help='overall deadline in seconds')
    p.add_argument('--stop-on-error', action='store_true')

    c = sub.add_parser('consume')
    common(c)
    c.add_argument('--group', required=True)
    c.add_argument('--expect', type=int, required=True)
    c.add_argument('--timeout', type=float, required=True)
    c.add_argument('--tag-expr', default='*')
    c.add_argument('--fail-first', type=int, default=0)
    c.add_argument('--ready-file')
    c.add_argument('--threads', type=int, default=0)
    c.add_argument('--batch-max-size', type=int, default=0,
                   help='consumeMessageBatchMaxSize (0 = core default; the 2.x core ignores it)')
    c.add_argument('--linger', type=float, default=0.0,
                   help='seconds to keep consuming after --expect is reached')
    args = ap.parse_args(argv)
    if args.cmd == 'produce' and args.orderly and args.sharding_key_mod < 1:
        ap.error('--sharding-key-mod must be >= 1')

    _grab_stdout()
    try:
        if args.cmd == 'produce':
            return cmd_produce(args)
        return cmd_consume(args)
    except Exception as e:
        return emit({'cmd': args.cmd, 'ok': False,
                     'errors': [err_entry(e, phase='fatal', traceback=traceback.format_exc())]}, 2)


if __name__ == '__main__':
    rc = main()
    sys.stderr.flush()
    # os._exit: skip interpreter teardown racing the C++ core's threads.
    os._exit(rc)
