"""``kiam agent`` as a process: metrics, mTLS refusal, start-up errors, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from kiam.certs import CertPaths, generate_certificates
from kiam_testbed.node_stream_server import ScriptedNodeServer
from kiam_testbed.stack import free_port
from tests.agent.standins import AgentProcess

CREDS = "/latest/meta-data/iam/security-credentials/"


async def get(url: str, *, source: str = "127.0.0.2") -> tuple[int, str]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        return resp.status, await resp.text()


def metric_value(text: str, line_prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line starts with {line_prefix!r}")


async def test_metrics_are_served_with_kiams_names(
    certs: CertPaths, fake_kiam: ScriptedNodeServer, tmp_path: Path
) -> None:
    metrics_port = free_port()
    agent = AgentProcess.start(
        [
            "--server-address",
            fake_kiam.address,
            "--prometheus-listen-addr",
            f"127.0.0.1:{metrics_port}",
        ],
        certs=certs,
        workdir=tmp_path,
    )
    try:
        assert (await get(agent.url() + CREDS, source="127.0.1.2"))[0] == 200
        assert (await get(agent.url() + CREDS + "role-2", source="127.0.1.2"))[0] == 200
        assert (await get(agent.url() + CREDS, source="127.0.0.3"))[0] == 404
        assert (await get(agent.url() + CREDS, source="127.0.0.4"))[0] == 404
        assert (await get(agent.url() + CREDS + "broken", source="127.0.0.6"))[0] == 500
        assert (await get(agent.url() + "/latest/user-data"))[0] == 404
        status, text = await get(f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        assert agent.stop() == 0
    assert status == 200
    assert metric_value(text, "kiam_metadata_proxy_requests_blocked_total") == 1
    assert metric_value(text, "kiam_metadata_empty_role_total") == 1
    assert metric_value(text, "kiam_metadata_find_role_errors_total") == 1
    assert metric_value(text, "kiam_metadata_credential_fetch_errors_total") == 1
    assert metric_value(text, 'kiam_metadata_success_total{handler="credentials"}') == 1
    assert metric_value(text, 'kiam_metadata_success_total{handler="roleName"}') == 1
    assert metric_value(text, 'kiam_metadata_responses_total{code="404",handler="proxy"}') == 1
    assert metric_value(text, 'kiam_metadata_responses_total{code="404",handler="roleName"}') == 2
    assert 'kiam_metadata_handler_latency_seconds_count{handler="credentials"}' in text
    # codes spelled as Go's grpc-prometheus spells them, as the server labels them too
    assert metric_value(text, 'grpc_client_handled_total{grpc_code="Internal"') == 1
    assert metric_value(text, 'grpc_client_handled_total{grpc_code="NotFound"') == 1
    assert 'grpc_code="NOT_FOUND"' not in text
    assert 'grpc_client_started_total{grpc_method="GetPodRole"' in text
    assert "process_resident_memory_bytes" in text


async def test_server_with_another_ca_is_refused(
    fake_kiam: ScriptedNodeServer, tmp_path: Path
) -> None:
    # certificates from a different CA: the server refuses us and we refuse it
    stranger = generate_certificates(tmp_path / "other-ca")
    agent = AgentProcess.start(
        ["--server-address", fake_kiam.address, "--gateway-timeout-creation", "300ms"],
        certs=stranger,
        workdir=tmp_path,
    )
    try:
        status, text = await get(agent.url() + CREDS, source="127.0.1.3")
        assert status == 503, text
        assert (await get(agent.url() + "/health?deep=1"))[0] == 503
        assert (await get(agent.url() + "/health"))[0] == 200
    finally:
        agent.stop()
    assert not fake_kiam.rpcs("127.0.1.3")
    assert "no kiam server reachable yet" in agent.child.log()


def test_unusable_tls_files_end_the_process_with_the_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiam",
            "agent",
            "--port",
            "0",
            *("--cert", str(empty), "--key", str(empty), "--ca", str(empty)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "kiam agent cannot start" in done.stderr
    assert "empty" in done.stderr


async def test_graceful_shutdown_finishes_in_flight_requests(
    certs: CertPaths, fake_kiam: ScriptedNodeServer, tmp_path: Path
) -> None:
    agent = AgentProcess.start(
        ["--server-address", fake_kiam.address], certs=certs, workdir=tmp_path
    )
    try:
        # 127.0.0.10 is answered by the scripted server after a pause
        before = len(fake_kiam.rpcs("127.0.0.10"))
        pending = asyncio.create_task(get(agent.url() + CREDS, source="127.0.0.10"))
        while len(fake_kiam.rpcs("127.0.0.10")) == before:  # noqa: ASYNC110 (another thread's list)
            await asyncio.sleep(0.01)
        agent.child.signal(signal.SIGTERM)
        assert await pending == (200, "draining")
        assert await asyncio.to_thread(agent.child.popen.wait, 15) == 0
    finally:
        agent.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(agent.url() + "/ping")
    log = agent.child.log()
    assert log.index("listening on") < log.index("kiam agent ready")
    assert log.index("kiam agent ready") < log.index("received SIGTERM")
    assert log.index("received SIGTERM") < log.index("kiam agent stopped")


async def test_dns_name_server_address_and_ip_query_for_development(
    certs: CertPaths, fake_kiam: ScriptedNodeServer, tmp_path: Path
) -> None:
    # "localhost" goes through dns:/// with round_robin and TLS checks that name
    agent = AgentProcess.start(
        ["--server-address", f"localhost:{fake_kiam.port}", "--allow-ip-query"],
        certs=certs,
        workdir=tmp_path,
    )
    try:
        assert await get(agent.url() + CREDS, source="127.0.1.60") == (200, "role-60")
        # --allow-ip-query lets the caller choose whose role it sees (development only)
        spoofed = await get(agent.url() + CREDS + "?ip=127.0.1.61", source="127.0.1.60")
        assert spoofed == (200, "role-61")
        assert (await get(agent.url() + CREDS + "?ip=nonsense", source="127.0.1.60"))[0] == 400
    finally:
        agent.stop()
    assert "--allow-ip-query is on" in agent.child.log()
