"""Regenerates the Python modules of our apache.rocketmq.v2 .proto files.

`make proto` runs it; tests/unit/test_proxy_proto.py runs it into a temporary
directory and checks the committed modules are what it produces.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
# Imports inside the .proto files are relative to src/, so the generated code
# imports `ledgermq.proxy.protocol.definition_pb2` and needs no path tricks.
SRC_ROOT = PROTO_DIR.parents[2]
PROTO_FILES = ("definition.proto", "service.proto", "admin.proto")


def generate(out_dir: Path) -> None:
    """Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py under out_dir/ledgermq/proxy/protocol."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    # Absolute paths inside an -I root: protoc names them relative to that root.
    files = [str(PROTO_DIR / name) for name in PROTO_FILES]
    args = [
        "grpc_tools.protoc",
        f"-I{SRC_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SRC_ROOT
    generate(target)
    print(f"generated {', '.join(PROTO_FILES)} into {target}")
