"""A real ``kubectl`` (Debian's kubernetes-client, or whichever is on PATH), a client no
one here wrote, drives the Kubernetes emulator: discovery, list, create, annotate, label,
delete, watch, and kiam's Warning Events with ``kubectl get events``."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiam_testbed.kube import KubeEmulator
from kiam_testbed.kube.resources import PODS

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl is not installed (as root, `make syspkgs` installs Debian's "
    "kubernetes-client)" if os.geteuid() == 0 else "kubectl is not installed, and only "
    "root can install it (apt-get install kubernetes-client)",
)

POD_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: demo
  annotations:
    iam.amazonaws.com/role: reader
spec:
  containers:
  - name: main
    image: registry.example/web:1
"""
NAMESPACE_YAML = """\
apiVersion: v1
kind: Namespace
metadata:
  name: demo
"""


@dataclass
class Kubectl:
    kube: KubeEmulator
    kubeconfig: Path
    cache: Path

    def argv(self, *args: str) -> list[str]:
        assert KUBECTL is not None
        return [KUBECTL, "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache),
                *args]

    async def __call__(self, *args: str, stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.argv(*args), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "HOME": str(self.cache)})
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), 60)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
        return out.decode()


@pytest.fixture
async def kubectl(tmp_path: Path) -> AsyncIterator[Kubectl]:
    async with KubeEmulator() as kube:
        yield Kubectl(kube, kube.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path / "cache")


async def test_short_names_and_lists(kubectl: Kubectl) -> None:
    kubectl.kube.create_namespace("team")
    kubectl.kube.create_pod("team", "web", ip="10.0.0.5")
    assert "team" in await kubectl("get", "ns")
    listed = await kubectl("get", "po", "-A")
    assert "web" in listed and "team" in listed
    resources = await kubectl("api-resources")
    for short in ("po", "ns", "ev", "sa"):
        assert f" {short} " in resources, resources


async def test_create_annotate_label_delete(kubectl: Kubectl) -> None:
    assert "namespace/demo created" in await kubectl("create", "-f", "-", stdin=NAMESPACE_YAML)
    # a typed call: protobuf from kubectl 1.32 on, JSON before
    assert "namespace/other created" in await kubectl("create", "namespace", "other")
    assert "serviceaccount/bot created" in await kubectl("create", "sa", "bot", "-n", "other")
    assert "bot" in await kubectl("get", "sa", "-n", "other")
    assert "pod/web created" in await kubectl("create", "-f", "-", stdin=POD_YAML)
    await kubectl("annotate", "pod", "web", "-n", "demo", "iam.amazonaws.com/role=writer",
                  "--overwrite")
    await kubectl("label", "pod", "web", "-n", "demo", "app=web")
    await kubectl("annotate", "namespace", "demo", "iam.amazonaws.com/permitted=.*")
    pod = kubectl.kube.get(PODS, "demo", "web")
    assert pod["metadata"]["annotations"]["iam.amazonaws.com/role"] == "writer"
    assert pod["metadata"]["labels"] == {"app": "web"}
    described = await kubectl("describe", "pod", "web", "-n", "demo")
    assert "iam.amazonaws.com/role: writer" in described
    await kubectl("delete", "pod", "web", "-n", "demo", "--wait=false")
    await kubectl("delete", "namespace", "demo", "--wait=false")
    assert "web" not in await kubectl("get", "pods", "-A")


async def test_watch_sees_changes(kubectl: Kubectl) -> None:
    kubectl.kube.create_namespace("team")
    kubectl.kube.create_pod("team", "web", ip="10.0.0.5")
    proc = await asyncio.create_subprocess_exec(
        *kubectl.argv("get", "pods", "-n", "team", "-w", "--request-timeout", "30s"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(kubectl.cache)})
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 30)  # the header
        assert b"NAME" in first
        assert b"web" in await asyncio.wait_for(proc.stdout.readline(), 30)
        kubectl.kube.create_pod("team", "api", ip="10.0.0.6")
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"api" in line
    finally:
        proc.kill()
        await proc.wait()


async def test_get_events_shows_kiam_warnings(kubectl: Kubectl) -> None:
    kubectl.kube.create_namespace("team")
    kubectl.kube.create_pod("team", "web", ip="10.0.0.5")
    # the Event kiam server posts (kiam.k8s.events), posted here through the same API
    from kiam.k8s.client import KubeClient
    from kiam.k8s.events import EventRecorder
    from kiam.k8s.model import pod_info_from_json

    client = await KubeClient.create(str(kubectl.kubeconfig))
    try:
        recorder = EventRecorder(client)
        pod = pod_info_from_json(kubectl.kube.get(PODS, "team", "web"))
        task = asyncio.create_task(recorder.run())
        recorder.warning(pod, "KiamRoleForbidden", "pod team/web has no role annotation")
        await kubectl.kube.wait_for(lambda: bool(kubectl.kube.events("team")), timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await client.close()
    shown = await kubectl("get", "events", "-n", "team")
    assert "Warning" in shown and "KiamRoleForbidden" in shown, shown
    assert "pod team/web has no role annotation" in shown
