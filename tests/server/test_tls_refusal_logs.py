"""The real ``kiam server`` refuses every client certificate it should not accept, and its
log names the cause (docs/SECURITY.md, docs/TLS.md): gRPC's TLS layer writes one line per
refused handshake, ``Handshake failed with error ...: <cause>``, to the server's stderr."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kiam.certs import CertPaths, generate_certificates, issue_leaf
from kiam_testbed.processes import ServerStack, server_stack

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture
async def stack(tmp_path: Path, certs: CertPaths) -> AsyncIterator[ServerStack]:
    async with server_stack(tmp_path, certs=certs) as running:
        yield running


def _client_pair(ca: CertPaths, directory: Path, *, shift_days: int = 0) -> tuple[bytes, bytes]:
    pair = issue_leaf(
        ca_cert_pem=ca.ca.read_bytes(), ca_key_pem=ca.ca_key.read_bytes(),
        common_name="kiam-agent", names=(), server=False, days=1,
        now=NOW + datetime.timedelta(days=shift_days),
    )
    return pair.cert_pem, pair.key_pem


def _credentials(case: str, stack: ServerStack, directory: Path) -> grpc.ChannelCredentials:
    ca = stack.certs.ca.read_bytes()
    if case == "no client certificate":
        return grpc.ssl_channel_credentials(root_certificates=ca)
    if case == "another CA":
        other = generate_certificates(directory / "other-pki", days=30)
        cert, key = other.agent_cert.read_bytes(), other.agent_key.read_bytes()
    else:
        shift = -10 if case == "expired" else 10
        cert, key = _client_pair(stack.certs, directory, shift_days=shift)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)


CAUSES = {
    "no client certificate": "PEER_DID_NOT_RETURN_A_CERTIFICATE",
    "another CA": "unable to get local issuer certificate",
    "expired": "certificate has expired",
    "not yet valid": "certificate is not yet valid",
}


@pytest.mark.parametrize("case", sorted(CAUSES))
async def test_a_refused_client_certificate_is_logged_with_its_cause(
    stack: ServerStack, tmp_path: Path, case: str
) -> None:
    before = len(stack.server.logs)
    channel = stack.channel(_credentials(case, stack, tmp_path))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    line = await stack.server.wait_for_log(f"Handshake failed.*{CAUSES[case]}", timeout=10)
    assert line
    # and the line is this handshake's, not an earlier case's
    assert any(CAUSES[case] in entry for entry in stack.server.logs[before:])


async def test_the_agents_certificate_is_accepted(stack: ServerStack) -> None:
    reply = await health_pb2_grpc.HealthStub(stack.channel()).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
