"""Shared by the TLS suites: a certificate authority per test, leaves of it written to files
(:func:`write_leaf`), and a real grpc.aio server
(the standard grpc.health.v1 service) on 127.0.0.1 with kiam's ``server_credentials``."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # no stub

from kiam.certs import CertPaths, generate_certificates, issue_leaf
from kiam.common.settings import TLSSettings
from kiam.common.tls import server_credentials


@pytest.fixture
def pki(tmp_path: Path) -> CertPaths:
    return generate_certificates(tmp_path / "pki", days=30)


@contextlib.asynccontextmanager
async def serve_health(settings: TLSSettings) -> AsyncIterator[int]:
    """A SERVING health service behind ``settings``; yields its port."""
    server = grpc.aio.server()
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(settings))
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield port
    finally:
        await server.stop(grace=None)


async def health_status(target: str, credentials: grpc.ChannelCredentials) -> str:
    """The health status's name, or the refusal's gRPC code name."""
    async with grpc.aio.secure_channel(target, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name


def write_leaf(
    pki: CertPaths, tmp_path: Path, name: str, *, server: bool, names: tuple[str, ...] = (),
    now: datetime.datetime | None = None, days: int = 2,
) -> tuple[Path, Path]:
    """A leaf of ``pki``'s CA named ``name``, written to ``NAME.pem`` and
    ``NAME-key.pem`` in ``tmp_path``; valid ``days`` from ``now`` (default: now)."""
    pair = issue_leaf(
        ca_cert_pem=pki.ca.read_bytes(), ca_key_pem=pki.ca_key.read_bytes(),
        common_name=name, names=names, server=server, days=days,
        now=now or datetime.datetime.now(datetime.UTC),
    )
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}-key.pem"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    return cert, key
