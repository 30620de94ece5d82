"""In-process NameServer + Broker(s) on loopback for integration tests.

The servers run on the test's event loop (port 0, data under tmp_path). `run_cli` starts
`python -m ledgermq ...` as an asyncio subprocess, so the servers keep serving while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ledgermq.broker.broker import Broker
from ledgermq.broker.config import BrokerConfig
from ledgermq.client.instance import ClientInstance
from ledgermq.namesrv.config import NamesrvConfig
from ledgermq.namesrv.server import NameServer

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"

T = TypeVar("T")


class CliResult(NamedTuple):
    """What a `python -m ledgermq ...` run left behind; unpacks as (rc, out, err)."""

    rc: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.rc == 0, self.err
        return json.loads(self.out)


async def run_cli(*args: str, timeout: float = 90, env: dict | None = None) -> CliResult:
    """Runs `python -m ledgermq *args` from the repo root; kills it after `timeout` seconds."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("LEDGERMQ_DEBUG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ledgermq",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(REPO),
        env=full_env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return CliResult(proc.returncode, out.decode(), err.decode())


class InProcessCluster:
    """A NameServer and `n_brokers` master Brokers, all on loopback with port 0.

    Brokers are named broker-a, broker-b, ... unless `broker_names` is given; every other
    keyword is passed on to each BrokerConfig (e.g. `mapped_file_size_commit_log`).
    """

    def __init__(
        self,
        tmp_path: Path,
        n_brokers: int = 1,
        *,
        cluster_name: str = "DefaultCluster",
        broker_names: Sequence[str] | None = None,
        **broker_overrides: Any,
    ) -> None:
        if broker_names is None:
            broker_names = [f"broker-{chr(ord('a') + i)}" for i in range(n_brokers)]
        assert len(broker_names) == n_brokers, (broker_names, n_brokers)
        self.tmp_path = tmp_path
        self.n_brokers = n_brokers
        self.cluster_name = cluster_name
        self.broker_names = list(broker_names)
        self.broker_overrides = {"mapped_file_size_commit_log": 16 * 1024 * 1024}
        self.broker_overrides.update(broker_overrides)
        self.namesrv: NameServer | None = None
        self.brokers: list[Broker] = []
        self.clients: list[Any] = []

    @property
    def ns(self) -> str:
        assert self.namesrv is not None
        return f"{HOST}:{self.namesrv.port}"

    @property
    def broker(self) -> Broker:
        """The first broker."""
        assert self.brokers, "cluster not started"
        return self.brokers[0]

    @property
    def addr(self) -> str:
        """The first broker's address."""
        return self.broker.address

    async def start(self) -> None:
        self.namesrv = NameServer(
            NamesrvConfig(user_home=str(self.tmp_path / "ns")), host=HOST, port=0
        )
        await self.namesrv.start()
        for i, name in enumerate(self.broker_names):
            cfg = BrokerConfig(
                broker_name=name,
                broker_cluster_name=self.cluster_name,
                listen_port=0,
                namesrv_addr=self.ns,
                store_path_root_dir=str(self.tmp_path / f"store{i}"),
                broker_ip1=HOST,
                **self.broker_overrides,
            )
            broker = Broker(cfg, host=HOST)
            await broker.start()
            self.brokers.append(broker)

    def instance(self) -> ClientInstance:
        # Short route polling so consumers notice new topics quickly in tests.
        return ClientInstance(self.ns, route_interval=0.5, heartbeat_interval=1.0)

    def track(self, client: T) -> T:
        """Registers a client object (anything with `async shutdown()`) to shut down at stop."""
        self.clients.append(client)
        return client

    async def stop(self) -> None:
        """Shuts down tracked clients (newest first), then the brokers, then the NameServer;
        safe after a start that failed half way."""
        for c in reversed(self.clients):
            with contextlib.suppress(Exception):
                await c.shutdown()
        self.clients.clear()
        for b in self.brokers:
            await b.stop()
        if self.namesrv is not None:
            await self.namesrv.stop()

    async def run_cli(self, *args: str, timeout: float = 90, env: dict | None = None) -> CliResult:
        return await run_cli(*args, timeout=timeout, env=env)


C = TypeVar("C", bound=InProcessCluster)


@contextlib.asynccontextmanager
async def running(cluster: C) -> AsyncIterator[C]:
    """Starts `cluster` and always stops it again, also when start() failed half way."""
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()
