"""Failover time of a three-member DLedger group: kill -9 the leader under load and time
how long until an append is acknowledged again (by the new leader).

    .venv/bin/python bench/dledger_failover.py [--rounds 5] [--inflight 8] [--json]

Each round starts three fresh `ledgermq dledger server` processes with default settings,
keeps `--inflight` appends going from this process, kills the leader with SIGKILL and
measures kill -> first acknowledged append, and kill -> new leader known. Prints a
Markdown table (for bench/RESULTS.md) or one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.procs import ServerProcess, free_port  # noqa: E402

from ledgermq.dledger.client import DLedgerClient, DLedgerError  # noqa: E402
from ledgermq.dledger.protocol import RequestCode, encode_append_request  # noqa: E402

GROUP = "failover"
IDS = ("n0", "n1", "n2")


async def leader_of(client: DLedgerClient, skip: str | None = None) -> str | None:
    for m in IDS:
        if m == skip:
            continue
        try:
            meta = await client.metadata(member=m)
        except DLedgerError:
            continue
        if meta["role"] == "leader":
            return m
    return None


async def one_round(tmp: Path, k: int, inflight: int) -> dict:
    addrs = {m: f"127.0.0.1:{free_port()}" for m in IDS}
    peers = ";".join(f"{m}-{a}" for m, a in addrs.items())
    procs = {
        m: ServerProcess(
            ["dledger", "server", "--group", GROUP, "--id", m, "--peers", peers,
             "--store", str(tmp / f"r{k}" / m)],
            ready_text="listening on",
            log_path=tmp / f"r{k}-{m}.log",
        )
        for m in IDS
    }  # fmt: skip
    await asyncio.gather(*(asyncio.to_thread(p.start) for p in procs.values()))
    client = DLedgerClient(GROUP, peers, timeout=10.0, request_timeout=0.5)
    acks: list[tuple[float, str]] = []  # (when, the leader that answered)
    stop = asyncio.Event()
    body = encode_append_request([b"x" * 1024])

    async def writer() -> None:
        while not stop.is_set():
            try:
                reply = await client.call(RequestCode.APPEND, body=body)
                acks.append((time.monotonic(), reply.ext_fields.get("leaderId", "")))
            except DLedgerError:
                pass

    try:
        while await leader_of(client) is None:
            await asyncio.sleep(0.02)
        tasks = [asyncio.create_task(writer()) for _ in range(inflight)]
        while len(acks) < 500:
            await asyncio.sleep(0.01)
        old = await leader_of(client)
        assert old is not None
        procs[old].kill()
        killed = time.monotonic()
        new_leader_at = None
        while new_leader_at is None:
            if await leader_of(client, skip=old) is not None:
                new_leader_at = time.monotonic()
            else:
                await asyncio.sleep(0.005)
        # the first append acknowledged by another leader (replies the old one wrote
        # before it died may still be read after the kill)
        while not any(t > killed and who != old for t, who in acks):
            await asyncio.sleep(0.005)
        first_ack = next(t for t, who in acks if t > killed and who != old)
        stop.set()
        await asyncio.gather(*tasks)
        return {
            "round": k,
            "killed": old,
            "leader_s": round(new_leader_at - killed, 3),
            "append_s": round(first_ack - killed, 3),
        }
    finally:
        stop.set()
        await client.close()
        for p in procs.values():
            p.kill()


async def main_async(args: argparse.Namespace) -> dict:
    rounds = []
    with tempfile.TemporaryDirectory(prefix="ledgermq-failover-") as name:
        for k in range(args.rounds):
            r = await one_round(Path(name), k, args.inflight)
            print(f"round {k}: {r}", file=sys.stderr, flush=True)
            rounds.append(r)
    appends = [r["append_s"] for r in rounds]
    return {
        "rounds": rounds,
        "append_median_s": statistics.median(appends),
        "append_max_s": max(appends),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(out))
        return
    print("| round | killed | new leader known after s | first append acked after s |")
    print("|---|---|---|---|")
    for r in out["rounds"]:
        print(f"| {r['round']} | {r['killed']} | {r['leader_s']} | {r['append_s']} |")
    print(f"\nmedian {out['append_median_s']} s, max {out['append_max_s']} s")


if __name__ == "__main__":
    main()
