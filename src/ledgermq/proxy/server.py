"""ProxyServer: the grpc.aio server hosting MessagingService (plaintext h2c, or TLS when
tlsKeyPath and tlsCertPath are set)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import grpc

from ledgermq.common.config import ConfigError
from ledgermq.proxy.activities.route import AdvertisedEndpoint
from ledgermq.proxy.backend import ClusterBackend
from ledgermq.proxy.config import ProxyConfig
from ledgermq.proxy.protocol import service_pb2_grpc as svc_grpc
from ledgermq.proxy.service import MessagingService

log = logging.getLogger(__name__)


class ProxyServer:
    def __init__(self, config: ProxyConfig, backend: ClusterBackend | None = None) -> None:
        self.config = config
        # local mode passes a LocalBackend (proxy/local_backend.py)
        self.backend = backend if backend is not None else ClusterBackend(config)
        self.advertise = AdvertisedEndpoint(config.advertised_host, config.grpc_server_port)
        self.service = MessagingService(config, self.backend, self.advertise)
        self._server: grpc.aio.Server | None = None
        self._janitor: asyncio.Task[None] | None = None
        self.port = config.grpc_server_port

    @property
    def address(self) -> str:
        return f"{self.config.grpc_server_host}:{self.port}"

    async def start(self) -> None:
        """Binds the port (OSError if it cannot) and starts the remoting side."""
        limit = self.config.grpc_max_inbound_message_size
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ]
        )
        svc_grpc.add_MessagingServiceServicer_to_server(self.service, server)
        target = f"{self.config.grpc_server_host}:{self.config.grpc_server_port}"
        try:
            credentials = self._tls_credentials()
            if credentials is None:
                port = server.add_insecure_port(target)
            else:
                port = server.add_secure_port(target, credentials)
        except RuntimeError as exc:
            raise OSError(98, f"cannot listen on {target}: {exc}") from exc
        if port == 0:
            raise OSError(98, f"cannot listen on {target}")
        self.port = port
        self.advertise.port = port
        await self.backend.start()
        await server.start()
        self._server = server
        self._janitor = asyncio.create_task(self._expire_sessions())
        self.service.renewer.start()
        log.info(
            "gRPC proxy listening on %s (%s)", self.address, "TLS" if self.tls else "plaintext"
        )

    def _tls_credentials(self) -> grpc.ServerCredentials | None:
        cfg = self.config
        if not (cfg.tls_key_path and cfg.tls_cert_path):
            return None
        try:
            key = Path(cfg.tls_key_path).read_bytes()
            cert = Path(cfg.tls_cert_path).read_bytes()
        except OSError as exc:
            raise ConfigError("tlsKeyPath", f"cannot read the TLS files: {exc}") from exc
        return grpc.ssl_server_credentials([(key, cert)])

    @property
    def tls(self) -> bool:
        return bool(self.config.tls_key_path and self.config.tls_cert_path)

    async def _expire_sessions(self) -> None:
        # A client that closed its Telemetry stream and made no call for
        # channelExpiredInSeconds (it died without NotifyClientTermination) is forgotten.
        idle = float(self.config.channel_expired_in_seconds)
        while True:
            await asyncio.sleep(max(0.5, idle / 4))
            for client_id in self.service.sessions.expire(idle):
                log.info("forgot idle client %s", client_id)

    async def stop(self, grace: float = 1.0) -> None:
        await self.service.renewer.stop()
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
            self._janitor = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        await self.backend.stop()
