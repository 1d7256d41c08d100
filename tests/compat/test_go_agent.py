"""A Go Kiam agent in front of our real ``kiam server`` (the rolling update's state
"Go agents, new servers"): the Go-shaped agent of go_agent.py over mTLS, counting its
RPCs, while the server's own metrics count them too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from kiam.certs import CertPaths
from kiam_testbed.commands import ROLE_BASE_ARN as BASE_ARN
from kiam_testbed.processes import ServerStack, server_stack
from tests.compat.go_agent import GoAnswer, GoShapedAgent

ROLE = "iam.amazonaws.com/role"
PERMITTED = "iam.amazonaws.com/permitted"


@pytest.fixture
async def stack(tmp_path: Path, certs: CertPaths) -> AsyncIterator[ServerStack]:
    args = ("--prometheus-listen-addr", "127.0.0.1:0")
    namespaces = {
        "team": BASE_ARN + "reader",
        "locked": BASE_ARN + "other",
        "paths": BASE_ARN + "kiam/.*",
    }
    async with server_stack(tmp_path, certs=certs, namespaces=namespaces, server_args=args) as s:
        s.kube.create_pod("team", "web", ip="10.3.0.5", annotations={ROLE: "reader"})
        s.kube.create_pod("locked", "api", ip="10.3.0.6", annotations={ROLE: "reader"})
        s.kube.create_pod("paths", "job", ip="10.3.0.7", annotations={ROLE: "kiam/pathrole"})
        yield s


async def server_counters(stack: ServerStack) -> dict[str, float]:
    """The server's ``grpc_server_*_total`` samples for GetPodCredentials, by name."""
    line = await stack.server.wait_for_log("serving metrics on")
    address = line.rsplit("serving metrics on", 1)[1].split()[0].strip('"')
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{address}/metrics") as response,
    ):
        text = await response.text()
    counters = {}
    for sample in text.splitlines():
        name, _, value = sample.rpartition(" ")
        if name.startswith("grpc_server_") and "_total{" in name and "GetPodCredentials" in name:
            counters[name] = float(value)
    return counters


async def settled_counters(stack: ServerStack, handled: int) -> dict[str, float]:
    """The counters once ``handled`` calls are counted (grpc.aio's abort sends the status
    a moment before the handler's frame unwinds) and a while after, for late retries."""
    for _ in range(100):
        counters = await server_counters(stack)
        total = sum(v for k, v in counters.items() if k.startswith("grpc_server_handled"))
        if total >= handled:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    return await server_counters(stack)


@pytest.mark.parametrize(
    ("ip", "role", "why"),
    [
        ("10.3.0.5", "admin", "is annotated with role"),  # not the pod's role
        ("10.3.0.6", "reader", "does not permit"),  # the namespace forbids it
    ],
)
async def test_a_refusal_is_final_for_a_go_agent_after_one_rpc(
    stack: ServerStack, ip: str, role: str, why: str
) -> None:
    agent = GoShapedAgent(stack.stub())
    started = time.monotonic()
    answer = await agent.credentials(ip, role)
    elapsed = time.monotonic() - started
    # what Go Kiam's agent answers for ErrPolicyForbidden: at once, never retried
    assert (answer.status, answer.body) == (500, "error fetching credentials: forbidden by policy")
    assert elapsed < 1.0, elapsed
    assert agent.calls == ["GetPodCredentials"]
    counters = await settled_counters(stack, handled=1)
    labels = 'grpc_method="GetPodCredentials",grpc_service="kiam.KiamService",grpc_type="unary"'
    assert counters == {
        f"grpc_server_started_total{{{labels}}}": 1.0,
        f'grpc_server_handled_total{{grpc_code="PermissionDenied",{labels}}}': 1.0,
    }
    # the reason is still the server's to log, once
    assert stack.server.count_logs(f"role forbidden.*{why}") == 1, stack.server.logs


async def test_a_go_agent_lists_the_role_and_gets_credentials(stack: ServerStack) -> None:
    agent = GoShapedAgent(stack.stub())
    assert await agent.role_name("10.3.0.5") == GoAnswer(200, "reader")
    answer = await agent.credentials("10.3.0.5", "reader")
    assert answer.status == 200, answer.body
    document = orjson.loads(answer.body)
    assert document["Code"] == "Success"
    assert document["AccessKeyId"]
    assert agent.calls == ["GetPodRole", "GetPodCredentials"]


async def test_a_go_agent_is_served_a_path_role_by_its_name(stack: ServerStack) -> None:
    # our server answers GetPodRole with the role's name, as IMDS lists it (a Go server
    # answered the annotation); the SDK asks for that name, which our server accepts
    agent = GoShapedAgent(stack.stub())
    assert await agent.role_name("10.3.0.7") == GoAnswer(200, "pathrole")
    answer = await agent.credentials("10.3.0.7", "pathrole")
    assert answer.status == 200, answer.body
    assert stack.sts.assume_role_calls(BASE_ARN + "kiam/pathrole") >= 1


async def test_an_unknown_pod_is_no_pod_found_for_a_go_agent(stack: ServerStack) -> None:
    # Go's agent matches the message and, as it does for its own servers, retries
    # ErrPodNotFound while its context lasts (the pod may be starting)
    agent = GoShapedAgent(stack.stub(), patience=1.0)
    answer = await agent.credentials("10.3.9.9", "reader")
    assert answer.status == 500, answer.body
    assert agent.errors[0] == "no pod found"
    # the last attempt may run out of context before the server answers, as in Go
    late = "rpc error: code = DeadlineExceeded desc = Deadline Exceeded"
    assert set(agent.errors) <= {"no pod found", late}, agent.errors
    assert answer.body == f"error fetching credentials: {agent.errors[-1]}"
