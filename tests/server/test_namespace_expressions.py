"""The namespace rule (docs/policy.md) through the real ``kiam server`` process: strict
expressions anchor every alternative and cannot be escaped by unbalanced groups."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from kiam.certs import CertPaths
from kiam.wire import kiam_pb2, status
from kiam_testbed.commands import ROLE_BASE_ARN as BASE_ARN
from kiam_testbed.processes import ServerStack, server_stack

ROLE = "iam.amazonaws.com/role"

NAMESPACES = {
    "escape": BASE_ARN + "a)|(zzz",
    "exact": BASE_ARN + "app",
    "group": BASE_ARN + "(app|web)",
    "alternation": f"{BASE_ARN}app|{BASE_ARN}db",
    "flags": "(?i)" + BASE_ARN.upper() + "APP",
}

# (namespace, pod's role, allowed)
CASES = [
    ("escape", "admin", False),
    ("escape", "zzz", False),
    ("escape", "a", False),
    ("exact", "app", True),
    ("exact", "app-admin", False),
    ("group", "web", True),
    ("group", "app", True),
    ("group", "webx", False),
    ("alternation", "app", True),
    ("alternation", "db", True),
    ("alternation", "app-admin", False),
    ("alternation", "x-db", False),
    ("flags", "app", True),
    ("flags", "apps", False),
]


@pytest.fixture
async def stack(tmp_path: Path, certs: CertPaths) -> AsyncIterator[ServerStack]:
    async with server_stack(tmp_path, certs=certs, namespaces=NAMESPACES) as s:
        yield s


async def test_strict_namespace_expressions(stack: ServerStack) -> None:
    pods = []
    for i, (namespace, role, allowed) in enumerate(CASES):
        ip = f"10.7.0.{10 + i}"
        stack.kube.create_pod(namespace, f"pod-{i}", ip=ip, annotations={ROLE: role})
        pods.append((namespace, role, allowed, ip))
    outcomes = {}
    for namespace, role, _allowed, ip in pods:
        request = kiam_pb2.GetPodCredentialsRequest(ip=ip, role=role)
        try:
            await stack.stub().GetPodCredentials(request, timeout=5.0)
        except aio.AioRpcError as exc:
            outcomes[(namespace, role)] = (exc.code(), status.reason(exc))
        else:
            outcomes[(namespace, role)] = (grpc.StatusCode.OK, "")
    for namespace, role, allowed, _ip in pods:
        code, details = outcomes[(namespace, role)]
        if allowed:
            assert code == grpc.StatusCode.OK, (namespace, role, details)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (namespace, role, code, details)
    # the reason beside "forbidden by policy" names the invalid expression
    for role in ("admin", "zzz", "a"):
        assert "invalid iam.amazonaws.com/permitted expression" in outcomes[("escape", role)][1]
    # a role no namespace permits never reached STS
    allowed_somewhere = {role for _ns, role, allowed, _ip in pods if allowed}
    for role in {role for _ns, role, _allowed, _ip in pods} - allowed_somewhere:
        assert stack.sts.assume_role_calls(BASE_ARN + role) == 0, role
    # the unbalanced expression is refused as invalid, and the Event says so
    await stack.kube.wait_for(
        lambda: any(
            e["involvedObject"]["namespace"] == "escape"
            for e in stack.kube.events(reason="KiamRoleForbidden")
        ),
        timeout=10,
    )
    messages = [
        e.get("message") or e.get("note") or ""
        for e in stack.kube.events(reason="KiamRoleForbidden")
        if e["involvedObject"]["namespace"] == "escape"
    ]
    assert messages and all(
        "invalid iam.amazonaws.com/permitted expression" in m for m in messages
    ), messages


async def test_an_external_id_sts_would_refuse_is_denied_with_an_event(stack: ServerStack) -> None:
    bad = "not valid"  # a space: STS would refuse every AssumeRole with it
    stack.kube.create_pod(
        "exact", "ext", ip="10.7.1.1",
        annotations={ROLE: "app", "iam.amazonaws.com/external-id": bad},
    )
    request = kiam_pb2.GetPodCredentialsRequest(ip="10.7.1.1", role="app")
    with pytest.raises(aio.AioRpcError) as refused:
        await stack.stub().GetPodCredentials(request, timeout=5.0)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    reason = status.reason(refused.value)
    assert "iam.amazonaws.com/external-id holds characters STS does not accept" in reason
    assert bad not in reason
    await stack.kube.wait_for(
        lambda: any(
            e["involvedObject"]["name"] == "ext"
            for e in stack.kube.events(reason="KiamRoleForbidden")
        ),
        timeout=10,
    )
    assert stack.sts.assume_role_calls(BASE_ARN + "app") == 0
