#!/usr/bin/env bash
# Create .venv-interop-py5/ at the repo root with Apache's official RocketMQ 5 Python
# client (rocketmq-python-client==5.1.2, import name `rocketmq`, a gRPC client of
# the proxy). Its own venv: the import name collides with the C++-core package in
# .venv-interop-cpp, and its grpcio/protobuf pins must not touch ledgermq's .venv.
# Idempotent: re-running is cheap when the venv is already good.
# Usage: bash tests/interop/setup_venv_py5.sh   (env PYTHON=python3.11 to override)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv-interop-py5"
PYTHON="${PYTHON:-python3}"
PKG="rocketmq-python-client==5.1.2"

check() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.metadata as md
assert md.version("rocketmq-python-client") == "5.1.2"
from rocketmq import Producer  # noqa: F401
from rocketmq.grpc_protocol import service_pb2_grpc  # noqa: F401
PY
}

if check; then
    echo "setup_venv_py5.sh: $VENV already OK"
    exit 0
fi

if [ -d "$VENV" ] && [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        # Debian's system python needs python3-venv (ensurepip wheels) for `-m venv`.
        rm -rf "$VENV"
        pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
            python3-venv "python${pyver}-venv"
        "$PYTHON" -m venv "$VENV"
    fi
fi

# With its dependencies (grpcio, protobuf, opentelemetry): wheels from PyPI.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$PKG"

if ! check; then
    echo "setup_venv_py5.sh: 'from rocketmq import Producer' failed in $VENV:" >&2
    "$VENV/bin/python" -c 'from rocketmq import Producer' || true
    exit 1
fi
echo "setup_venv_py5.sh: $VENV ready ($PKG)"
