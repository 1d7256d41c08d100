"""``kiam health`` against an in-test gRPC server speaking the real KiamService protocol
over real mTLS (certificates from ``kiam.certs``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from kiam.certs import CertPaths, generate_certificates
from kiam.common.settings import HealthSettings, TLSSettings
from kiam.common.tls import TLSError, server_credentials
from kiam.health import HealthCheckError, probe, run_health
from kiam.wire import kiam_pb2, kiam_pb2_grpc

KIAM = Path(sys.executable).parent / "kiam"


class HealthOnly(kiam_pb2_grpc.KiamServiceServicer):
    """GetHealth answers ``message``, or fails with ``failure`` when set."""

    def __init__(self, message: str = "ok") -> None:
        self.message = message
        self.failure: tuple[grpc.StatusCode, str] | None = None
        self.calls = 0
        self.retried = asyncio.Event()
        """Set once GetHealth was called twice."""

    async def GetHealth(
        self, request: kiam_pb2.GetHealthRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> kiam_pb2.HealthStatus:
        self.calls += 1
        if self.calls >= 2:
            self.retried.set()
        if self.failure is not None:
            await context.abort(*self.failure)
        return kiam_pb2.HealthStatus(message=self.message)

    async def GetPodRole(
        self, request: kiam_pb2.GetPodRoleRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> kiam_pb2.Role:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "health only")

    async def GetPodCredentials(
        self,
        request: kiam_pb2.GetPodCredentialsRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> kiam_pb2.Credentials:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "health only")


@dataclass(frozen=True)
class Server:
    address: str
    servicer: HealthOnly


@pytest.fixture
def pki(tmp_path: Path) -> CertPaths:
    return generate_certificates(tmp_path / "pki", days=2)


@pytest.fixture
async def server(pki: CertPaths) -> AsyncIterator[Server]:
    servicer = HealthOnly(message="ok")
    grpc_server = grpc.aio.server()
    kiam_pb2_grpc.add_KiamServiceServicer_to_server(servicer, grpc_server)
    tls = TLSSettings(cert=str(pki.server_cert), key=str(pki.server_key), ca=str(pki.ca))
    port = grpc_server.add_secure_port("127.0.0.1:0", server_credentials(tls))
    await grpc_server.start()
    try:
        yield Server(address=f"127.0.0.1:{port}", servicer=servicer)
    finally:
        await grpc_server.stop(grace=None)


@pytest.fixture
async def closed_address(pki: CertPaths) -> str:
    """An address nothing listens on: a port a server bound and gave back."""
    grpc_server = grpc.aio.server()
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    await grpc_server.stop(grace=None)
    return f"127.0.0.1:{port}"


def _settings(pki: CertPaths, address: str, *, timeout: float = 2.0) -> HealthSettings:
    tls = TLSSettings(cert=str(pki.agent_cert), key=str(pki.agent_key), ca=str(pki.ca))
    return HealthSettings(tls=tls, server_address=address, timeout=timeout)


async def test_no_server_address(pki: CertPaths) -> None:
    with pytest.raises(HealthCheckError, match="--server-address: no server address"):
        await probe(_settings(pki, " , "))


async def test_healthy_server(server: Server, pki: CertPaths) -> None:
    healthy = await probe(_settings(pki, server.address))
    assert (healthy.address, healthy.message) == (server.address, "ok")
    assert server.servicer.calls == 1


async def test_unreachable_server(closed_address: str, pki: CertPaths) -> None:
    with pytest.raises(HealthCheckError, match="unreachable") as info:
        await probe(_settings(pki, closed_address, timeout=0.5))
    assert closed_address in str(info.value)


async def test_a_dns_name_is_dialled_through_the_dns_resolver(
    server: Server, pki: CertPaths
) -> None:
    port = server.address.rpartition(":")[2]
    healthy = await probe(_settings(pki, f"localhost:{port}"))
    assert (healthy.address, healthy.message) == (f"dns:///localhost:{port}", "ok")


async def test_second_server_answers_when_first_is_down(
    server: Server, closed_address: str, pki: CertPaths
) -> None:
    healthy = await probe(_settings(pki, f"{closed_address},{server.address}"))
    assert healthy.address == server.address


async def test_retries_until_the_server_becomes_healthy(server: Server, pki: CertPaths) -> None:
    server.servicer.failure = (grpc.StatusCode.UNAVAILABLE, "caches not synced")
    probing = asyncio.create_task(probe(_settings(pki, server.address, timeout=30)))
    async with asyncio.timeout(30):
        await server.servicer.retried.wait()  # it retried after the first refusal
    server.servicer.failure = None
    healthy = await probing
    assert healthy.message == "ok"


async def test_server_failure_is_reported(server: Server, pki: CertPaths) -> None:
    server.servicer.failure = (grpc.StatusCode.UNAVAILABLE, "caches not synced")
    with pytest.raises(HealthCheckError, match="server unavailable: caches not synced"):
        await probe(_settings(pki, server.address, timeout=0.3))


async def test_certificate_from_another_ca_is_refused(
    server: Server, pki: CertPaths, tmp_path: Path
) -> None:
    other = generate_certificates(tmp_path / "other", days=2)
    tls = TLSSettings(cert=str(other.agent_cert), key=str(other.agent_key), ca=str(pki.ca))
    settings = HealthSettings(tls=tls, server_address=server.address, timeout=0.5)
    with pytest.raises(HealthCheckError, match="certificate not accepted") as info:
        await probe(settings)
    assert server.servicer.calls == 0
    assert server.address in str(info.value)


async def test_server_certificate_from_an_untrusted_ca(
    server: Server, pki: CertPaths, tmp_path: Path
) -> None:
    other = generate_certificates(tmp_path / "other", days=2)
    tls = TLSSettings(cert=str(pki.agent_cert), key=str(pki.agent_key), ca=str(other.ca))
    settings = HealthSettings(tls=tls, server_address=server.address, timeout=0.5)
    with pytest.raises(HealthCheckError, match="TLS refused"):
        await probe(settings)
    assert server.servicer.calls == 0


async def test_unusable_certificate_files(pki: CertPaths, tmp_path: Path) -> None:
    tls = TLSSettings(cert=str(tmp_path / "gone.pem"), key=str(pki.agent_key), ca=str(pki.ca))
    with pytest.raises(TLSError, match=r"gone\.pem"):
        await probe(HealthSettings(tls=tls, server_address="127.0.0.1:1"))


async def test_run_health_in_process_exit_codes(
    closed_address: str, pki: CertPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    # run_health owns its event loop: run it off this one
    run: Callable[[HealthSettings], int] = run_health
    code = await asyncio.to_thread(run, _settings(pki, closed_address, timeout=0.3))
    assert code == 1
    assert "unhealthy" in capsys.readouterr().err


async def _kiam_health(pki: CertPaths, address: str, *extra: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(KIAM),
        "health",
        "--cert",
        str(pki.agent_cert),
        "--key",
        str(pki.agent_key),
        "--ca",
        str(pki.ca),
        "--server-address",
        address,
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_kiam_health_subprocess_healthy(server: Server, pki: CertPaths) -> None:
    server.servicer.message = "all good"
    code, out, err = await _kiam_health(pki, server.address, "--timeout", "10s")
    assert code == 0, err
    assert out == "healthy: all good\n"


async def test_kiam_health_subprocess_server_down(closed_address: str, pki: CertPaths) -> None:
    code, out, err = await _kiam_health(pki, closed_address, "--timeout", "300ms")
    assert code == 1
    assert out == ""
    assert "unreachable" in err
    assert closed_address in err
