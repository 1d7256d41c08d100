"""``kiam.KiamTokenService`` through the real ``kiam server`` process, against the
emulator's TokenReview and the STS stand-in (docs/token-credentials.md): the token names
the pod, hostNetwork or not; every refusal has its row and reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from kiam.certs import CertPaths
from kiam.wire import kiam_pb2, kiam_pb2_grpc, status
from kiam_testbed.commands import ROLE_BASE_ARN
from kiam_testbed.processes import ServerStack, server_stack

ROLE = "iam.amazonaws.com/role"


@pytest.fixture
async def stack(tmp_path: Path, certs: CertPaths) -> AsyncIterator[ServerStack]:
    async with server_stack(tmp_path, certs=certs, namespaces={
        "team": ROLE_BASE_ARN + "team-.*", "locked": ""}) as running:
        for namespace in ("team", "locked"):
            running.kube.create_service_account(namespace)
        yield running


def _stub(stack: ServerStack) -> kiam_pb2_grpc.KiamTokenServiceAsyncStub:
    return kiam_pb2_grpc.KiamTokenServiceStub(stack.channel())


async def _ask(stack: ServerStack, token: str) -> kiam_pb2.TokenCredentials:
    return await _stub(stack).GetTokenCredentials(
        kiam_pb2.GetTokenCredentialsRequest(token=token), timeout=5)


async def _refused(stack: ServerStack, token: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _ask(stack, token)
    return info.value.code(), status.reason(info.value)


async def _until_cached(stack: ServerStack, namespace: str, name: str) -> str:
    """A token for the pod once the server's pod cache has it."""
    token = stack.kube.request_token(namespace, name)
    for _ in range(100):
        try:
            await _ask(stack, token)
            return token
        except grpc.aio.AioRpcError as exc:
            if "is not running" not in status.reason(exc):
                return token
        await asyncio.sleep(0.05)
    return token


@pytest.mark.parametrize("host_network", [True, False], ids=["hostNetwork", "pod-network"])
async def test_the_token_names_the_pod_and_gets_its_role(
    stack: ServerStack, host_network: bool
) -> None:
    stack.kube.create_pod("team", "tools", ip="192.168.0.9" if host_network else "10.1.0.9",
                          host_network=host_network, annotations={ROLE: "team-tools"})
    token = await _until_cached(stack, "team", "tools")
    answer = await _ask(stack, token)
    assert (answer.role_arn, answer.pod_namespace, answer.pod_name) == (
        ROLE_BASE_ARN + "team-tools", "team", "tools")
    assert answer.credentials.access_key_id
    assert answer.credentials.code == "Success"
    log = "\n".join(stack.server.logs)
    assert answer.credentials.secret_access_key not in log
    assert answer.credentials.token not in log
    assert token not in log


async def test_tokens_the_api_server_does_not_vouch_for_are_refused(stack: ServerStack) -> None:
    stack.kube.create_pod("team", "web", ip="10.1.0.5", annotations={ROLE: "team-web"})
    assert await _refused(stack, "") == (grpc.StatusCode.UNAUTHENTICATED, "empty token")
    code, reason = await _refused(stack, "junk")
    assert (code, "invalid bearer token" in reason) == (grpc.StatusCode.UNAUTHENTICATED, True)
    other = stack.kube.request_token("team", "web", audiences=("sts.amazonaws.com",))
    code, reason = await _refused(stack, other)
    assert (code, "audiences" in reason) == (grpc.StatusCode.UNAUTHENTICATED, True)


async def test_a_deleted_pods_token_is_refused_at_once(stack: ServerStack) -> None:
    stack.kube.create_pod("team", "web", ip="10.1.0.5", annotations={ROLE: "team-web"})
    token = await _until_cached(stack, "team", "web")
    assert (await _ask(stack, token)).pod_name == "web"  # the review is now cached
    stack.kube.delete_pod("team", "web")
    stack.kube.finalise_pod("team", "web")
    for _ in range(100):
        try:
            await _ask(stack, token)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "is not running" in status.reason(exc)
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the deleted pod's token kept working")
    # the same name again is another pod: the old token does not come back to life
    stack.kube.create_pod("team", "web", ip="10.1.0.5", annotations={ROLE: "team-web"})
    await asyncio.sleep(0.3)
    code, _ = await _refused(stack, token)
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_the_namespace_rule_applies_with_its_event(stack: ServerStack) -> None:
    stack.kube.create_pod("locked", "web", ip="10.1.0.6", host_network=True,
                          annotations={ROLE: "team-web"})
    token = await _until_cached(stack, "locked", "web")
    code, reason = await _refused(stack, token)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "namespace locked has no iam.amazonaws.com/permitted annotation" in reason
    for _ in range(100):
        if stack.kube.events("locked", reason="KiamRoleForbidden"):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("no KiamRoleForbidden Event")
    stack.kube.create_pod("team", "plain", ip="10.1.0.7")
    code, reason = await _refused(stack, await _until_cached(stack, "team", "plain"))
    assert (code, "has no iam.amazonaws.com/role annotation" in reason) == (
        grpc.StatusCode.PERMISSION_DENIED, True)
