"""The emulator driven by kubernetes_asyncio the way the kiam server drives an apiserver."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kiam_testbed.kube import KubeEmulator


def _pod(name: str, *, labels: dict[str, str] | None = None) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="img")]),
        status=client.V1PodStatus(phase="Running", pod_ip="10.0.0.99"),
    )


def _status(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(exc.body)
    return body


async def test_cluster_wide_list_as_raw_bytes(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    kube_emulator.create_pod("b", "two", ip="10.0.0.2")
    kube_emulator.create_pod("a", "one", ip="10.0.0.1", annotations={"k": "v"})
    response = await kube_core.list_pod_for_all_namespaces(_preload_content=False)
    body = orjson.loads(await response.read())
    assert response.status == 200
    assert body["kind"] == "PodList"
    assert body["apiVersion"] == "v1"
    assert body["metadata"] == {"resourceVersion": str(kube_emulator.resource_version)}
    names = [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in body["items"]]
    assert names == [("a", "one"), ("b", "two")]
    first = body["items"][0]
    assert "kind" not in first  # list items carry no kind, as from the apiserver
    assert first["status"]["podIPs"] == [{"ip": "10.0.0.1"}]
    assert first["status"]["phase"] == "Running"
    assert first["metadata"]["annotations"] == {"k": "v"}


async def test_namespaced_list_get_and_typed_models(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    kube_emulator.create_pod("a", "one", ip="10.0.0.1")
    kube_emulator.create_pod("b", "two", ip="10.0.0.2")
    pods = await kube_core.list_namespaced_pod("b")
    assert [p.metadata.name for p in pods.items] == ["two"]
    pod = await kube_core.read_namespaced_pod("one", "a")
    assert pod.kind == "Pod"
    assert pod.status.pod_ip == "10.0.0.1"
    namespaces = await kube_core.list_namespace()
    assert {"a", "b", "default", "kube-system"} <= {n.metadata.name for n in namespaces.items}


async def test_create_ignores_status_and_conflicts_are_409(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    created = await kube_core.create_namespaced_pod("default", _pod("web"))
    assert created.status.phase == "Pending"
    assert created.status.pod_ip is None
    assert created.metadata.uid
    assert int(created.metadata.resource_version) == kube_emulator.resource_version
    assert created.metadata.creation_timestamp.tzinfo is not None  # parsed: RFC 3339, UTC
    with pytest.raises(ApiException) as caught:
        await kube_core.create_namespaced_pod("default", _pod("web"))
    assert caught.value.status == 409
    assert _status(caught.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "web" already exists', "reason": "AlreadyExists",
        "details": {"name": "web", "kind": "pods"}, "code": 409,
    }


async def test_not_found_is_the_apiserver_status(kube_core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        await kube_core.read_namespaced_pod("ghost", "default")
    assert caught.value.status == 404
    assert _status(caught.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "ghost" not found', "reason": "NotFound",
        "details": {"name": "ghost", "kind": "pods"}, "code": 404,
    }


async def test_invalid_object_is_422(kube_core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        await kube_core.create_namespaced_pod("default", _pod("Not_Valid"))
    status = _status(caught.value)
    assert caught.value.status == 422
    assert status["reason"] == "Invalid"
    assert status["message"].startswith('Pod "Not_Valid" is invalid: metadata.name: Invalid')
    assert status["details"]["kind"] == "Pod"
    assert status["details"]["causes"][0]["field"] == "metadata.name"


async def test_replace_with_stale_version_is_409_conflict(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    kube_emulator.create_pod("default", "web")
    pod = await kube_core.read_namespaced_pod("web", "default")
    pod.metadata.labels = {"v": "1"}
    updated = await kube_core.replace_namespaced_pod("web", "default", pod)
    assert updated.metadata.labels == {"v": "1"}
    pod.metadata.labels = {"v": "2"}  # still carries the version before the update
    with pytest.raises(ApiException) as caught:
        await kube_core.replace_namespaced_pod("web", "default", pod)
    status = _status(caught.value)
    assert caught.value.status == 409
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Operation cannot be fulfilled on pods "web": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


async def test_status_subresource(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    await kube_core.create_namespaced_pod("default", _pod("web"))
    pod = await kube_core.read_namespaced_pod("web", "default")
    pod.status.phase = "Running"
    pod.status.pod_ip = "10.1.1.1"
    pod.status.pod_ips = [client.V1PodIP(ip="10.1.1.1"), client.V1PodIP(ip="fd00::1")]
    replaced = await kube_core.replace_namespaced_pod_status("web", "default", pod)
    assert replaced.status.pod_ip == "10.1.1.1"
    assert [ip.ip for ip in replaced.status.pod_ips] == ["10.1.1.1", "fd00::1"]
    patched = await kube_core.patch_namespaced_pod_status(
        "web", "default", {"status": {"phase": "Succeeded"}},
        _content_type="application/merge-patch+json",
    )
    assert patched.status.phase == "Succeeded"
    assert kube_emulator.get("pods", "default", "web")["status"]["phase"] == "Succeeded"
    # the main resource cannot change the status
    same = await kube_core.patch_namespaced_pod(
        "web", "default", {"status": {"phase": "Failed"}},
        _content_type="application/merge-patch+json",
    )
    assert same.status.phase == "Succeeded"


@pytest.mark.parametrize(
    ("content_type", "patch"),
    [
        ("application/merge-patch+json", {"metadata": {"labels": {"a": "b"}}}),
        ("application/strategic-merge-patch+json", {"metadata": {"labels": {"a": "b"}}}),
        ("application/json-patch+json",
         [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]),
    ],
)
async def test_patch_content_types(
    kube_emulator: KubeEmulator, kube_http: aiohttp.ClientSession, content_type: str,
    patch: Any,
) -> None:
    kube_emulator.create_pod("default", "web")
    async with kube_http.patch("/api/v1/namespaces/default/pods/web", data=orjson.dumps(patch),
                               headers={"Content-Type": content_type}) as response:
        body = await response.json()
    assert response.status == 200
    assert body["metadata"]["labels"] == {"a": "b"}


async def test_patch_errors(kube_emulator: KubeEmulator, kube_http: aiohttp.ClientSession) -> None:
    kube_emulator.create_pod("default", "web")
    path = "/api/v1/namespaces/default/pods/web"
    bad_test = [{"op": "test", "path": "/metadata/name", "value": "other"}]
    async with kube_http.patch(path, data=orjson.dumps(bad_test),
                               headers={"Content-Type": "application/json-patch+json"}) as r:
        assert r.status == 422
        assert (await r.json())["kind"] == "Status"
    async with kube_http.patch(path, data=b"{}", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 415
    stale = {"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}}
    async with kube_http.patch(path, data=orjson.dumps(stale),
                               headers={"Content-Type": "application/merge-patch+json"}) as r:
        assert r.status == 409
        assert (await r.json())["reason"] == "Conflict"


async def test_graceful_delete_keeps_the_pod_until_finalised(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    kube_emulator.create_pod("default", "web", ip="10.0.0.7", grace_period=120)
    answer = await kube_core.delete_namespaced_pod("web", "default")
    assert answer.metadata.deletion_grace_period_seconds == 120
    assert answer.metadata.deletion_timestamp is not None
    still = await kube_core.read_namespaced_pod("web", "default")
    assert still.status.pod_ip == "10.0.0.7"
    assert still.metadata.deletion_timestamp is not None
    kube_emulator.finalise_pod("default", "web")
    with pytest.raises(ApiException) as caught:
        await kube_core.read_namespaced_pod("web", "default")
    assert caught.value.status == 404


async def test_grace_period_runs_out_on_a_real_timer(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    kube_emulator.create_pod("default", "web", ip="10.0.0.7")
    answer = await kube_core.delete_namespaced_pod("web", "default", grace_period_seconds=1)
    assert answer.metadata.deletion_grace_period_seconds == 1
    assert kube_emulator.find("pods", "default", "web") is not None
    await kube_emulator.wait_for(lambda: kube_emulator.find("pods", "default", "web") is None)


async def test_zero_grace_deletes_at_once_query_or_body(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    kube_emulator.create_pod("default", "one")
    kube_emulator.create_pod("default", "two")
    await kube_core.delete_namespaced_pod("one", "default", grace_period_seconds=0)
    await kube_core.delete_namespaced_pod(
        "two", "default", body=client.V1DeleteOptions(grace_period_seconds=0))
    assert kube_emulator.list("pods", "default") == []


async def test_namespaces_and_events_delete_at_once(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    await kube_core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="x")))
    ns = await kube_core.read_namespace("x")
    assert ns.status.phase == "Active"
    await kube_core.delete_namespace("x")
    assert kube_emulator.find("namespaces", "", "x") is None


def _core_event(name: str, namespace: str = "default") -> client.CoreV1Event:
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        involved_object=client.V1ObjectReference(kind="Pod", namespace=namespace, name="web"),
        reason="KiamRoleForbidden", message="denied", type="Warning", count=1,
        source=client.V1EventSource(component="kiam"),
    )


async def test_core_events_create_patch_delete(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    created = await kube_core.create_namespaced_event("default", _core_event("web.1"))
    assert created.reason == "KiamRoleForbidden"
    # a dict body goes out as a strategic merge patch, as kiam's event recorder sends it
    patched = await kube_core.patch_namespaced_event("web.1", "default", {"count": 2})
    assert patched.count == 2
    listed = await kube_core.list_namespaced_event(
        "default", field_selector="involvedObject.name=web,reason=KiamRoleForbidden")
    assert [e.metadata.name for e in listed.items] == ["web.1"]
    assert kube_emulator.events("default", reason="KiamRoleForbidden")[0]["count"] == 2
    answer = await kube_core.delete_namespaced_event("web.1", "default")
    assert answer.status == "Success"
    assert kube_emulator.events() == []


async def test_core_event_in_wrong_namespace_is_invalid(kube_core: client.CoreV1Api) -> None:
    event = _core_event("web.2")
    event.involved_object.namespace = "elsewhere"
    with pytest.raises(ApiException) as caught:
        await kube_core.create_namespaced_event("default", event)
    assert caught.value.status == 422


async def test_events_v1(
    kube_emulator: KubeEmulator, kube_api_client: client.ApiClient
) -> None:
    api = client.EventsV1Api(kube_api_client)
    event = client.EventsV1Event(
        metadata=client.V1ObjectMeta(name="web.3"),
        event_time="2026-01-01T00:00:00.000000Z",
        reporting_controller="kiam.io/server", reporting_instance="server-1",
        action="AssumeRole", reason="KiamCredentialError", type="Warning", note="sts failed",
        regarding=client.V1ObjectReference(kind="Pod", namespace="default", name="web"),
    )
    created = await api.create_namespaced_event("default", event)
    assert created.reason == "KiamCredentialError"
    assert kube_emulator.get("events.events.k8s.io", "default", "web.3")["note"] == "sts failed"
    event.metadata.name = "web.4"
    event.reporting_controller = None
    with pytest.raises(ApiException) as caught:
        await api.create_namespaced_event("default", event)
    status = _status(caught.value)
    assert caught.value.status == 422
    assert status["details"]["group"] == "events.k8s.io"
    assert status["details"]["causes"][0]["field"] == "reportingController"


async def test_selectors_on_lists(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    kube_emulator.create_pod("a", "one", ip="10.0.0.1", labels={"app": "x"})
    kube_emulator.create_pod("a", "two", ip="10.0.0.2", labels={"app": "y"})
    kube_emulator.create_pod("b", "three", labels={"app": "x"})
    by_ip = await kube_core.list_pod_for_all_namespaces(field_selector="status.podIP=10.0.0.2")
    assert [p.metadata.name for p in by_ip.items] == ["two"]
    by_label = await kube_core.list_pod_for_all_namespaces(label_selector="app in (x)")
    assert [p.metadata.name for p in by_label.items] == ["one", "three"]
    both = await kube_core.list_namespaced_pod(
        "a", label_selector="app!=y", field_selector="status.phase=Running")
    assert [p.metadata.name for p in both.items] == ["one"]
    with pytest.raises(ApiException) as caught:
        await kube_core.list_pod_for_all_namespaces(field_selector="spec.nope=1")
    assert caught.value.status == 400
    assert _status(caught.value)["message"] == "field label not supported: spec.nope"


async def test_limit_and_continue(kube_emulator: KubeEmulator, kube_core: client.CoreV1Api) -> None:
    for i in range(5):
        kube_emulator.create_pod("default", f"p{i}")
    first = await kube_core.list_namespaced_pod("default", limit=2)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"]
    assert first.metadata.remaining_item_count == 3
    cached = await kube_core.list_namespaced_pod("default", limit=2, resource_version="0")
    assert len(cached.items) == 5  # the watch cache ignores limit, as the apiserver's does
    assert cached.metadata._continue is None
    second = await kube_core.list_namespaced_pod("default", limit=2,
                                                 _continue=first.metadata._continue)
    assert [p.metadata.name for p in second.items] == ["p2", "p3"]
    kube_emulator.create_pod("default", "zz")
    kube_emulator.compact()
    with pytest.raises(ApiException) as caught:
        await kube_core.list_namespaced_pod("default", limit=2,
                                            _continue=second.metadata._continue)
    assert caught.value.status == 410
    assert _status(caught.value)["reason"] == "Expired"


async def test_bad_input(kube_http: aiohttp.ClientSession) -> None:
    async with kube_http.post("/api/v1/namespaces/default/pods", data=b"{nope",
                              headers={"Content-Type": "application/json"}) as r:
        body = await r.json()
        assert r.status == 400
        assert body["reason"] == "BadRequest"
        assert body["kind"] == "Status"
    for path in ("/api/v1/widgets", "/apis/apps/v1/deployments", "/api/v1/pods/x/y/z",
                 "/api/v1/namespaces/default/pods/web/log"):
        async with kube_http.get(path) as r:
            body = await r.json()
            assert r.status == 404, path
            assert body["message"] == "the server could not find the requested resource"
    async with kube_http.post("/api/v1/pods", data=b"{}") as r:
        assert r.status == 405


async def test_discovery_and_health(kube_http: aiohttp.ClientSession) -> None:
    async with kube_http.get("/api/v1") as r:
        names = {res["name"] for res in (await r.json())["resources"]}
    assert {"pods", "pods/status", "namespaces", "events"} <= names
    async with kube_http.get("/readyz") as r:
        assert await r.text() == "ok"


async def test_generate_name_and_list_from_version_zero(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    pod = _pod("")
    pod.metadata.name = None
    pod.metadata.generate_name = "web-"
    created = await kube_core.create_namespaced_pod("default", pod)
    assert created.metadata.name.startswith("web-")
    assert created.metadata.generate_name == "web-"
    listed = await kube_core.list_namespaced_pod("default", resource_version="0")
    assert [p.metadata.name for p in listed.items] == [created.metadata.name]


async def test_put_creates_a_missing_event_but_not_a_missing_pod(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    created = await kube_core.replace_namespaced_event("web.9", "default", _core_event("web.9"))
    assert created.metadata.uid
    with pytest.raises(ApiException) as caught:
        await kube_core.replace_namespaced_pod("ghost", "default", _pod("ghost"))
    assert caught.value.status == 404
    with pytest.raises(ApiException) as caught:
        await kube_core.replace_namespaced_pod("other", "default", _pod("ghost"))
    assert caught.value.status == 400


async def test_namespace_watch_as_the_namespace_cache_uses_it(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    response = await kube_core.list_namespace(_preload_content=False)
    rv = orjson.loads(await response.read())["metadata"]["resourceVersion"]
    stream = await kube_core.list_namespace(watch=True, resource_version=rv,
                                            _preload_content=False)
    try:
        kube_emulator.create_namespace("team")
        kube_emulator.patch("namespaces", "", "team", {"metadata": {"annotations": {
            "iam.amazonaws.com/permitted": ".*"}}})
        kube_emulator.delete("namespaces", "", "team")
        events = [orjson.loads(await stream.content.readline()) for _ in range(3)]
    finally:
        stream.close()
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[0]["object"]["kind"] == "Namespace"
    assert events[0]["object"]["status"] == {"phase": "Active"}
    assert events[1]["object"]["metadata"]["annotations"] == {
        "iam.amazonaws.com/permitted": ".*"}


def _selector_pods(kube: KubeEmulator) -> None:
    kube.create_pod("a", "one", ip="10.0.0.1", labels={"app": "x", "tier": "1"})
    kube.create_pod("a", "two", ip="10.0.0.2", labels={"app": "y"})
    kube.create_pod("b", "three", node_name="node-2", labels={"app": "x"})  # Pending, no IP
    kube.create_pod("b", "four", ip="10.0.0.4", node_name="node-2")


@pytest.mark.parametrize(
    ("field_selector", "expected"),
    [
        ("metadata.name=two", ["two"]),
        ("metadata.namespace=b", ["four", "three"]),
        ("spec.nodeName=node-2", ["four", "three"]),
        ("status.phase=Pending", ["three"]),
        ("status.phase!=Pending", ["one", "two", "four"]),
        ("status.podIP=10.0.0.4", ["four"]),
        ("status.podIP==10.0.0.1,metadata.namespace=a", ["one"]),
        ("spec.nodeName=node-1,status.podIP!=10.0.0.1", ["two"]),
    ],
)
async def test_field_selectors_through_kubernetes_asyncio(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api, field_selector: str,
    expected: list[str],
) -> None:
    _selector_pods(kube_emulator)
    listed = await kube_core.list_pod_for_all_namespaces(field_selector=field_selector)
    assert [p.metadata.name for p in listed.items] == expected


@pytest.mark.parametrize(
    ("label_selector", "expected"),
    [
        ("app=x", ["one", "three"]),
        ("app==x", ["one", "three"]),
        ("app!=x", ["two", "four"]),  # a pod without the label matches !=
        ("app in (x, y)", ["one", "two", "three"]),
        ("app notin (x)", ["two", "four"]),
        ("app", ["one", "two", "three"]),
        ("!app", ["four"]),
        ("app=x,tier", ["one"]),
        ("app in (x),!tier", ["three"]),
    ],
)
async def test_label_selectors_through_kubernetes_asyncio(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api, label_selector: str,
    expected: list[str],
) -> None:
    _selector_pods(kube_emulator)
    listed = await kube_core.list_pod_for_all_namespaces(label_selector=label_selector)
    assert [p.metadata.name for p in listed.items] == expected


async def test_bad_selectors_are_400_on_lists_and_watches(kube_core: client.CoreV1Api) -> None:
    for kwargs in ({"field_selector": "spec.nope=1"}, {"label_selector": "app in x"},
                   {"field_selector": "metadata.name"}):
        with pytest.raises(ApiException) as caught:
            await kube_core.list_pod_for_all_namespaces(**kwargs)
        assert caught.value.status == 400, kwargs
        assert _status(caught.value)["reason"] == "BadRequest"
        # a watch is refused before it starts, with the same Status
        response = await kube_core.list_pod_for_all_namespaces(
            watch=True, _preload_content=False, **kwargs)
        async with response:
            body = orjson.loads(await response.read())
        assert response.status == 400, kwargs
        assert body["kind"] == "Status"
        assert body["code"] == 400


async def test_malformed_delete_options_are_400_and_leave_the_pod(
    kube_emulator: KubeEmulator, kube_http: aiohttp.ClientSession
) -> None:
    kube_emulator.create_pod("default", "web", ip="10.0.0.8")
    path = "/api/v1/namespaces/default/pods/web"
    for options in ({"gracePeriodSeconds": "soon"}, {"gracePeriodSeconds": 1.5},
                    {"preconditions": "uid"}, [1]):
        async with kube_http.delete(path, data=orjson.dumps(options)) as r:
            body = await r.json()
        assert r.status == 400, options
        assert body["reason"] == "BadRequest", options
    async with kube_http.delete(path, params={"gracePeriodSeconds": "x"}) as r:
        assert r.status == 400
    pod = kube_emulator.get("pods", "default", "web")
    assert "deletionTimestamp" not in pod["metadata"]


async def test_events_v1_list_patch_watch_delete(
    kube_emulator: KubeEmulator, kube_api_client: client.ApiClient
) -> None:
    api = client.EventsV1Api(kube_api_client)
    for name, pod in (("web.5", "web"), ("db.1", "db")):
        await api.create_namespaced_event("default", client.EventsV1Event(
            metadata=client.V1ObjectMeta(name=name), event_time="2026-01-01T00:00:00.000000Z",
            reporting_controller="kiam.io/server", reporting_instance="server-1",
            action="AssumeRole", reason="KiamRoleForbidden", type="Warning", note="denied",
            regarding=client.V1ObjectReference(kind="Pod", namespace="default", name=pod)))
    listed = await api.list_event_for_all_namespaces(
        field_selector="regarding.name=web,reason=KiamRoleForbidden")
    assert [e.metadata.name for e in listed.items] == ["web.5"]
    rv = listed.metadata.resource_version
    stream = await api.list_namespaced_event("default", watch=True, resource_version=rv,
                                             _preload_content=False)
    try:
        patched = await api.patch_namespaced_event(
            "web.5", "default", {"series": {"count": 2, "lastObservedTime":
                                            "2026-01-01T00:00:05.000000Z"}},
            _content_type="application/merge-patch+json")
        assert patched.series.count == 2
        answer = await api.delete_namespaced_event("db.1", "default")
        events = [orjson.loads(await stream.content.readline()) for _ in range(2)]
    finally:
        stream.close()
    assert answer.status == "Success"
    assert answer.details.group == "events.k8s.io"
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "web.5"), ("DELETED", "db.1")]
    assert events[0]["object"]["apiVersion"] == "events.k8s.io/v1"
    assert [e["metadata"]["name"] for e in kube_emulator.events("default")] == ["web.5"]
