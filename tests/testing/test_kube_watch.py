"""Watches as the kiam server consumes them: raw lines from kubernetes_asyncio responses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client

from kiam_testbed.kube import KubeEmulator


@asynccontextmanager
async def _watch(core: client.CoreV1Api, namespace: str | None = None,
                 **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
    if namespace is None:
        response = await core.list_pod_for_all_namespaces(
            watch=True, _preload_content=False, **kwargs)
    else:
        response = await core.list_namespaced_pod(
            namespace, watch=True, _preload_content=False, **kwargs)
    try:
        yield response
    finally:
        response.close()


async def _next(response: aiohttp.ClientResponse) -> dict[str, Any]:
    async with asyncio.timeout(5):
        line = await response.content.readline()
    assert line, "the watch ended"
    event: dict[str, Any] = orjson.loads(line)
    return event


async def _ended(response: aiohttp.ClientResponse) -> bool:
    async with asyncio.timeout(5):
        return await response.content.readline() == b""


def _summary(event: dict[str, Any]) -> tuple[str, str, str]:
    meta = event["object"]["metadata"]
    return event["type"], meta.get("name", ""), meta["resourceVersion"]


async def _list_rv(core: client.CoreV1Api) -> str:
    response = await core.list_pod_for_all_namespaces(_preload_content=False)
    rv: str = orjson.loads(await response.read())["metadata"]["resourceVersion"]
    return rv


async def test_watch_from_a_version_delivers_exactly_the_later_changes(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    kube_emulator.create_pod("default", "before")
    rv = await _list_rv(kube_core)
    kube_emulator.create_pod("default", "web")  # after the list, before the watch
    async with _watch(kube_core, resource_version=rv) as stream:
        added = await _next(stream)
        assert _summary(added)[:2] == ("ADDED", "web")
        assert added["object"]["kind"] == "Pod"
        kube_emulator.set_pod_status("default", "web", pod_ip="10.0.0.3")
        kube_emulator.delete_pod("default", "web")
        kube_emulator.finalise_pod("default", "web")
        events = [await _next(stream) for _ in range(3)]
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED", "DELETED"]
    assert events[0]["object"]["status"]["podIP"] == "10.0.0.3"
    assert events[1]["object"]["metadata"]["deletionTimestamp"]
    assert events[2]["object"]["status"]["podIP"] == "10.0.0.3"  # the last state
    versions = [int(_summary(e)[2]) for e in [added, *events]]
    assert versions == sorted(versions)
    assert versions[-1] == kube_emulator.resource_version


async def test_watch_without_version_starts_with_the_current_state(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    kube_emulator.create_pod("a", "one")
    kube_emulator.create_pod("b", "two")
    for round_, kwargs in enumerate(({}, {"resource_version": "0"})):
        async with _watch(kube_core, **kwargs) as stream:
            initial = [_summary(await _next(stream))[:2] for _ in range(2)]
            assert initial == [("ADDED", "one"), ("ADDED", "two")]
            kube_emulator.patch("pods", "a", "one", {"metadata": {"labels": {"r": str(round_)}}})
            assert _summary(await _next(stream))[:2] == ("MODIFIED", "one")


async def test_namespaced_watch_sees_only_its_namespace(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    rv = str(kube_emulator.resource_version)
    async with _watch(kube_core, "b", resource_version=rv) as stream:
        kube_emulator.create_pod("a", "one")
        kube_emulator.create_pod("b", "two")
        assert _summary(await _next(stream))[:2] == ("ADDED", "two")


async def test_bookmarks_on_request_and_only_when_allowed(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    rv = str(kube_emulator.resource_version)
    async with _watch(kube_core, resource_version=rv, allow_watch_bookmarks=True) as stream, \
            _watch(kube_core, resource_version=rv, timeout_seconds=1) as plain:
        await kube_emulator.wait_for_watchers(2)
        kube_emulator.create_pod("default", "web")
        assert kube_emulator.send_bookmark() == 1
        assert _summary(await _next(stream))[0] == "ADDED"
        bookmark = await _next(stream)
        assert bookmark == {"type": "BOOKMARK", "object": {
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"resourceVersion": str(kube_emulator.resource_version)}}}
        assert _summary(await _next(plain))[0] == "ADDED"
        assert await _ended(plain)  # no bookmark on the stream that did not allow them


async def test_periodic_bookmarks() -> None:
    async with KubeEmulator(bookmark_interval=0.2) as kube:
        cfg = client.Configuration(host=kube.url)
        async with client.ApiClient(configuration=cfg) as api:
            core = client.CoreV1Api(api)
            rv = str(kube.resource_version)
            async with _watch(core, resource_version=rv, allow_watch_bookmarks=True) as stream:
                first, second = await _next(stream), await _next(stream)
    assert first["type"] == second["type"] == "BOOKMARK"
    assert first["object"]["metadata"]["resourceVersion"] == rv


async def test_timeout_seconds_ends_the_watch_and_removes_the_watcher(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    async with _watch(kube_core, resource_version="0", timeout_seconds=1) as stream:
        assert await _ended(stream)
    await kube_emulator.wait_for(lambda: kube_emulator.watcher_count() == 0)


async def test_compacted_version_is_410_then_relist_and_watch(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    old = await _list_rv(kube_core)
    kube_emulator.create_pod("default", "web")
    kube_emulator.compact()
    async with _watch(kube_core, resource_version=old) as stream:
        error = await _next(stream)
        assert await _ended(stream)
    assert error["type"] == "ERROR"
    status = error["object"]
    assert status["kind"] == "Status"
    assert status["code"] == 410
    assert status["reason"] == "Expired"
    assert status["message"].startswith(f"too old resource version: {old} (")
    fresh = await _list_rv(kube_core)  # the relist a client does after a 410
    async with _watch(kube_core, resource_version=fresh) as stream:
        kube_emulator.create_pod("default", "after")
        assert _summary(await _next(stream))[:2] == ("ADDED", "after")


async def test_selectors_on_watches_follow_objects_in_and_out(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    kube_emulator.create_pod("default", "web", labels={"app": "web"})
    rv = str(kube_emulator.resource_version)
    async with _watch(kube_core, resource_version=rv, field_selector="status.phase=Running",
                      label_selector="app=web") as stream:
        kube_emulator.set_pod_status("default", "web", pod_ip="10.0.0.4")  # Running now
        entered = await _next(stream)
        kube_emulator.set_pod_status("default", "web", phase="Succeeded")
        left = await _next(stream)
        kube_emulator.set_pod_status("default", "web", phase="Running")
        back = await _next(stream)
        kube_emulator.patch("pods", "default", "web", {"metadata": {"labels": {"app": "x"}}})
        relabelled = await _next(stream)
    assert entered["type"] == "ADDED"
    assert left["type"] == "DELETED"
    # DELETED carries the state that matched, stamped with the version that removed it
    assert left["object"]["status"]["phase"] == "Running"
    assert int(left["object"]["metadata"]["resourceVersion"]) > int(
        entered["object"]["metadata"]["resourceVersion"])
    assert back["type"] == "ADDED"
    assert relabelled["type"] == "DELETED"
    assert relabelled["object"]["metadata"]["labels"] == {"app": "web"}


async def test_drop_watches_ends_every_stream(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    async with _watch(kube_core, resource_version="0") as one, \
            _watch(kube_core, "default", resource_version="0") as two:
        await kube_emulator.wait_for_watchers(2)
        assert kube_emulator.drop_watches() == 2
        assert await _ended(one)
        assert await _ended(two)
    await kube_emulator.wait_for(lambda: kube_emulator.watcher_count() == 0)


async def test_a_client_that_goes_away_is_forgotten(
    kube_emulator: KubeEmulator, kube_http: aiohttp.ClientSession
) -> None:
    response = await kube_http.get("/api/v1/pods", params={"watch": "true"})
    await kube_emulator.wait_for_watchers(1)
    response.close()
    await kube_emulator.wait_for(lambda: kube_emulator.watcher_count() == 0)


async def test_stop_ends_open_watches_promptly() -> None:
    kube = KubeEmulator()
    await kube.start()
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(f"{kube.url}/api/v1/pods?watch=1") as response:
            await kube.wait_for_watchers(1)
            await kube.stop()
            assert await _ended(response)
    finally:
        await kube.stop()


async def test_legacy_watch_paths_and_events_watch(
    kube_emulator: KubeEmulator, kube_http: aiohttp.ClientSession
) -> None:
    rv = str(kube_emulator.resource_version)
    async with kube_http.get("/api/v1/watch/namespaces/default/pods/web",
                             params={"resourceVersion": rv}) as pods, \
            kube_http.get("/apis/events.k8s.io/v1/watch/events",
                          params={"resourceVersion": rv}) as events:
        await kube_emulator.wait_for_watchers(1, "pods")
        await kube_emulator.wait_for_watchers(1, "events.events.k8s.io")
        kube_emulator.create_pod("default", "other")
        kube_emulator.create_pod("default", "web")
        kube_emulator.create("events.events.k8s.io", {
            "metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "c", "reportingInstance": "i", "action": "a",
            "reason": "r", "type": "Normal"})
        assert _summary(await _next(pods))[:2] == ("ADDED", "web")
        event = await _next(events)
    assert event["object"]["apiVersion"] == "events.k8s.io/v1"
    assert event["object"]["metadata"]["name"] == "e1"


async def test_busy_stream_still_gets_bookmarks_and_its_timeout() -> None:
    async with KubeEmulator(bookmark_interval=0.2) as kube:
        kube.create_pod("default", "web")
        async with aiohttp.ClientSession() as session, session.get(
            f"{kube.url}/api/v1/pods",
            params={"watch": "1", "resourceVersion": str(kube.resource_version),
                    "allowWatchBookmarks": "true", "timeoutSeconds": "1"},
        ) as stream:
            await kube.wait_for_watchers(1)
            seen: list[str] = []

            async def churn() -> None:
                for i in range(1000):
                    kube.patch("pods", "default", "web",
                               {"metadata": {"labels": {"i": str(i)}}})
                    await asyncio.sleep(0.02)

            churner = asyncio.create_task(churn())
            try:
                async with asyncio.timeout(10):
                    while line := await stream.content.readline():
                        seen.append(orjson.loads(line)["type"])
                # timeoutSeconds ended the stream while changes were still coming
                assert not churner.done()
            finally:
                churner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await churner
    assert "BOOKMARK" in seen
    assert seen.count("MODIFIED") > 1


async def test_graceful_delete_as_a_watch_sees_it(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    kube_emulator.create_pod("default", "web", ip="10.0.0.5")  # default grace period
    kube_emulator.create_pod("default", "quick", ip="10.0.0.6")
    rv = await _list_rv(kube_core)
    async with _watch(kube_core, resource_version=rv) as stream:
        answer = await kube_core.delete_namespaced_pod("web", "default")
        terminating = await _next(stream)
        await kube_core.delete_namespaced_pod("quick", "default", grace_period_seconds=0)
        quick_gone = await _next(stream)
        kube_emulator.finalise_pod("default", "web")  # the kubelet is done
        web_gone = await _next(stream)
    assert answer.metadata.deletion_grace_period_seconds == 30  # terminationGracePeriodSeconds
    assert _summary(terminating)[:2] == ("MODIFIED", "web")
    meta = terminating["object"]["metadata"]
    assert meta["deletionGracePeriodSeconds"] == 30
    assert _seconds(meta["deletionTimestamp"]) - _seconds(meta["creationTimestamp"]) >= 29
    assert terminating["object"]["status"]["podIP"] == "10.0.0.5"  # IP and all, still there
    # gracePeriodSeconds=0: gone at once, no terminating state first
    assert _summary(quick_gone)[:2] == ("DELETED", "quick")
    assert "deletionTimestamp" not in quick_gone["object"]["metadata"]
    assert _summary(web_gone)[:2] == ("DELETED", "web")
    assert web_gone["object"]["status"]["podIP"] == "10.0.0.5"


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
