"""Real AWS SDKs in pod network namespaces get their pod's role through kiam, and only it.

The Kubernetes emulator, the STS stand-in (on the bridge address, so pods can call it),
``kiam server`` and ``kiam agent --iptables`` run as processes in the bed's node
namespace, with certificates from ``kiam certs``. The pods reach 169.254.169.254:80,
which the agent's DNAT rule in the node namespace sends to the agent. The tests run in
file order; the last one stops the agent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiam_testbed import netns
from kiam_testbed.commands import ACCOUNT
from kiam_testbed.sdk_clients import (
    awscli_command,
    boto3_command,
    ensure_js_sdk,
    imds_probe_command,
    js_command,
)
from kiam_testbed.stack import Stack
from tests.e2e.conftest import node_stack, run_in_pod

pytestmark = pytest.mark.netns

METRICS = "127.0.0.1:9620"
APPS = "apps"
LOCKED = "locked"


@dataclass(frozen=True, kw_only=True)
class PodSpec:
    namespace: str
    name: str
    role: str = ""
    session_name: str = ""


# index into bed.pods -> the pod the emulator knows at that pod's IP
PODS = {
    "boto3": PodSpec(namespace=APPS, name="boto3-app", role="app-boto3"),
    "cli": PodSpec(namespace=APPS, name="cli-app", role="app-cli", session_name="cli"),
    "js": PodSpec(namespace=APPS, name="js-app", role="app-js", session_name="js"),
    "denied": PodSpec(namespace=LOCKED, name="denied-app", role="app-secret"),
    "plain": PodSpec(namespace=APPS, name="plain-app"),
}


@dataclass(frozen=True, kw_only=True)
class System:
    bed: netns.Bed
    stack: Stack
    homes: Path

    def pod(self, key: str) -> netns.PodNetns:
        return self.bed.pods[list(PODS).index(key)]

    @property
    def sts_url(self) -> str:
        return self.stack.sts_url

    def answered(self, handler: str) -> float:
        """How many 200 answers the agent's ``handler`` gave (its Prometheus counter)."""
        status, text = self.stack.http("GET", f"http://{METRICS}/metrics")
        assert status == 200, text
        for line in text.splitlines():
            if (
                line.startswith("kiam_metadata_responses_total{")
                and 'code="200"' in line
                and f'handler="{handler}"' in line
            ):
                return float(line.split()[-1])
        return 0.0


@pytest.fixture(scope="module")
def system(bed: netns.Bed, workdir: Path) -> Iterator[System]:
    stack = node_stack(bed, workdir)
    try:
        stack.start_standins()
        stack.make_certs()
        stack.create_namespace(APPS, permitted=f"arn:aws:iam::{ACCOUNT}:role/app-.*")
        stack.create_namespace(LOCKED, permitted=f"arn:aws:iam::{ACCOUNT}:role/only-this")
        for key, spec in PODS.items():
            stack.create_pod(
                spec.namespace,
                spec.name,
                ip=bed.pods[list(PODS).index(key)].ip,
                role=spec.role,
                session_name=spec.session_name,
            )
        stack.start_server()
        stack.start_agent(extra=["--prometheus-listen-addr", METRICS])
        stack.wait_agent_ready()
        system = System(bed=bed, stack=stack, homes=workdir / "homes")
        _warm_up(system)
        yield system
    finally:
        stack.close()


def _warm_up(system: System) -> None:
    """Ask once per permitted pod, with a patient client, so the credentials are cached.

    The SDKs give IMDS one second; on a busy CI machine the first STS call behind a cold
    cache may take longer. What these tests check is who gets which credentials, not how
    fast the first ones arrive (the benchmarks measure that)."""
    for key, spec in PODS.items():
        if spec.role and spec.namespace == APPS:
            run_in_pod(system.pod(key), imds_probe_command("v1"), home=system.homes / "warm")


def caller_arn(role: str, session: str) -> str:
    return f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/kiam-{session}"


def test_the_dnat_rule_is_in_the_node_namespace(system: System) -> None:
    rules = netns.run(system.bed.node_argv(["iptables", "-w", "-t", "nat", "-S", "PREROUTING"]))
    expected = f"--to-destination {system.bed.bridge_ip}:{system.stack.placement.agent_port}"
    assert "169.254.169.254" in rules
    assert expected in rules
    assert f"-i {system.bed.bridge}" in rules


def test_boto3_default_chain_gets_the_pods_role(system: System) -> None:
    tokens = system.answered("token")
    run = run_in_pod(system.pod("boto3"), boto3_command(system.sts_url), home=system.homes / "a")
    result = run.result
    assert result.ok, run.stderr or result.error
    assert system.answered("token") > tokens, "boto3 did not use IMDSv2"
    assert result.arn == caller_arn("app-boto3", "kiam")
    assert result.access_key_id


