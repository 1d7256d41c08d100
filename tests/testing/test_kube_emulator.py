"""The emulator's own surface: hooks, faults, request counts, kubeconfig, scale."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import orjson
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kiam_testbed.kube import KubeApiError, KubeEmulator


def test_kubeconfig_names_the_emulator(kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    path = kube_emulator.write_kubeconfig(tmp_path / "config")
    config = json.loads(path.read_text())
    assert config["current-context"] == "kiam-emulator"
    assert config["clusters"] == [{"name": "kiam-emulator",
                                   "cluster": {"server": kube_emulator.url}}]
    assert config["users"][0]["name"] == "kiam-emulator"
    assert kube_emulator.url.startswith("http://127.0.0.1:")


async def test_fault_answers_the_next_matching_requests_then_stops(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    fault = kube_emulator.inject_fault(method="GET", path=r"^/api/v1/pods$", status=503,
                                       times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as caught:
            await kube_core.list_pod_for_all_namespaces()
        assert caught.value.status == 503
        body = orjson.loads(caught.value.body)
        assert body["kind"] == "Status"
        assert body["reason"] == "ServiceUnavailable"
        assert body["code"] == 503
    await kube_core.list_namespaced_pod("default")  # another path: not affected
    assert (await kube_core.list_pod_for_all_namespaces()).items == []
    assert fault.remaining == 0
    assert fault.hits == 2


async def test_fault_with_a_custom_status_body_and_query_match(
    kube_emulator: KubeEmulator, kube_http: aiohttp.ClientSession
) -> None:
    gone = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 1 (2)", "reason": "Expired", "code": 410}
    kube_emulator.inject_fault(path="/api/v1/pods", query="watch=", status=410, body=gone)
    async with kube_http.get("/api/v1/pods") as r:
        assert r.status == 200  # not a watch: untouched
    async with kube_http.get("/api/v1/pods", params={"watch": "true"}) as r:
        assert r.status == 410
        assert await r.json() == gone


async def test_delay_fault_slows_then_serves(
    kube_emulator: KubeEmulator, kube_http: aiohttp.ClientSession
) -> None:
    fault = kube_emulator.inject_fault(method="GET", path="/namespaces$", delay=0.5)
    request = asyncio.create_task(kube_http.get("/api/v1/namespaces"))
    await kube_emulator.wait_for_requests(1, "GET", "/api/v1/namespaces")
    assert fault.hits == 1
    assert not request.done()  # held by the fault
    async with await request as response:
        assert response.status == 200
    kube_emulator.clear_faults()
    assert kube_emulator.faults == []
    with pytest.raises(ValueError, match="needs a status"):
        kube_emulator.inject_fault(path="x")


async def test_request_counts(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    await kube_core.list_pod_for_all_namespaces()
    await kube_core.list_pod_for_all_namespaces()
    await kube_core.list_namespace()
    response = await kube_core.list_pod_for_all_namespaces(
        watch=True, timeout_seconds=1, _preload_content=False)
    await response.read()
    assert kube_emulator.request_count("GET", "/api/v1/pods") == 3
    assert kube_emulator.request_count("GET", "/api/v1/pods", watch=False) == 2
    assert kube_emulator.request_count("GET", "/api/v1/pods", watch=True) == 1
    assert kube_emulator.request_count(path="/api/v1/.*") == 4
    assert kube_emulator.request_count("POST") == 0
    kube_emulator.reset_counts()
    assert kube_emulator.request_count() == 0


async def test_hooks_raise_the_api_errors(kube_emulator: KubeEmulator) -> None:
    with pytest.raises(KubeApiError) as caught:
        kube_emulator.get("pods", "default", "ghost")
    assert caught.value.code == 404
    kube_emulator.create_pod("default", "web")
    with pytest.raises(KubeApiError) as caught:
        kube_emulator.create_pod("default", "web")
    assert caught.value.reason == "AlreadyExists"
    with pytest.raises(ValueError, match="unknown resource"):
        kube_emulator.list("deployments")


async def test_hooks_play_kubelet_and_scheduler(kube_emulator: KubeEmulator) -> None:
    pod = kube_emulator.create_pod("team", "web", node_name="")
    assert pod["status"]["phase"] == "Pending"
    assert kube_emulator.find("namespaces", "", "team") is not None
    pod = kube_emulator.set_pod_status("team", "web", node_name="node-2", pod_ips=[
        "10.0.0.9", "fd00::9"], host_ip="192.168.0.2")
    assert pod["spec"]["nodeName"] == "node-2"
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["podIP"] == "10.0.0.9"
    assert pod["status"]["podIPs"] == [{"ip": "10.0.0.9"}, {"ip": "fd00::9"}]
    pod = kube_emulator.set_pod_status("team", "web", host_network=True, pod_ip="")
    assert pod["spec"]["hostNetwork"] is True
    assert "podIP" not in pod["status"]
    updated = kube_emulator.update("pods", {**pod, "status": {"phase": "Failed"}})
    assert updated["status"] == {"phase": "Failed"}
    with pytest.raises(KubeApiError):
        kube_emulator.finalise_pod("team", "web")  # not terminating
    gone = kube_emulator.delete_pod("team", "web")  # Failed pods go at once
    assert kube_emulator.find("pods", "team", "web") is None
    assert gone["metadata"]["name"] == "web"


async def test_fifty_thousand_pods_listed_raw(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    total = 50_000
    for i in range(total):
        kube_emulator.create_pod(
            f"ns-{i % 20}", f"pod-{i:05d}", ip=f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
            annotations={"iam.amazonaws.com/role": f"role-{i % 50}"})
    response = await kube_core.list_pod_for_all_namespaces(_preload_content=False)
    body = orjson.loads(await response.read())
    items = body["items"]
    assert len(items) == total
    assert body["metadata"]["resourceVersion"] == str(kube_emulator.resource_version)
    ips = {item["status"]["podIP"] for item in items}
    assert len(ips) == total
    keys = [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items]
    assert keys == sorted(keys)
    page = await kube_core.list_pod_for_all_namespaces(limit=500, _preload_content=False)
    first = orjson.loads(await page.read())
    assert len(first["items"]) == 500
    assert first["metadata"]["remainingItemCount"] == total - 500


async def test_state_stays_bounded_as_requests_accumulate() -> None:
    async with KubeEmulator(history_size=50) as kube, aiohttp.ClientSession(
        base_url=kube.url
    ) as http:
        kube.create_pod("default", "web", ip="10.0.0.1")
        for i in range(200):
            kube.set_pod_status("default", "web", phase="Running" if i % 2 else "Pending")
            async with http.get("/api/v1/namespaces/default/pods/web") as r:
                assert r.status == 200
            async with http.get("/api/v1/pods", params={
                    "watch": "1", "resourceVersion": str(kube.resource_version - 1),
                    "timeoutSeconds": "1"}) as watch:
                assert (await watch.content.readline()).startswith(b'{"type":"MODIFIED"')
            kube.inject_fault(path="/nowhere", status=500)
            kube.clear_faults()
        await kube.wait_for(lambda: kube.watcher_count() == 0)
        stats = kube.stats()
    assert stats["history"] <= 50
    assert stats["watchers"] == 0
    assert stats["timers"] == 0
    assert stats["waiters"] == 0
    assert stats["faults"] == 0
    assert stats["request_keys"] == 2  # one per distinct (method, path, watch)


async def test_malformed_fields_are_400_not_500(kube_http: aiohttp.ClientSession) -> None:
    for body in ({"metadata": {"name": 5}}, {"metadata": {"name": "a", "labels": "x"}},
                 {"metadata": {"name": "a", "annotations": {"k": 1}}}, [1, 2]):
        async with kube_http.post("/api/v1/namespaces/default/pods",
                                  data=orjson.dumps(body)) as r:
            assert r.status == 400, body
            assert (await r.json())["reason"] == "BadRequest"
