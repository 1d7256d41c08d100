"""Fixtures for the agent's integration tests: certificates, stand-ins, agent processes."""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


def _agent(server: ScriptedNodeServer, imds: ImdsStandIn, *, certs: CertPaths,
           workdir: Path, args: list[str]) -> Iterator[AgentProcess]:
    process = AgentProcess.start(
        ["--server-address", server.address, "--metadata-endpoint", imds.url, *args],
        certs=certs, workdir=workdir,
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def agent(
    certs: CertPaths,
    fake_kiam: ScriptedNodeServer,
    fake_imds: ImdsStandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AgentProcess]:
    """IMDSv2 optional, a narrow allow-list, the fake server and IMDS."""
    yield from _agent(fake_kiam, fake_imds, certs=certs, workdir=tmp_path_factory.mktemp("agent"),
                      args=["--allow-route-regexp", ALLOW])


@pytest.fixture(scope="module")
def strict_agent(
    certs: CertPaths,
    fake_kiam: ScriptedNodeServer,
    fake_imds: ImdsStandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AgentProcess]:
    """IMDSv2 required and an allow-list that allows every path."""
    yield from _agent(fake_kiam, fake_imds, certs=certs,
                      workdir=tmp_path_factory.mktemp("strict-agent"),
                      args=["--allow-route-regexp", ".*", "--imdsv2", "required"])
