"""Our real ``kiam agent`` in front of a Go Kiam server (the rolling update's state
"new agents, Go servers"): the Go-shaped server of go_server.py over mTLS, counting the
RPCs it receives. Pods are loopback source addresses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson
import pytest

from kiam.certs import CertPaths
from tests.agent.standins import AgentProcess
from tests.compat.go_server import BASE_ARN, GoPod, RunningGoServer, go_shaped_server

CREDS = "/latest/meta-data/iam/security-credentials/"
SDK_PATIENCE = 1.0
"""Seconds botocore and the other AWS SDKs wait for an IMDS answer by default."""

PODS = {
    "127.0.4.2": GoPod(role="reader"),
    "127.0.4.3": GoPod(role="kiam/pathrole"),
    "127.0.4.4": GoPod(role=BASE_ARN + "team/full-arn"),
    "127.0.4.5": GoPod(role="/leading-slash"),
    "127.0.4.6": GoPod(role="db", permitted=BASE_ARN + "web-.*"),
    "127.0.4.7": GoPod(role=""),
}
UNKNOWN_POD = "127.0.4.99"


@dataclass
class Fleet:
    server: RunningGoServer
    agent: AgentProcess


@pytest.fixture
async def fleet(certs: CertPaths, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    async with go_shaped_server(certs, PODS) as server:
        # the agent's start-up waits in a thread: the Go-shaped server runs on this loop
        agent = await asyncio.to_thread(
            AgentProcess.start,
            ["--server-address", server.address],
            certs=certs,
            workdir=tmp_path_factory.mktemp("agent"),
        )
        try:
            yield Fleet(server, agent)
        finally:
            await asyncio.to_thread(agent.stop)


async def fetch(fleet: Fleet, ip: str, path: str) -> tuple[int, str, float]:
    """GET ``path`` from the pod at ``ip``: status, body and seconds taken."""
    connector = aiohttp.TCPConnector(local_addr=(ip, 0))
    async with aiohttp.ClientSession(connector=connector) as pod:
        started = time.monotonic()
        async with pod.get(fleet.agent.url() + path, allow_redirects=False) as response:
            return response.status, await response.text(), time.monotonic() - started


@pytest.mark.parametrize(
    ("ip", "role"),
    [
        ("127.0.4.2", "admin"),  # not the pod's role
        ("127.0.4.6", "db"),  # the namespace's expression forbids it
    ],
)
async def test_a_go_servers_refusal_is_403_at_once_without_retries(
    fleet: Fleet, ip: str, role: str
) -> None:
    status, body, elapsed = await fetch(fleet, ip, CREDS + role)
    assert status == 403, body
    assert "forbidden by policy" in body
    assert elapsed < 0.5, elapsed
    assert len(fleet.server.servicer.calls_from(ip, "GetPodCredentials")) == 1


async def test_an_unknown_pod_is_404_within_the_sdks_patience(fleet: Fleet) -> None:
    for path, method in ((CREDS, "GetPodRole"), (CREDS + "reader", "GetPodCredentials")):
        status, body, elapsed = await fetch(fleet, UNKNOWN_POD, path)
        assert status == 404, body
        assert elapsed < SDK_PATIENCE, elapsed
        assert len(fleet.server.servicer.calls_from(UNKNOWN_POD, method)) == 1


@pytest.mark.parametrize(
    ("ip", "listed"),
    [
        ("127.0.4.3", "kiam/pathrole"),
        ("127.0.4.4", BASE_ARN + "team/full-arn"),
        ("127.0.4.5", "/leading-slash"),
    ],
)
async def test_a_role_as_a_go_server_names_it_is_listed_and_served(
    fleet: Fleet, ip: str, listed: str
) -> None:
    status, body, _ = await fetch(fleet, ip, CREDS)
    assert (status, body) == (200, listed)
    # an SDK appends the name it was given to the list's path, as it is
    status, body, _ = await fetch(fleet, ip, CREDS + listed)
    assert status == 200, body
    document = orjson.loads(body)
    assert document["Code"] == "Success"
    assert document["AccessKeyId"].startswith("ASIAGO")
    [call] = fleet.server.servicer.calls_from(ip, "GetPodCredentials")
    assert call.role == listed.lstrip("/")  # the agent collapsed the doubled slash


async def test_a_pod_without_a_role_is_404(fleet: Fleet) -> None:
    status, body, _ = await fetch(fleet, "127.0.4.7", CREDS)
    assert status == 404, body
