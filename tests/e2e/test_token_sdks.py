"""Token credentials with real AWS SDKs (docs/token-credentials.md): a hostNetwork pod (a
process in the node's namespace) and an opted-in pod get their roles from the agent's
container credentials endpoint on its real addresses, 169.254.170.23:80 and
[fd00:ec2::23]:80, on the interface the agent makes in the node namespace.

Each pod is created in the emulator as the webhook (:func:`kiam.webhook.mutation.mutate`)
patches it; the SDKs get the two variables the patch gives its container, the token file
holding a token the emulator's TokenRequest bound to that pod. ``AWS_EC2_METADATA_DISABLED``
is set too, so the metadata path cannot be what answered. Tests run in file order; the
last stops the agent and checks the interface is gone.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from kiam.webhook.mutation import (
    OPT_IN_ANNOTATION,
    TOKEN_FILE_VARIABLE,
    URI_VARIABLE,
    Patch,
    TokenSettings,
    mutate,
)
from kiam_testbed import netns
from kiam_testbed.commands import ACCOUNT
from kiam_testbed.sdk_clients import (
    awscli_command,
    boto3_command,
    ensure_js_sdk,
    js_command,
)
from kiam_testbed.stack import Stack
from tests.e2e.conftest import node_stack, run_in_pod

pytestmark = pytest.mark.netns

APPS = "apps"
LOCKED = "locked"
METRICS = "127.0.0.1:9621"
ENDPOINT_V4 = "169.254.170.23"
ENDPOINT_V6 = "fd00:ec2::23"
INTERFACE = "kiam0"

# the probe a pod runs by hand: GET the URL with the token file's contents (if any)
_PROBE = """
import json, sys, urllib.error, urllib.request
url, path = sys.argv[1], sys.argv[2]
headers = {"Authorization": open(path).read()} if path else {}
try:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
doc = {"status": status, "body": body.decode(errors="replace")}
print(json.dumps(doc))
"""


@dataclass(frozen=True, kw_only=True)
class TokenPod:
    """A pod as the webhook patched it, and where the process in it runs."""

    namespace: str
    name: str
    role: str
    where: netns.PodNetns
    env: dict[str, str]
    """The webhook's two variables (the token file's path moved into the test's files)."""
    token_file: Path


@dataclass(frozen=True, kw_only=True)
class System:
    bed: netns.Bed
    stack: Stack
    homes: Path
    pods: dict[str, TokenPod]

    def answered(self, handler: str) -> float:
        status, text = self.stack.http("GET", f"http://{METRICS}/metrics")
        assert status == 200, text
        total = 0.0
        for line in text.splitlines():
            if (line.startswith("kiam_metadata_responses_total{") and 'code="200"' in line
                    and f'handler="{handler}"' in line):
                total += float(line.split()[-1])
        return total

    def probe(self, where: netns.PodNetns, token_file: Path | None, *,
              url: str = f"http://{ENDPOINT_V4}/v1/credentials") -> dict[str, Any]:
        run = run_in_pod(where, [sys.executable, "-c", _PROBE, url, str(token_file or "")],
                         home=self.homes / "probe")
        doc: dict[str, Any] = json.loads(run.stdout)
        return doc


def _webhook_pod(stack: Stack, *, namespace: str, name: str, role: str, ip: str,
                 host_network: bool, opt_in: bool) -> tuple[dict[str, str], str]:
    """Create the pod as the webhook patches it; its container's webhook variables and a
    token bound to it."""
    annotations = {"iam.amazonaws.com/role": role}
    if opt_in:
        annotations[OPT_IN_ANNOTATION] = "true"
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"nodeName": "node-1", "hostNetwork": host_network,
                 "containers": [{"name": "app", "image": "app:1"}]},
    }
    patch = mutate(pod, TokenSettings())
    assert isinstance(patch, Patch), patch
    patched = jsonpatch.apply_patch(pod, patch.operations)
    stack.kube.create("pods", patched, namespace=namespace)
    stack.kube.set_pod_status(namespace, name, phase="Running", pod_ip=ip)
    env = {item["name"]: item["value"] for item in patched["spec"]["containers"][0]["env"]}
    return env, str(stack.kube.request_token(namespace, name))


