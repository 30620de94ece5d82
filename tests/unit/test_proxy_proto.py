"""The committed gRPC modules are exactly what `make proto` generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledgermq.proxy.protocol import generate

PROTOCOL_DIR = Path(generate.__file__).resolve().parent


def test_regenerating_gives_identical_modules(tmp_path):
    pytest.importorskip(
        "grpc_tools", reason="grpcio-tools is not installed (pip install -e '.[dev]')"
    )
    generate.generate(tmp_path)
    produced = sorted((tmp_path / "ledgermq" / "proxy" / "protocol").iterdir())
    assert {p.name for p in produced} >= {"definition_pb2.py", "service_pb2_grpc.py"}
    for new in produced:
        committed = PROTOCOL_DIR / new.name
        assert committed.exists(), f"{new.name} is generated but not committed: run `make proto`"
        assert committed.read_bytes() == new.read_bytes(), (
            f"{new.name} differs from what `make proto` generates: run `make proto`"
        )


def test_service_has_every_rpc_the_clients_use():
    from ledgermq.proxy.protocol import service_pb2

    methods = {m.name for m in service_pb2.DESCRIPTOR.services_by_name["MessagingService"].methods}
    assert methods == {
        "QueryRoute", "Heartbeat", "SendMessage", "QueryAssignment", "ReceiveMessage",
        "AckMessage", "ForwardMessageToDeadLetterQueue", "PullMessage", "UpdateOffset",
        "GetOffset", "QueryOffset", "EndTransaction", "Telemetry", "NotifyClientTermination",
        "ChangeInvisibleDuration", "RecallMessage", "SyncLiteSubscription",
    }  # fmt: skip
    assert service_pb2.DESCRIPTOR.package == "apache.rocketmq.v2"


def test_enum_values_differ_from_remoting_as_documented():
    from ledgermq.proxy.protocol import definition_pb2 as pb

    assert (pb.NONE, pb.READ, pb.WRITE, pb.READ_WRITE) == (1, 2, 3, 4)
    assert (pb.NORMAL, pb.FIFO, pb.DELAY, pb.TRANSACTION, pb.LITE, pb.PRIORITY) == (
        1,
        2,
        3,
        4,
        5,
        6,
    )
    assert (pb.PRODUCER, pb.PUSH_CONSUMER, pb.SIMPLE_CONSUMER, pb.PULL_CONSUMER) == (1, 2, 3, 4)
    assert pb.Code.Value("OK") == 20000
    assert pb.Code.Value("INVALID_RECEIPT_HANDLE") == 40013
    assert pb.Code.Value("NOT_IMPLEMENTED") == 50100
