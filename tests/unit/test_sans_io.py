"""DESIGN.md principle 1: protocol cores never touch I/O, clocks or randomness directly."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "ledgermq"
FORBIDDEN = {"asyncio", "socket", "time", "os", "random", "selectors", "threading"}
SANS_IO_MODULES = [
    "remoting/codec.py",
    "remoting/codes.py",
    "common/message.py",
    "namesrv/route_table.py",
    "common/fastjson.py",
    "common/route_data.py",
    "common/pop_handle.py",
    "broker/pop/order.py",
    "broker/transaction/progress.py",
    "proxy/receipt.py",
    "proxy/status.py",
    "proxy/validation.py",
    "proxy/route.py",
    "proxy/message_codec.py",
    "proxy/txid.py",
    "proxy/settings.py",
    "dledger/core/__init__.py",
    "dledger/core/node.py",
    "dledger/core/log.py",
    "dledger/core/storage.py",
    "dledger/core/types.py",
    "dledger/protocol.py",
    "dledger/kv.py",
    "dledger/statemachine.py",
]


@pytest.mark.parametrize("relative", SANS_IO_MODULES)
def test_core_module_imports_no_io(relative):
    path = SRC / relative
    if not path.exists():
        pytest.fail(f"{relative} is listed as a sans-I/O core but does not exist")
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not (imported & FORBIDDEN), f"{relative} imports {sorted(imported & FORBIDDEN)}"
