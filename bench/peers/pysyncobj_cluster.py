"""Peer benchmark: committed ops/s of a 3-member PySyncObj cluster on loopback.

    .venv-bench/bin/python bench/peers/pysyncobj_cluster.py --inflight 100 --size 1024 --duration 10

Starts `--members` processes, each a PySyncObj `SyncObj` holding a replicated dict, waits
until they agree on a leader, runs the load and prints one JSON object:
{tps, p50_ms, p99_ms, max_ms, count, errors, ...}. Progress goes to stderr once a second.

Every operation is a `@replicated` `put(key, value)` with a 1 KiB value (by default) and a
callback; an operation counts when its callback reports SUCCESS, i.e. when it is
committed on a majority and applied. A window of `--inflight` operations is kept open:
each callback issues the next put.

Where the load comes from (`--client`):
- `leader` (default): inside the leader's own process, through its `@replicated` methods.
  This is how PySyncObj is meant to be used (the application is a member) and it is its
  fastest path: no forwarding hop.
- `process`: from a separate, fourth process that joins as a PySyncObj read-only node
  (`SyncObj(None, members)`); its puts are forwarded to the leader and complete when the
  client node has applied them. That is the closest PySyncObj has to a client process.

"Tuned for speed" (the defaults below; each can be changed with `--set name=value`):
no full-dump file and no journal file (the log is in memory only, nothing is written to
disk, so this is faster than any durable mode), `appendEntriesUseBatch` on with a short
`appendEntriesPeriod` and tick (2 ms instead of 100 ms and 50 ms: with batching on, the
leader ships new entries only once per period, so the default caps throughput at about
one window per 100 ms), 1 MiB append batches, 4 MiB socket buffers, and in-memory log
compaction no more than every 100k entries. Election timeouts keep their defaults.
`--inflight 1` turns batching off by default (`appendEntriesUseBatch=False` sends each
entry at once, which PySyncObj documents as the setting for single-request speed).
These were chosen by sweeping period (1-100 ms), batching on/off and compaction on this
machine: periods of 1-5 ms were best and within run-to-run noise of each other.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from peer_util import die_with_parent, free_ports, log, percentile

SPEED_CONF: dict[str, object] = {
    "fullDumpFile": None,
    "journalFile": None,
    "appendEntriesUseBatch": True,
    "appendEntriesPeriod": 0.002,
    "raftMinTimeout": 0.4,
    "raftMaxTimeout": 1.4,
    "autoTickPeriod": 0.002,
    "commandsWaitLeader": True,
    "appendEntriesBatchSizeBytes": 2**20,
    "sendBufferSize": 2**22,
    "recvBufferSize": 2**22,
    "logCompactionMinEntries": 100_000,
    "logCompactionMinTime": 300,
    "dynamicMembershipChange": False,
}


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- member / client process


def make_obj(self_addr: str | None, partners: list[str], conf: dict):
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class Store(SyncObj):
        def __init__(self) -> None:
            super().__init__(self_addr, partners, SyncObjConf(**conf))
            self.data: dict[bytes, bytes] = {}

        @replicated
        def put(self, key: bytes, value: bytes) -> None:
            self.data[key] = value

    return Store()


def run_load(obj, args: argparse.Namespace) -> dict:
    """Keep `inflight` puts open for `duration` seconds; return the measurements."""
    from pysyncobj import FAIL_REASON

    value = os.urandom(args.size // 2 + 1).hex()[: args.size].encode()
    keys = [b"bench/%08d" % i for i in range(args.keys)]
    latencies: list[float] = []
    errors: dict[int, int] = {}
    lock = threading.Lock()  # the first window is issued from this thread
    state = {"sent": 0, "open": 0}
    finished = threading.Event()
    stop_at = [0.0]
    perf = time.perf_counter

    def submit() -> None:
        n = state["sent"]
        state["sent"] = n + 1
        t0 = perf()
        obj.put(keys[n % len(keys)], value, callback=lambda _res, err: done(err, t0))

    def done(err: int, t0: float) -> None:
        now = perf()
        with lock:
            if err == FAIL_REASON.SUCCESS:
                latencies.append((now - t0) * 1000)
            else:
                errors[err] = errors.get(err, 0) + 1
            if now < stop_at[0]:
                submit()
            else:
                state["open"] -= 1
                if state["open"] == 0:
                    finished.set()

    # Warm-up: a few puts one at a time, so connections and the leader's no-op are done.
    for _ in range(20):
        ev = threading.Event()
        obj.put(keys[0], value, callback=lambda _r, _e, ev=ev: ev.set())
        ev.wait(10)
    started = perf()
    stop_at[0] = started + args.duration
    with lock:
        state["open"] = args.inflight
        for _ in range(args.inflight):
            submit()
    last = 0
    while not finished.wait(1.0):
        done_now = len(latencies)
        log(f"pysyncobj: {perf() - started:5.1f}s {done_now - last:8d} ops/s, errors {errors}")
        last = done_now
        if perf() > stop_at[0] + 30:
            log("pysyncobj: operations still open 30 s after the end; giving up on them")
            break
    # From the first put to the last callback (puts still open at the end are waited for).
    elapsed = perf() - started
    latencies.sort()
    return {
        "count": len(latencies),
        "errors": sum(errors.values()),
        "error_reasons": {str(k): v for k, v in errors.items()},
        "seconds": round(elapsed, 3),
        "tps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3) if latencies else 0.0,
    }


def quiet_pysyncobj_log(show: int = 3) -> None:
    """Show PySyncObj's first few log lines per process, then only count them."""
    import logging

    class Limited(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def emit(self, record: logging.LogRecord) -> None:
            self.count += 1
            if self.count <= show:
                log(f"pysyncobj log: {record.getMessage()}")
            elif self.count == show + 1:
                log("pysyncobj log: (further lines from this member are not shown)")

    logger = logging.getLogger("pysyncobj")
    logger.addHandler(Limited())
    logger.propagate = False


def member_main(args: argparse.Namespace) -> None:
    """One member (or the read-only client node): report state, run load when told."""
    conf = json.loads(args.conf)
    quiet_pysyncobj_log()
    partners = [p for p in args.partners.split(",") if p and p != args.self_addr]
    self_addr = None if args.self_addr == "readonly" else args.self_addr
    obj = make_obj(self_addr, partners, conf)

    def reporter() -> None:
        while True:
            leader = obj._getLeader()
            emit({"leader": str(leader) if leader else None, "ready": obj.isReady()})
            time.sleep(0.1)

    threading.Thread(target=reporter, daemon=True).start()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "load":
            load_args = argparse.Namespace(**cmd["args"])
            emit({"result": run_load(obj, load_args)})
        elif cmd["op"] == "quit":
            break
    obj.destroy()
    os._exit(0)


# ---------------------------------------------------------------- coordinator


class Proc:
    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.p = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            preexec_fn=die_with_parent,
        )
        self.last: dict = {}
        self.result: dict | None = None
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                log(f"{self.name}: {line.rstrip()}")
                continue
            with self.cond:
                if "result" in msg:
                    self.result = msg["result"]
                else:
                    self.last = msg
                self.cond.notify_all()

    def send(self, obj: dict) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(json.dumps(obj) + "\n")
        self.p.stdin.flush()

    def wait_for(self, predicate, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self), timeout)

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                self.send({"op": "quit"})
            except OSError:
                pass
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def coordinator_main(args: argparse.Namespace) -> None:
    import pysyncobj

    conf = dict(SPEED_CONF)
    if args.inflight == 1:
        conf["appendEntriesUseBatch"] = False
    for item in args.set or []:
        name, _, text = item.partition("=")
        conf[name] = parse_value(text)
    addrs = [f"127.0.0.1:{p}" for p in free_ports(args.members)]
    me = [sys.executable, str(Path(__file__).resolve()), "member"]
    conf_json = json.dumps(conf)
    procs = [
        Proc([*me, "--self-addr", a, "--partners", ",".join(addrs), "--conf", conf_json], a)
        for a in addrs
    ]
    try:
        deadline = time.monotonic() + 30
        leader = None
        while time.monotonic() < deadline and leader is None:
            leaders = {p.last.get("leader") for p in procs}
            ready = all(p.last.get("ready") for p in procs)
            if len(leaders) == 1 and None not in leaders and ready:
                leader = leaders.pop()
            else:
                time.sleep(0.1)
        if leader is None:
            raise SystemExit("pysyncobj members did not agree on a leader within 30 s")
        log(
            f"pysyncobj {pysyncobj.__version__ if hasattr(pysyncobj, '__version__') else ''}"
            f": {args.members} members, leader {leader}, conf {conf}"
        )
        if args.client == "leader":
            driver = next(p for p in procs if p.name == leader)
        else:
            client_argv = [*me, "--self-addr", "readonly", "--partners", ",".join(addrs)]
            driver = Proc([*client_argv, "--conf", conf_json], "client")
            procs.append(driver)
            if not driver.wait_for(lambda p: p.last.get("leader") == leader, 30):
                raise SystemExit("the client node did not find the leader within 30 s")
        load_args = {"inflight": args.inflight, "size": args.size, "duration": args.duration,
                     "keys": args.keys}  # fmt: skip
        driver.send({"op": "load", "args": load_args})
        if not driver.wait_for(lambda p: p.result is not None, args.duration + 90):
            raise SystemExit("no result from the load")
        result = dict(driver.result or {})
    finally:
        for p in procs:
            p.stop()
    result.update(
        peer=f"PySyncObj {pysyncobj_version()}, {args.members} members, in memory "
        "(no journal, no dump file)",
        client="in the leader process" if args.client == "leader" else "read-only node process",
        size=args.size,
        inflight=args.inflight,
        conf={k: v for k, v in conf.items()},
    )
    print(json.dumps(result), flush=True)


def pysyncobj_version() -> str:
    from importlib.metadata import version

    return version("pysyncobj")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    member = sub.add_parser("member", help="internal: one cluster member")
    member.add_argument("--self-addr", required=True)
    member.add_argument("--partners", required=True)
    member.add_argument("--conf", required=True)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("-s", "--size", type=int, default=1024)
    parser.add_argument("--inflight", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--keys", type=int, default=1000, help="distinct keys cycled over")
    parser.add_argument("--client", choices=["leader", "process"], default="leader")
    parser.add_argument(
        "--set", action="append", metavar="NAME=VALUE", help="override a SyncObjConf field"
    )
    args = parser.parse_args()
    if args.cmd == "member":
        member_main(args)
    else:
        coordinator_main(args)


if __name__ == "__main__":
    main()
