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

from kiam.certs import CertPaths
from kiam.common.settings import TLSSettings
from kiam.common.tls import channel_credentials
from tests.common.conftest import health_status, serve_health, write_leaf

NOW = datetime.datetime.now(datetime.UTC)




@contextlib.asynccontextmanager
async def _serve(cert: Path, key: Path, ca: Path) -> AsyncIterator[str]:
    async with serve_health(TLSSettings(cert=str(cert), key=str(key), ca=str(ca))) as port:
        yield f"127.0.0.1:{port}"


@pytest.fixture
async def kiam_server(pki: CertPaths) -> AsyncIterator[str]:
    async with _serve(pki.server_cert, pki.server_key, pki.ca) as target:
        yield target


def _client(pki: CertPaths, cert: Path, key: Path) -> grpc.ChannelCredentials:
    return channel_credentials(TLSSettings(cert=str(cert), key=str(key), ca=str(pki.ca)))


async def test_the_agents_own_certificate_is_served(kiam_server: str, pki: CertPaths) -> None:
    agent = _client(pki, pki.agent_cert, pki.agent_key)
    assert await health_status(kiam_server, agent) == "SERVING"


@pytest.mark.parametrize("shift", [-10, +10], ids=["expired", "not-yet-valid"])
async def test_a_client_certificate_outside_its_validity_is_refused(
    kiam_server: str, pki: CertPaths, tmp_path: Path, shift: int
) -> None:
    # valid for one day, starting ten days ago or ten days from now
    when = NOW + datetime.timedelta(days=shift)
    cert, key = write_leaf(pki, tmp_path, "agent-out-of-date", server=False, now=when, days=1)
    assert await health_status(kiam_server, _client(pki, cert, key)) == "UNAVAILABLE"


async def test_a_server_certificate_for_another_name_is_refused_by_the_agent(
    pki: CertPaths, tmp_path: Path
) -> None:
    cert, key = write_leaf(pki, tmp_path, "elsewhere", server=True, names=("elsewhere.example",))
    async with _serve(cert, key, pki.ca) as target:
        status = await health_status(target, _client(pki, pki.agent_cert, pki.agent_key))
        assert status == "UNAVAILABLE"


async def test_an_expired_server_certificate_is_refused_by_the_agent(
    pki: CertPaths, tmp_path: Path
) -> None:
    cert, key = write_leaf(pki, tmp_path, "stale", server=True, names=("127.0.0.1",),
                      now=NOW - datetime.timedelta(days=10), days=1)
    async with _serve(cert, key, pki.ca) as target:
        status = await health_status(target, _client(pki, pki.agent_cert, pki.agent_key))
        assert status == "UNAVAILABLE"


async def test_the_agents_certificate_presented_as_a_server_is_refused(
    pki: CertPaths,
) -> None:
    # the agent's certificate carries clientAuth only, and no server name
    async with _serve(pki.agent_cert, pki.agent_key, pki.ca) as target:
        status = await health_status(target, _client(pki, pki.agent_cert, pki.agent_key))
        assert status == "UNAVAILABLE"
