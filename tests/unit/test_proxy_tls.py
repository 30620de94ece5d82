"""The proxy serves TLS when tlsKeyPath and tlsCertPath are set, plaintext otherwise."""

from __future__ import annotations

import shutil
import subprocess

import grpc
import pytest

from ledgermq.common.config import ConfigError
from ledgermq.proxy.config import proxy_config_from
from ledgermq.proxy.protocol import definition_pb2 as pb
from ledgermq.proxy.protocol import service_pb2 as svc
from ledgermq.proxy.protocol import service_pb2_grpc as svc_grpc
from ledgermq.proxy.server import ProxyServer
from tests.unit.test_proxy_service import META, FakeBackend


class StartableBackend(FakeBackend):
    async def start(self):
        pass

    async def stop(self):
        pass


@pytest.fixture
def cert_pair(tmp_path):
    openssl = shutil.which("openssl")
    assert openssl, "the TLS test needs the openssl command (Debian package openssl)"
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def _query(topic="T"):
    return svc.QueryRouteRequest(
        topic=pb.Resource(name=topic),
        endpoints=pb.Endpoints(scheme=pb.IPv4, addresses=[pb.Address(host="127.0.0.1", port=1)]),
    )


async def test_tls_when_configured_and_plaintext_is_then_refused(cert_pair):
    key, cert = cert_pair
    config = proxy_config_from(
        {"grpcServerPort": "0", "grpcServerHost": "127.0.0.1", "tlsKeyPath": str(key),
         "tlsCertPath": str(cert)}
    )  # fmt: skip
    server = ProxyServer(config, StartableBackend())  # type: ignore[arg-type]
    await server.start()
    try:
        assert server.tls
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{server.port}", creds) as channel:
            reply = await svc_grpc.MessagingServiceStub(channel).QueryRoute(
                _query(), metadata=META, timeout=5
            )
            assert reply.status.code == pb.OK and reply.message_queues
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await svc_grpc.MessagingServiceStub(channel).QueryRoute(
                    _query(), metadata=META, timeout=3
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


def test_tls_needs_both_files_and_they_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="tlsCertPath"):
        proxy_config_from({"tlsKeyPath": str(tmp_path / "k.pem")})
    with pytest.raises(ConfigError, match="tlsKeyPath"):
        proxy_config_from(
            {"tlsKeyPath": str(tmp_path / "missing.pem"), "tlsCertPath": str(tmp_path / "x")}
        )
