"""Helpers shared by the peer benchmark scripts (run with .venv-bench's python, which
finds this module next to them)."""

from __future__ import annotations

import signal
import socket
import sys


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago."""
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when this process dies, however it dies."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted `values` (0.0 when empty)."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