@pytest.fixture(scope="module")
def system(bed: netns.Bed, workdir: Path) -> Iterator[System]:
    stack = node_stack(bed, workdir)
    homes = workdir / "homes"
    try:
        stack.start_standins()
        stack.make_certs()
        stack.create_namespace(APPS, permitted=f"arn:aws:iam::{ACCOUNT}:role/app-.*")
        stack.create_namespace(LOCKED, permitted=f"arn:aws:iam::{ACCOUNT}:role/only-this")
        for namespace in (APPS, LOCKED):
            stack.kube.create_service_account(namespace)
        node = netns.PodNetns(name=bed.node, ip=bed.bridge_ip)
        specs = {
            # key: (namespace, name, role, where, hostNetwork)
            "host": (APPS, "host-tools", "app-host", node, True),
            "opted": (APPS, "opted-app", "app-opted", bed.pods[0], False),
            "denied": (LOCKED, "denied-app", "app-secret", bed.pods[2], False),
        }
        pods: dict[str, TokenPod] = {}
        for key, (namespace, name, role, where, host_network) in specs.items():
            env, token = _webhook_pod(stack, namespace=namespace, name=name, role=role,
                                      ip=where.ip, host_network=host_network,
                                      opt_in=not host_network)
            token_file = workdir / "tokens" / key
            token_file.parent.mkdir(parents=True, exist_ok=True)
            token_file.write_text(token)
            env[TOKEN_FILE_VARIABLE] = str(token_file)
            env["AWS_EC2_METADATA_DISABLED"] = "true"
            pods[key] = TokenPod(namespace=namespace, name=name, role=role, where=where,
                                 env=env, token_file=token_file)
        # a pod on the metadata path, whose address another pod's token is used from
        stack.create_pod(APPS, "ip-app", ip=bed.pods[1].ip, role="app-ip")
        stack.start_server()
        stack.start_agent(extra=["--prometheus-listen-addr", METRICS, "--token-credentials"])
        stack.wait_agent_ready()
        system = System(bed=bed, stack=stack, homes=homes, pods=pods)
        _check_endpoint_is_ours(system)
        yield system
    finally:
        stack.close()


def _check_endpoint_is_ours(system: System) -> None:
    """Before anything is sent to the link-local addresses: they are on the interface the
    agent made in the bed's node namespace, and a pod's route to them leads there."""
    shown = netns.run(system.bed.node_argv(["ip", "-o", "addr", "show", "dev", INTERFACE]))
    assert f"inet {ENDPOINT_V4}/32" in shown and f"inet6 {ENDPOINT_V6}/128" in shown, shown
    link = netns.run(system.bed.node_argv(["ip", "-o", "link", "show", "dev", INTERFACE]))
    assert "alias kiam-token-credentials" in link, link
    for pod in system.bed.pods:
        route = netns.run(pod.argv(["ip", "route", "get", ENDPOINT_V4]))
        assert f"via {system.bed.bridge_ip}" in route, route


def _assumed(role: str) -> str:
    return f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/"


SDKS = ["boto3", "cli", "js"]


def _sdk_command(sdk: str, sts_url: str) -> list[str]:
    if sdk == "boto3":
        return boto3_command(sts_url)
    if sdk == "cli":
        return awscli_command(sts_url)
    return js_command(ensure_js_sdk(), sts_url)


@pytest.mark.parametrize("key", ["host", "opted"], ids=["hostNetwork", "opted-in"])
@pytest.mark.parametrize("sdk", SDKS)
def test_the_sdks_get_the_pods_role_by_token(system: System, key: str, sdk: str) -> None:
    pod = system.pods[key]
    before = system.answered("containerCredentials")
    run = run_in_pod(pod.where, _sdk_command(sdk, system.stack.sts_url),
                     home=system.homes / f"{key}-{sdk}", env=pod.env)
    result = run.result
    assert result.ok, run.stderr or result.error
    assert result.arn.startswith(_assumed(pod.role)), result.arn
    assert system.answered("containerCredentials") > before, "not answered by the endpoint"


def test_the_ipv6_address_answers_too(system: System) -> None:
    pod = system.pods["host"]
    env = {**pod.env, URI_VARIABLE: f"http://[{ENDPOINT_V6}]/v1/credentials"}
    run = run_in_pod(pod.where, boto3_command(system.stack.sts_url),
                     home=system.homes / "v6", env=env)
    assert run.result.ok, run.stderr or run.result.error
    assert run.result.arn.startswith(_assumed(pod.role)), run.result.arn


def test_the_token_not_the_address_decides(system: System) -> None:
    """The opted-in pod's token, used from the address of a pod on the metadata path,
    gets the opted-in pod's role (docs/SECURITY.md)."""
    opted = system.pods["opted"]
    run = run_in_pod(system.bed.pods[1], boto3_command(system.stack.sts_url),
                     home=system.homes / "moved", env=opted.env)
    assert run.result.ok, run.stderr or run.result.error
    assert run.result.arn.startswith(_assumed("app-opted")), run.result.arn


def test_refusals_have_their_status(system: System) -> None:
    where = system.bed.pods[1]
    assert system.probe(where, None)["status"] == 400
    junk = system.homes / "junk-token"
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_text("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl")
    refused = system.probe(where, junk)
    assert refused["status"] == 401, refused
    denied = system.probe(system.pods["denied"].where, system.pods["denied"].token_file)
    assert denied["status"] == 403, denied
    assert "namespace locked" in denied["body"], denied


def test_stopping_the_agent_removes_its_interface(system: System) -> None:
    code = system.stack.stop("agent")
    assert code == 0, system.stack.processes["agent"].diagnostics()
    links = netns.run(system.bed.node_argv(["ip", "-o", "link", "show"]))
    assert INTERFACE not in links, links
