"""KubeClient against the Kubernetes API emulator: raw JSON, watch stream, error mapping."""

from __future__ import annotations

import contextlib
from pathlib import Path

import orjson
import pytest

from kiam.k8s.client import KubeClient
from kiam.k8s.errors import KubeConflict, KubeError, KubeGone, KubeNotFound, KubeUnavailable
from kiam_testbed.kube import KubeEmulator


async def test_get_list_post_patch(kube: KubeEmulator, client: KubeClient) -> None:
    kube.create_pod("team", "web", ip="10.3.0.1")
    pod = await client.get_json("/api/v1/namespaces/team/pods/web")
    assert pod["status"]["podIP"] == "10.3.0.1"
    listed = orjson.loads(await client.list_raw("/api/v1/pods", {"limit": 10}))
    assert [p["metadata"]["name"] for p in listed["items"]] == ["web"]
    event = {
        "metadata": {"name": "e1", "namespace": "team"},
        "involvedObject": {"kind": "Pod", "namespace": "team", "name": "web"},
        "reason": "R",
        "message": "m",
        "type": "Warning",
        "count": 1,
    }
    created = await client.post_json("/api/v1/namespaces/team/events", event)
    assert created["metadata"]["name"] == "e1"
    patched = await client.patch_json("/api/v1/namespaces/team/events/e1", {"count": 5})
    assert patched["count"] == 5


async def test_errors_are_translated(kube: KubeEmulator, client: KubeClient) -> None:
    with pytest.raises(KubeNotFound) as missing:
        await client.get_json("/api/v1/namespaces/team/pods/nobody")
    assert missing.value.status == 404
    assert "nobody" in str(missing.value)
    event = {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "x"}}
    await client.post_json("/api/v1/namespaces/default/events", event)
    with pytest.raises(KubeConflict):
        await client.post_json("/api/v1/namespaces/default/events", event)
    kube.inject_fault(path="^/api/v1/pods$", status=410)
    with pytest.raises(KubeGone):
        await client.list_raw("/api/v1/pods")
    kube.inject_fault(path="^/api/v1/pods$", status=503)
    with pytest.raises(KubeUnavailable):
        await client.list_raw("/api/v1/pods")
    kube.inject_fault(path="^/api/v1/pods$", status=403)
    with pytest.raises(KubeError) as forbidden:
        await client.list_raw("/api/v1/pods")
    assert forbidden.value.status == 403


async def test_watch_yields_decoded_events(kube: KubeEmulator, client: KubeClient) -> None:
    kube.create_pod("team", "web", ip="10.3.0.1")
    rv = str(kube.resource_version)
    kube.create_pod("team", "db", ip="10.3.0.2")
    kube.set_pod_status("team", "db", phase="Failed")
    events = client.watch(
        "/api/v1/pods", {"resourceVersion": rv, "timeoutSeconds": 1}, inactivity_timeout=5
    )
    seen = []
    async with contextlib.aclosing(events):
        async for event in events:
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if len(seen) == 2:
                break
    assert seen == [("ADDED", "db"), ("MODIFIED", "db")]


async def test_watch_ends_when_the_server_ends_it(kube: KubeEmulator, client: KubeClient) -> None:
    rv = str(kube.resource_version)
    events = client.watch(
        "/api/v1/pods", {"resourceVersion": rv, "timeoutSeconds": 1}, inactivity_timeout=5
    )
    async with contextlib.aclosing(events):
        kube.create_pod("team", "web", ip="10.3.0.1")
        names = [event["object"]["metadata"]["name"] async for event in events]
    assert names == ["web"]


async def test_silent_watch_hits_the_inactivity_timeout(client: KubeClient) -> None:
    events = client.watch("/api/v1/pods", {"resourceVersion": "1"}, inactivity_timeout=0.05)
    with pytest.raises(KubeUnavailable, match="timed out"):
        async with contextlib.aclosing(events):
            async for _ in events:
                pass


async def test_unreachable_server(tmp_path: Path) -> None:
    async with KubeEmulator() as kube:
        path = kube.write_kubeconfig(tmp_path / "kubeconfig")
    client = await KubeClient.create(str(path))
    try:
        with pytest.raises(KubeUnavailable):
            await client.get_json("/api/v1/namespaces")
    finally:
        await client.close()


async def test_bad_kubeconfig_is_a_kube_error(tmp_path: Path) -> None:
    with pytest.raises(KubeError, match="missing"):
        await KubeClient.create(str(tmp_path / "missing"))


async def test_kubeconfig_that_is_not_yaml_is_a_kube_error(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nusers:\n- name: x\n  user:\n    token: s3cr3t-token: [\n")
    with pytest.raises(KubeError, match="not valid YAML") as caught:
        await KubeClient.create(str(path))
    message = str(caught.value)
    assert "line 5" in message
    assert str(path) in message
    # PyYAML quotes the offending line; a kubeconfig line can hold a token
    assert "s3cr3t" not in message
    assert caught.value.__cause__ is None
