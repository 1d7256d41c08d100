"""The real ``kiam agent`` refuses a server certificate it should not accept, and its own
log names the cause, once a minute per server (docs/TLS.md, docs/SECURITY.md): a pod's
request is answered 503 meanwhile. The server is a real grpc.aio server with kiam's
``server_credentials`` on 127.0.0.1 (tests/common/conftest.py), behind each bad
certificate; the agent is the real process."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest

from kiam.certs import CertPaths, generate_certificates
from kiam.common.settings import TLSSettings
from tests.agent.standins import AgentProcess, raw_request
from tests.common.conftest import serve_health, write_leaf

NOW = datetime.datetime.now(datetime.UTC)

CAUSES = {
    "a certificate for another name": "Hostname Verification Check failed",
    "an expired certificate": "certificate has expired",
    "the agent's own certificate": "unsupported certificate purpose",
    "a certificate from another CA": "unable to get local issuer certificate",
}
"""What the agent's warning says, by the server certificate it was shown."""


def _server_pair(case: str, certs: CertPaths, directory: Path) -> tuple[Path, Path]:
    if case == "the agent's own certificate":
        return certs.agent_cert, certs.agent_key
    if case == "a certificate from another CA":
        other = generate_certificates(directory / "other-pki", days=30)
        return other.server_cert, other.server_key
    if case == "an expired certificate":
        return write_leaf(certs, directory, "stale", server=True, names=("127.0.0.1",),
                          now=NOW - datetime.timedelta(days=10), days=1)
    return write_leaf(certs, directory, "elsewhere", server=True, names=("elsewhere.example",))


@pytest.mark.parametrize("case", sorted(CAUSES))
async def test_the_agent_logs_why_it_refused_the_server_once_a_minute(
    certs: CertPaths, tmp_path: Path, case: str
) -> None:
    cert, key = _server_pair(case, certs, tmp_path)
    async with serve_health(TLSSettings(cert=str(cert), key=str(key), ca=str(certs.ca))) as port:
        target = f"127.0.0.1:{port}"
        agent = await asyncio.to_thread(
            AgentProcess.start,
            ["--server-address", target, "--metadata-endpoint", "http://127.0.0.1:9"],
            certs=certs, workdir=tmp_path,
        )
        try:
            warning = rf"warn\S*\s+kiam\.agent\.client: kiam server {target}: TLS refused: "
            roles = "/latest/meta-data/iam/security-credentials/"
            for _ in range(3):
                answer = await raw_request(agent.port, roles)
                assert answer.status == 503, answer.text
            line = await asyncio.to_thread(agent.child.wait_for, warning + ".*" + CAUSES[case])
            assert line
            # three pod requests, one warning: the rest of the minute's failures are info
            assert agent.child.count_logs(warning) == 1
            assert agent.child.count_logs("Traceback") == 0
        finally:
            await asyncio.to_thread(agent.stop)