def test_aws_cli_gets_the_pods_role(system: System) -> None:
    tokens = system.answered("token")
    run = run_in_pod(system.pod("cli"), awscli_command(system.sts_url), home=system.homes / "b")
    result = run.result
    assert result.ok, run.stderr or result.error
    assert system.answered("token") > tokens, "the AWS CLI did not use IMDSv2"
    assert result.arn == caller_arn("app-cli", "cli")


def test_javascript_sdk_v3_gets_the_pods_role(system: System) -> None:
    js_dir = ensure_js_sdk()
    tokens = system.answered("token")
    run = run_in_pod(system.pod("js"), js_command(js_dir, system.sts_url), home=system.homes / "c")
    result = run.result
    assert result.ok, run.stderr or result.error
    assert system.answered("token") > tokens, "the JavaScript SDK did not use IMDSv2"
    assert result.arn == caller_arn("app-js", "js")
    assert result.access_key_id


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_imds_v1_and_v2_by_hand(system: System, version: str) -> None:
    run = run_in_pod(system.pod("boto3"), imds_probe_command(version), home=system.homes / "d")
    doc = json.loads(run.stdout)
    assert doc.get("role") == "app-boto3", doc
    assert doc["credentials_status"] == 200
    assert doc["code"] == "Success"
    assert doc["access_key_id"]
    if version == "v2":
        assert doc["token_status"] == 200


def test_no_pod_receives_another_pods_credentials(system: System) -> None:
    seen: dict[str, tuple[str, str]] = {}
    for key in ("boto3", "cli", "js"):
        run = run_in_pod(system.pod(key), imds_probe_command("v2"), home=system.homes / key)
        doc = json.loads(run.stdout)
        assert doc.get("role") == PODS[key].role, doc
        seen[key] = (doc["role"], doc["access_key_id"])
    key_ids = [key_id for _, key_id in seen.values()]
    assert len(set(key_ids)) == len(key_ids), seen
    # The SDK in each pod got the same key its own pod's probe saw, and no other pod's.
    boto = run_in_pod(system.pod("boto3"), boto3_command(system.sts_url), home=system.homes / "e")
    assert boto.result.access_key_id == seen["boto3"][1]
    js = run_in_pod(
        system.pod("js"), js_command(ensure_js_sdk(), system.sts_url), home=system.homes / "f"
    )
    assert js.result.access_key_id == seen["js"][1]


@pytest.mark.parametrize("other", ["cli", "js"])
def test_a_pod_asking_for_another_pods_role_is_refused(system: System, other: str) -> None:
    wanted = PODS[other].role
    probe = run_in_pod(
        system.pod("boto3"), imds_probe_command("v2", ask_for=wanted), home=system.homes / "i"
    )
    doc = json.loads(probe.stdout)
    assert doc.get("role") == "app-boto3", doc
    assert doc["credentials_status"] == 403, doc
    assert "access_key_id" not in doc
    assert wanted in doc.get("error", "") or "app-boto3" in doc.get("error", ""), doc


def test_a_forbidden_role_gets_nothing_and_an_event(system: System) -> None:
    pod = system.pod("denied")
    run = run_in_pod(pod, boto3_command(system.sts_url), home=system.homes / "g")
    assert not run.result.ok
    assert not run.result.access_key_id
    probe = json.loads(run_in_pod(pod, imds_probe_command("v2"), home=system.homes / "g").stdout)
    assert "access_key_id" not in probe
    assert 403 in (probe.get("role_status"), probe.get("credentials_status")), probe

    deadline = time.monotonic() + 15
    events: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        events = [
            e
            for e in system.stack.kube.events(LOCKED)
            if e.get("reason") == "KiamRoleForbidden"
            and isinstance(e.get("involvedObject"), dict)
            and e["involvedObject"].get("name") == "denied-app"  # type: ignore[union-attr]
        ]
        if events:
            break
        time.sleep(0.2)
    assert events, "no KiamRoleForbidden event was recorded for the denied pod"
    assert events[0].get("type") == "Warning"


def test_a_pod_without_a_role_gets_nothing(system: System) -> None:
    pod = system.pod("plain")
    run = run_in_pod(pod, boto3_command(system.sts_url), home=system.homes / "h")
    assert not run.result.ok
    probe = json.loads(run_in_pod(pod, imds_probe_command("v1"), home=system.homes / "h").stdout)
    assert probe["role_status"] == 404, probe
    assert "access_key_id" not in probe


def test_stopping_the_agent_removes_the_dnat_rule(system: System) -> None:
    code = system.stack.stop("agent")
    assert code == 0, system.stack.processes["agent"].diagnostics()
    rules = netns.run(system.bed.node_argv(["iptables", "-w", "-t", "nat", "-S", "PREROUTING"]))
    assert "169.254.169.254" not in rules
    assert "DNAT" not in rules
