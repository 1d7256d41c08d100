"""The mTLS refusal matrix between agent and server (docs/SECURITY.md): every
certificate that should not be accepted is refused, on the side that checks it. A real
grpc.aio server with kiam's ``server_credentials`` on 127.0.0.1, real gRPC clients with
kiam's ``channel_credentials`` (or a raw ``grpc.ssl_channel_credentials`` where the
client is the one at fault)."""

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
from kiam.common.tls import channel_credentials, server_credentials

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture
def pki(tmp_path: Path) -> CertPaths:
    return generate_certificates(tmp_path / "pki", days=30)


def _leaf(pki: CertPaths, tmp_path: Path, name: str, *, server: bool, names: tuple[str, ...] = (),
          now: datetime.datetime = NOW, days: int = 2) -> tuple[Path, Path]:
    pair = issue_leaf(
        ca_cert_pem=pki.ca.read_bytes(), ca_key_pem=pki.ca_key.read_bytes(),
        common_name=name, names=names, server=server, days=days, now=now,
    )
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}-key.pem"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    return cert, key


@contextlib.asynccontextmanager
async def _serve(cert: Path, key: Path, ca: Path) -> AsyncIterator[str]:
    server = grpc.aio.server()
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    settings = TLSSettings(cert=str(cert), key=str(key), ca=str(ca))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(settings))
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


@pytest.fixture
async def kiam_server(pki: CertPaths) -> AsyncIterator[str]:
    async with _serve(pki.server_cert, pki.server_key, pki.ca) as target:
        yield target


async def _status(target: str, credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
    async with grpc.aio.secure_channel(target, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def _client(pki: CertPaths, cert: Path, key: Path) -> grpc.ChannelCredentials:
    return channel_credentials(TLSSettings(cert=str(cert), key=str(key), ca=str(pki.ca)))


async def test_the_agents_own_certificate_is_served(kiam_server: str, pki: CertPaths) -> None:
    assert await _status(kiam_server, _client(pki, pki.agent_cert, pki.agent_key)) == (
        grpc.StatusCode.OK
    )


@pytest.mark.parametrize("shift", [-10, +10], ids=["expired", "not-yet-valid"])
async def test_a_client_certificate_outside_its_validity_is_refused(
    kiam_server: str, pki: CertPaths, tmp_path: Path, shift: int
) -> None:
    # valid for one day, starting ten days ago or ten days from now
    when = NOW + datetime.timedelta(days=shift)
    cert, key = _leaf(pki, tmp_path, "agent-out-of-date", server=False, now=when, days=1)
    assert await _status(kiam_server, _client(pki, cert, key)) == grpc.StatusCode.UNAVAILABLE


async def test_a_server_certificate_for_another_name_is_refused_by_the_agent(
    pki: CertPaths, tmp_path: Path
) -> None:
    cert, key = _leaf(pki, tmp_path, "elsewhere", server=True, names=("elsewhere.example",))
    async with _serve(cert, key, pki.ca) as target:
        status = await _status(target, _client(pki, pki.agent_cert, pki.agent_key))
        assert status == grpc.StatusCode.UNAVAILABLE


async def test_an_expired_server_certificate_is_refused_by_the_agent(
    pki: CertPaths, tmp_path: Path
) -> None:
    cert, key = _leaf(pki, tmp_path, "stale", server=True, names=("127.0.0.1",),
                      now=NOW - datetime.timedelta(days=10), days=1)
    async with _serve(cert, key, pki.ca) as target:
        status = await _status(target, _client(pki, pki.agent_cert, pki.agent_key))
        assert status == grpc.StatusCode.UNAVAILABLE


async def test_the_agents_certificate_presented_as_a_server_is_refused(
    pki: CertPaths,
) -> None:
    # the agent's certificate carries clientAuth only, and no server name
    async with _serve(pki.agent_cert, pki.agent_key, pki.ca) as target:
        status = await _status(target, _client(pki, pki.agent_cert, pki.agent_key))
        assert status == grpc.StatusCode.UNAVAILABLE
