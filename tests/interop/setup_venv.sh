#!/usr/bin/env bash
# Create .venv-interop-cpp/ at the repo root with Apache's RocketMQ C++-core
# Python client (rocketmq-client-python==0.5.0rc2, import name `rocketmq`).
# Idempotent: re-running is cheap when the venv is already good.
#
# The wheel (manylinux1_x86_64) bundles librocketmq.so (C++ core, statically
# linked with libevent/jsoncpp/boost) plus its own libz; it only needs glibc
# libs and libstdc++6/libgcc-s1 from the system, which Debian 12 ships.
# Usage: bash tests/interop/setup_venv.sh   (env PYTHON=python3.11 to override)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv-interop-cpp"
PYTHON="${PYTHON:-python3}"
PKG="rocketmq-client-python==0.5.0rc2"

if [ "$(uname -m)" != "x86_64" ]; then
    echo "setup_venv.sh: $PKG only ships a manylinux x86_64 wheel (got $(uname -m))" >&2
    exit 1
fi

apt_install() {
    # Install Debian packages only when missing; we run as root in CI.
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    local SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup_venv.sh: apt-get installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
}


# Runtime deps of librocketmq.so besides libc/libm/libdl/libpthread/librt.
if ! ldconfig -p 2>/dev/null | grep -q 'libstdc++.so.6 ' || ! ldconfig -p 2>/dev/null | grep -q 'libgcc_s.so.1 '; then
    apt_install libstdc++6 libgcc-s1
fi

check() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.metadata as md
assert md.version("rocketmq-client-python") == "0.5.0rc2"
import rocketmq.client  # loads librocketmq.so via ctypes
PY
}

if check; then
    echo "setup_venv.sh: $VENV already OK"
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
        apt_install python3-venv "python${pyver}-venv"
        "$PYTHON" -m venv "$VENV"
    fi
fi

# --pre is implied by the exact ==rc pin; --no-deps: the package has none.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$PKG"

SO="$("$VENV/bin/python" -c 'import os, importlib.util as u; print(os.path.join(os.path.dirname(u.find_spec("rocketmq").origin), "librocketmq.so"))')"
if command -v ldd >/dev/null 2>&1 && ldd "$SO" | grep -q 'not found'; then
    echo "setup_venv.sh: unresolved libraries for $SO:" >&2
    ldd "$SO" | grep 'not found' >&2
    exit 1
fi

if ! check; then
    echo "setup_venv.sh: 'import rocketmq.client' failed in $VENV:" >&2
    "$VENV/bin/python" -c 'import rocketmq.client' || true
    exit 1
fi
echo "setup_venv.sh: $VENV ready ($PKG, $SO)"
