"""``kiam explain`` as a child process against the Kubernetes emulator and the STS
stand-in: every verdict, its exit code, the fix it prints, and the server's wording."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kiam.server.service import CREDENTIAL_ERROR, ROLE_FORBIDDEN
from kiam_testbed.commands import ROLE_BASE_ARN as BASE_ARN
from kiam_testbed.commands import aws_test_env, kiam_command
from kiam_testbed.kube import KubeEmulator
from kiam_testbed.sts import StsStandIn

ROLE = "iam.amazonaws.com/role"
PERMITTED = "iam.amazonaws.com/permitted"
UNUSED_STS = "http://127.0.0.1:9"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def step(self, name: str) -> dict[str, Any]:
        steps = {s["step"]: s for s in self.json()["steps"]}
        assert name in steps, steps
        return steps[name]  # type: ignore[no-any-return]


@dataclass
class Bed:
    kube: KubeEmulator
    kubeconfig: Path

    async def explain(self, *args: str, sts_url: str = UNUSED_STS) -> Result:
        command = kiam_command("explain", "--kubeconfig", str(self.kubeconfig),
                               "--role-base-arn", BASE_ARN, "--sts-endpoint", sts_url, *args)
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=aws_test_env())
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    async with KubeEmulator() as kube:
        kube.create_namespace("team", annotations={PERMITTED: BASE_ARN + "team-.*"})
        yield Bed(kube, kube.write_kubeconfig(tmp_path / "kubeconfig"))


async def test_a_permitted_pod_exits_0_with_its_role_and_session(bed: Bed) -> None:
    bed.kube.create_pod("team", "web", ip="10.0.0.5", annotations={
        ROLE: "team-web", "iam.amazonaws.com/session-name": "web-1"})
    text = await bed.explain("team/web")
    assert text.code == 0, text
    assert f"would get credentials for {BASE_ARN}team-web" in text.out
    result = await bed.explain("team/web", "--output", "json")
    assert result.code == 0
    doc = result.json()
    assert doc["credentials"] is True and doc["role_arn"] == BASE_ARN + "team-web"
    assert result.step("owner of 10.0.0.5")["verdict"] == "ok"
    assert result.step("session name")["detail"] == "kiam-web-1"
    assert result.step("namespace")["verdict"] == "ok"
    assert all(s["verdict"] != "fail" for s in doc["steps"])


async def test_by_ip_explains_the_pod_the_agent_would_be_answered_for(bed: Bed) -> None:
    bed.kube.create_pod("team", "web", ip="10.0.0.5", annotations={ROLE: "team-web"})
    result = await bed.explain("--ip", "10.0.0.5", "--output", "json")
    assert result.code == 0, result
    assert result.json()["pod"] == "team/web"
    nobody = await bed.explain("--ip", "10.0.0.99", "--output", "json")
    assert nobody.code == 1
    assert "no running pod has IP 10.0.0.99" in nobody.step("IP owner")["detail"]


async def test_no_such_pod(bed: Bed) -> None:
    result = await bed.explain("team/ghost")
    assert result.code == 1, result
    assert "pod team/ghost not found" in result.out
    assert "kubectl get pods -n team" in result.out


async def test_a_finished_pod(bed: Bed) -> None:
    bed.kube.create_pod("team", "job", ip="10.0.0.6", phase="Succeeded",
                        annotations={ROLE: "team-web"})
    result = await bed.explain("team/job", "--output", "json")
    assert result.code == 1
    assert result.step("phase")["verdict"] == "fail"
    assert "finished pod never owns an IP" in result.step("phase")["detail"]


async def test_a_host_network_pod(bed: Bed) -> None:
    bed.kube.create_pod("team", "node-agent", ip="192.168.1.10", host_network=True,
                        annotations={ROLE: "team-web"})
    result = await bed.explain("team/node-agent", "--output", "json")
    assert result.code == 1
    step = result.step("hostNetwork")
    assert step["verdict"] == "fail" and "docs/token-credentials.md" in step["fix"]
    assert "agent: 404 no running pod has IP 192.168.1.10" in result.json()["server_says"]


async def test_no_annotation(bed: Bed) -> None:
    bed.kube.create_pod("team", "plain", ip="10.0.0.7")
    result = await bed.explain("team/plain", "--output", "json")
    assert result.code == 1
    step = result.step("annotation")
    assert step["verdict"] == "fail"
    assert f"kubectl annotate pod -n team plain {ROLE}=ROLE" in step["fix"]
    reason = f"pod team/plain has no {ROLE} annotation"
    assert result.json()["reason"] == reason
    says = result.json()["server_says"]
    assert f"log: role forbidden: {reason}" in says
    assert f"event: Warning {ROLE_FORBIDDEN} on pod team/plain: {reason}" in says


async def test_an_invalid_role_arn(bed: Bed) -> None:
    bed.kube.create_pod("team", "typo", ip="10.0.0.8", annotations={ROLE: "arn:aws:iam::1:role/x"})
    result = await bed.explain("team/typo", "--output", "json")
    assert result.code == 1
    step = result.step("role ARN")
    assert step["verdict"] == "fail" and "invalid role ARN" in step["detail"]


async def test_a_namespace_without_expression(bed: Bed) -> None:
    bed.kube.create_namespace("bare")
    bed.kube.create_pod("bare", "web", ip="10.0.0.9", annotations={ROLE: "team-web"},
                        ensure_namespace=False)
    result = await bed.explain("bare/web", "--output", "json")
    assert result.code == 1
    step = result.step("namespace")
    assert step["verdict"] == "fail"
    assert f"namespace bare has no {PERMITTED} annotation" in step["detail"]
    assert f"kubectl annotate namespace bare --overwrite {PERMITTED}=" in step["fix"]


async def test_an_expression_that_does_not_match_strict(bed: Bed) -> None:
    bed.kube.create_namespace("strict", annotations={PERMITTED: "team-web"})
    bed.kube.create_pod("strict", "web", ip="10.0.0.10", annotations={ROLE: "team-web"},
                        ensure_namespace=False)
    result = await bed.explain("strict/web", "--output", "json")
    assert result.code == 1
    step = result.step("namespace")
    assert step["verdict"] == "fail" and "strict: the whole ARN" in step["detail"]
    assert "matches only part of the ARN" in step["fix"]
    # loose matching finds the expression inside the ARN: permitted
    loose = await bed.explain("strict/web", "--disable-strict-namespace-regexp")
    assert loose.code == 0, loose


async def test_an_expression_that_does_not_match_loose(bed: Bed) -> None:
    bed.kube.create_pod("team", "admin", ip="10.0.0.11", annotations={ROLE: "admin"})
    result = await bed.explain("team/admin", "--disable-strict-namespace-regexp",
                               "--output", "json")
    assert result.code == 1
    step = result.step("namespace")
    assert step["verdict"] == "fail" and "not strict" in step["detail"]
    assert f"does not permit role {BASE_ARN}admin" in step["detail"]


async def test_an_ambiguous_ip(bed: Bed) -> None:
    bed.kube.create_pod("team", "old", ip="10.0.0.12", annotations={ROLE: "team-a"})
    bed.kube.create_pod("team", "new", ip="10.0.0.12", annotations={ROLE: "team-b"})
    result = await bed.explain("team/new", "--output", "json")
    assert result.code == 1
    step = result.step("owner of 10.0.0.12")
    assert step["verdict"] == "fail"
    assert "claimed by live pods with different roles: team/new, team/old" in step["detail"]
    by_ip = await bed.explain("--ip", "10.0.0.12", "--output", "json")
    assert by_ip.code == 1
    assert any(line.startswith("log: ambiguous pod IP: ") for line in by_ip.json()["server_says"])


async def test_a_finished_pod_beside_the_owner_is_listed_not_blamed(bed: Bed) -> None:
    bed.kube.create_pod("team", "done", ip="10.0.0.13", phase="Failed",
                        annotations={ROLE: "team-a"})
    bed.kube.create_pod("team", "live", ip="10.0.0.13", annotations={ROLE: "team-b"})
    result = await bed.explain("team/live", "--output", "json")
    assert result.code == 0, result
    assert "team/done (Failed, finished)" in result.step("owner of 10.0.0.13")["detail"]


async def test_assume_issues_credentials_without_showing_secrets(bed: Bed) -> None:
    bed.kube.create_pod("team", "web", ip="10.0.0.5", annotations={ROLE: "team-web"})
    async with StsStandIn() as sts:
        result = await bed.explain("team/web", "--assume", sts_url=sts.url)
        assert sts.successful_assume_role_calls(BASE_ARN + "team-web") == 1
    assert result.code == 0, result
    assert "AssumeRole" in result.out and "issued access key" in result.out
    assert "SessionToken" not in result.out and "secret key and session token not shown" in (
        result.out)


async def test_assume_access_denied_says_what_the_trust_policy_needs(bed: Bed) -> None:
    bed.kube.create_pod("team", "web", ip="10.0.0.5", annotations={ROLE: "team-web"})
    async with StsStandIn() as sts:
        sts.queue_fault("access-denied")
        result = await bed.explain("team/web", "--assume", "--output", "json",
                                   sts_url=sts.url)
    assert result.code == 1, result
    step = result.step("AssumeRole")
    assert step["verdict"] == "fail" and "AccessDenied" in step["detail"]
    assert "docs/IAM.md" in step["fix"] and '"Action": "sts:AssumeRole"' in step["fix"]
    says = result.json()["server_says"]
    message = f"error fetching credentials for {BASE_ARN}team-web: "
    assert any(line.startswith(f"event: Warning {CREDENTIAL_ERROR} on pod team/web: {message}")
               for line in says)


async def test_usage_and_connection_errors_exit_2(bed: Bed, tmp_path: Path) -> None:
    both = await bed.explain("team/web", "--ip", "10.0.0.5")
    assert both.code == 2 and "exactly one" in both.err
    bad = await bed.explain("web")
    assert bad.code == 2 and "NAMESPACE/POD" in bad.err
    config = bed.kube.write_kubeconfig(tmp_path / "gone")
    await bed.kube.stop()
    gone = await Bed(bed.kube, config).explain("team/web")
    assert gone.code == 2 and "cannot list pods" in gone.err
