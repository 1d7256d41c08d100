"""The agent's container credentials endpoint through the real ``kiam agent`` and ``kiam
server`` processes, against the emulator's TokenReview and the STS stand-in
(docs/token-credentials.md, "On the agent"). The endpoint listens on 127.0.0.1 here, with
no interface of its own; tests/e2e/test_token_sdks.py runs it on the real link-local
addresses with real SDKs."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from kiam.certs import CertPaths
from kiam_testbed.child import AsyncChild
from kiam_testbed.commands import ACCOUNT, ROLE_BASE_ARN, tls_args
from kiam_testbed.processes import ServerStack, server_stack, start_kiam
from kiam_testbed.stack import free_port

ROLE = "iam.amazonaws.com/role"
LISTENING = r"token credentials endpoint listening on (\S+)"
METRICS = re.compile(
    r'^grpc_client_started_total\{grpc_method="GetTokenCredentials",'
    r'grpc_service="kiam.KiamTokenService",grpc_type="unary"\} (\S+)$',
    re.MULTILINE,
)


@dataclass(kw_only=True)
class Running:
    stack: ServerStack
    agent: AsyncChild
    url: str
    metrics_url: str
    session: aiohttp.ClientSession

    async def ask(self, token: str | None) -> tuple[int, bytes]:
        headers = {} if token is None else {"Authorization": token}
        async with self.session.get(self.url, headers=headers) as response:
            return response.status, await response.read()

    async def rpcs(self) -> float:
        async with self.session.get(self.metrics_url) as response:
            found = METRICS.search(await response.text())
        assert found, "no grpc_client_started_total for GetTokenCredentials"
        return float(found.group(1))

    async def token_when_cached(self, namespace: str, name: str) -> str:
        """A token for the pod once the server's pod cache has it (the watch delivers a
        new pod a moment after its creation)."""
        token = self.stack.kube.request_token(namespace, name)
        for _ in range(100):
            status, body = await self.ask(token)
            if status != 401 or b"is not running" not in body:
                return token
            await asyncio.sleep(0.05)
        return token


@pytest.fixture
async def running(tmp_path: Path, certs: CertPaths) -> AsyncIterator[Running]:
    metrics_port = free_port()
    namespaces = {"team": ROLE_BASE_ARN + "team-.*", "locked": ""}
    async with server_stack(tmp_path, certs=certs, namespaces=namespaces) as stack:
        for namespace in namespaces:
            stack.kube.create_service_account(namespace)
        tls = tls_args(cert=certs.agent_cert, key=certs.agent_key, ca=certs.ca)
        agent = await start_kiam(
            [
                "agent", "--port", "0", "--listen-address", "127.0.0.1",
                "--server-address", stack.server.address, *tls,
                "--prometheus-listen-addr", f"127.0.0.1:{metrics_port}",
                "--token-credentials", "--token-credentials-listen", "127.0.0.1:0",
                "--token-credentials-interface", "",
            ],
            log_dir=tmp_path,
        )
        try:
            await agent.wait_for_log("kiam agent ready")
            address = agent.child.wait_for(LISTENING)[1]
            async with aiohttp.ClientSession() as session:
                yield Running(
                    stack=stack,
                    agent=agent,
                    url=f"http://{address}/v1/credentials",
                    metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
                    session=session,
                )
        finally:
            await agent.stop()


def _pod(running: Running, namespace: str, name: str, *, host_network: bool = True,
         role: str = "team-tools") -> None:
    annotations = {ROLE: role} if role else {}
    running.stack.kube.create_pod(namespace, name, ip="192.168.0.9", host_network=host_network,
                                  annotations=annotations)


@pytest.mark.parametrize("host_network", [True, False], ids=["hostNetwork", "pod-network"])
async def test_the_token_gets_its_pods_role_in_the_container_format(
    running: Running, host_network: bool
) -> None:
    _pod(running, "team", "tools", host_network=host_network)
    token = await running.token_when_cached("team", "tools")
    status, body = await running.ask(token)
    assert status == 200, body
    document = orjson.loads(body)
    assert sorted(document) == ["AccessKeyId", "AccountId", "Expiration", "SecretAccessKey",
                                "Token"]
    assert document["AccountId"] == ACCOUNT
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", document["Expiration"])
    assert document["AccessKeyId"] and document["SecretAccessKey"] and document["Token"]
    log = "\n".join(running.agent.logs)
    assert "served credentials" in log and "team/tools" in log
    for secret in (token, document["SecretAccessKey"], document["Token"]):
        assert secret not in log


async def test_answers_are_kept_per_token(running: Running) -> None:
    _pod(running, "team", "tools")
    token = await running.token_when_cached("team", "tools")
    first = await running.ask(token)
    before = await running.rpcs()
    answers = await asyncio.gather(*(running.ask(token) for _ in range(20)))
    assert all(answer == first for answer in answers)
    assert await running.rpcs() == before, "a cached token's answer asked a server again"
    # another token of the same pod is another key: asked once, then kept too
    other = running.stack.kube.request_token("team", "tools")
    answers = await asyncio.gather(*(running.ask(other) for _ in range(5)))
    assert {status for status, _ in answers} == {200}
    assert await running.rpcs() == before + 1, "concurrent asks of one token made several RPCs"


async def test_malformed_headers_are_the_pods_mistake(running: Running) -> None:
    cases = {
        None: b"missing Authorization header",
        "": b"empty Authorization header",
        "junk": b"not a service-account token",
        "Bearer a.b.c": b"not a service-account token",
    }
    for header, reason in cases.items():
        status, body = await running.ask(header)
        assert (status, reason in body, body.count(b"\n")) == (400, True, 1), (header, body)


async def test_tokens_the_api_server_does_not_vouch_for_get_401(running: Running) -> None:
    _pod(running, "team", "tools")
    await running.token_when_cached("team", "tools")
    kube = running.stack.kube
    refused = {
        "a forged JWT": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
        "another audience": kube.request_token("team", "tools", audiences=("sts.amazonaws.com",)),
        "expired": kube.request_token("team", "tools", expiration=600,
                                      issued_at=time.time() - 3600),
    }
    for case, token in refused.items():
        status, body = await running.ask(token)
        assert status == 401, (case, body)
        assert body.startswith(b"GetTokenCredentials: the kiam server refused the token ("), body
        assert body.count(b"\n") == 1


async def test_a_deleted_pods_token_is_refused(running: Running) -> None:
    _pod(running, "team", "tools")
    token = await running.token_when_cached("team", "tools")
    kube = running.stack.kube
    unused = kube.request_token("team", "tools")
    assert (await running.ask(token))[0] == 200
    kube.delete_pod("team", "tools")
    kube.finalise_pod("team", "tools")
    for _ in range(100):
        status, body = await running.ask(unused)
        if status == 401:
            break
        await asyncio.sleep(0.05)
    # the API server's review or the server's pod cache, whichever notices first
    assert status == 401, body
    assert b"has been deleted" in body or b"is not running" in body, body


async def test_the_policy_refuses_with_403_and_an_event(running: Running) -> None:
    _pod(running, "locked", "tools")
    status, body = await running.ask(await running.token_when_cached("locked", "tools"))
    assert status == 403, body
    assert b"namespace locked has no iam.amazonaws.com/permitted annotation" in body
    for _ in range(100):
        if running.stack.kube.events("locked", reason="KiamRoleForbidden"):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("no KiamRoleForbidden Event")
    _pod(running, "team", "plain", role="")
    status, body = await running.ask(await running.token_when_cached("team", "plain"))
    assert (status, b"has no iam.amazonaws.com/role annotation" in body) == (403, True), body


async def test_only_the_credentials_path_and_reads_are_served(running: Running) -> None:
    base = running.url.removesuffix("/v1/credentials")
    for path in ("/", "/latest/meta-data/iam/security-credentials/", "/v1/credentials/x",
                 "/v1//credentials", "/V1/credentials", "/ping"):
        async with running.session.get(base + path) as response:
            assert response.status == 404, path
    async with running.session.post(running.url, headers={"Authorization": "a.b.c"}) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"
