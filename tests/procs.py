"""Real server processes for integration tests: start, wait until serving, kill."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports handed out so far (never twice in one test run), drawn below the kernel's
# ephemeral range: a port picked there and released could be given to any socket
# bound to port 0 (a broker's listen port, a client's connection) before the server
# it was picked for binds it (seen as "address already in use" in CI).
_PORT_LOW = 20000
_PORT_HIGH = max(_PORT_LOW + 1000, min(_ephemeral_start(), 32768))
_handed_out: set[int] = set()
_rng = random.Random()


def free_port() -> int:
    for _ in range(500):
        port = _rng.randrange(_PORT_LOW, _PORT_HIGH)
        if port in _handed_out:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in [{_PORT_LOW}, {_PORT_HIGH})")


def free_port_pair() -> int:
    """A port p with p+1 also free (brokers use listenPort+1 for HA later)."""
    return free_port_block((0, 1))


def free_port_block(offsets: tuple[int, ...]) -> int:
    """A port p with p + o free for every o in `offsets` (0 included), all reserved: for
    servers that derive their ports from one base (quickstart's group of brokers)."""
    for _ in range(100):
        port = free_port()
        others = [port + o for o in offsets if o]
        if any(q in _handed_out or q >= _PORT_HIGH for q in others):
            continue
        try:
            for q in others:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
        except OSError:
            continue
        _handed_out.update(others)
        return port
    raise RuntimeError(f"no free block of ports at offsets {offsets}")


class ServerProcess:
    """A `python -m ledgermq ...` child whose output is collected on a thread."""

    def __init__(self, args: list[str], *, ready_text: str, log_path: Path) -> None:
        self.args = args
        self.ready_text = ready_text
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout: float = 30.0) -> ServerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._ready.clear()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ledgermq", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError(
                f"{self.args[0]} did not print {self.ready_text!r} within {timeout}s:\n"
                + "".join(self._lines[-40:])
            )
        return self

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with open(self.log_path, "ab") as log:
            for raw in proc.stdout:
                log.write(raw)
                line = raw.decode(errors="replace")
                self._lines.append(line)
                if self.ready_text in line:
                    self._ready.set()

    def output(self) -> str:
        return "".join(self._lines)

    def kill(self) -> None:
        """kill -9: no chance to flush or clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


class ProcessGroup:
    """Every ServerProcess a test creates, killed at teardown whatever happened.

    Use through the `processes` fixture (tests/conftest.py), so that a test failing
    anywhere (before its own try/finally, or in a helper) leaves no orphan server.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[ServerProcess] = []

    def create(
        self, args: list[str], *, ready_text: str, log_name: str | None = None
    ) -> ServerProcess:
        """A ServerProcess that is not started yet (`.start()` it, as often as needed)."""
        name = log_name or f"{args[0]}-{len(self.procs)}.log"
        proc = ServerProcess(args, ready_text=ready_text, log_path=self.log_dir / name)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        errors: list[BaseException] = []
        for proc in reversed(self.procs):
            try:
                proc.kill()
            except BaseException as exc:  # noqa: BLE001 - kill the others first
                errors.append(exc)
        if errors:
            raise errors[0]

    def alive(self) -> list[ServerProcess]:
        return [p for p in self.procs if p.proc is not None and p.proc.poll() is None]


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run_ledgermq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m ledgermq *args` to completion (a client command), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "ledgermq", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        timeout=timeout,
    )
