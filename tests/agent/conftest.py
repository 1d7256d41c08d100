"""Fixtures for the agent's integration tests: certificates, stand-ins, agent processes."""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kiam.certs import CertPaths, generate_certificates
from kiam_testbed.node_stream_server import ScriptedNodeServer
from tests.agent.standins import AgentProcess, ImdsState, start_fake_imds, start_scripted_kiam

ALLOW = "^/latest/meta-data/(instance-id|placement/availability-zone|reset)$"


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return generate_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def fake_kiam(certs: CertPaths) -> Iterator[ScriptedNodeServer]:
    server = start_scripted_kiam(certs)
    yield server
    server.stop()


@dataclass
class ImdsStandIn:
    state: ImdsState
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def fake_imds() -> Iterator[ImdsStandIn]:
    server: http.server.ThreadingHTTPServer
    server, state, port = start_fake_imds()
    yield ImdsStandIn(state, port)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def agent(
    certs: CertPaths,
    fake_kiam: ScriptedNodeServer,
    fake_imds: ImdsStandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AgentProcess]:
    """IMDSv2 optional, a narrow allow-list, the fake server and IMDS."""
    process = AgentProcess.start(
        [
            "--server-address",
            fake_kiam.address,
            "--metadata-endpoint",
            fake_imds.url,
            "--allow-route-regexp",
            ALLOW,
        ],
        certs=certs,
        workdir=tmp_path_factory.mktemp("agent"),
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def strict_agent(
    certs: CertPaths,
    fake_kiam: ScriptedNodeServer,
    fake_imds: ImdsStandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AgentProcess]:
    """IMDSv2 required and an allow-list that allows every path."""
    process = AgentProcess.start(
        [
            "--server-address",
            fake_kiam.address,
            "--metadata-endpoint",
            fake_imds.url,
            "--allow-route-regexp",
            ".*",
            "--imdsv2",
            "required",
        ],
        certs=certs,
        workdir=tmp_path_factory.mktemp("strict-agent"),
    )
    yield process
    process.stop()
