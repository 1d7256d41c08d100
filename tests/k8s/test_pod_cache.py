"""PodCache against the Kubernetes API emulator: list, watch, gaps, 410, resync."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest
from prometheus_client import REGISTRY

from kiam.k8s.client import KubeClient
from kiam.k8s.errors import AmbiguousPodIP
from kiam.k8s.model import PodInfo, pod_info_from_json
from kiam.k8s.pod_cache import PodCache
from kiam.k8s.watching import ListWatch, WatchOptions
from kiam_testbed.kube import KubeEmulator
from tests.k8s.conftest import WATCH, caught_up, eventually, running

ROLE = "iam.amazonaws.com/role"
PODS = r"/api/v1/pods"


def _cache(client: KubeClient, *, announce_buffer: int = 100, **options: float) -> PodCache:
    watch = dataclasses.replace(WATCH, **options)
    return PodCache(client, options=watch, announce_buffer=announce_buffer)


def _role_at(cache: PodCache, ip: str) -> str | None:
    pod = cache.find_by_ip(ip)
    return None if pod is None else pod.role


async def test_initial_list_indexes_live_pods(kube: KubeEmulator, client: KubeClient) -> None:
    kube.create_pod("team", "web", ip="10.1.0.5", annotations={ROLE: "reader"})
    kube.create_pod("team", "v6", ips=["fd00::5", "10.1.0.6"])
    kube.create_pod("team", "done", ip="10.1.0.7", phase="Succeeded")
    kube.create_pod("kube-system", "agent", ip="192.168.0.1", host_network=True)
    cache = _cache(client)
    async with running(cache.run()):
        async with asyncio.timeout(5):
            await cache.synced.wait()
        assert _role_at(cache, "10.1.0.5") == "reader"
        assert cache.find_by_ip("fd00::5") == cache.find_by_ip("10.1.0.6")
        assert cache.find_by_ip("10.1.0.7") is None
        assert cache.find_by_ip("192.168.0.1") is None
        assert sorted(p.name for p in cache.live_pods()) == ["v6", "web"]
    assert kube.request_count("GET", PODS, watch=False) == 1


async def test_pod_added_after_start_is_found_by_ip(kube: KubeEmulator, client: KubeClient) -> None:
    cache = _cache(client)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        assert cache.find_by_ip("10.1.0.9") is None
        kube.create_pod("team", "late", ip="10.1.0.9", annotations={ROLE: "writer"})
        found = await cache.wait_for_ip("10.1.0.9", timeout=5)
        assert found is not None
        assert (found.namespace, found.name, found.role) == ("team", "late", "writer")


async def test_wait_for_ip_is_woken_by_a_status_update(
    kube: KubeEmulator, client: KubeClient
) -> None:
    cache = _cache(client)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        waiter = asyncio.create_task(cache.wait_for_ip("10.1.0.10", timeout=10))
        kube.create_pod("team", "starting", annotations={ROLE: "r"})  # Pending, no IP yet
        await caught_up(kube, cache.watch)
        assert not waiter.done()
        kube.set_pod_status("team", "starting", phase="Running", pod_ip="10.1.0.10")
        found = await waiter
        assert found is not None and found.name == "starting"


async def test_wait_for_unknown_ip_gives_up(kube: KubeEmulator, client: KubeClient) -> None:
    cache = _cache(client)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        assert await cache.wait_for_ip("10.9.9.9", timeout=0.05) is None


async def test_ip_reuse_after_delete(kube: KubeEmulator, client: KubeClient) -> None:
    kube.create_pod("team", "old", ip="10.1.0.20", annotations={ROLE: "a"})
    cache = _cache(client)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        assert _role_at(cache, "10.1.0.20") == "a"
        kube.delete_pod("team", "old", grace_period=0)
        kube.create_pod("team", "new", ip="10.1.0.20", annotations={ROLE: "b"})
        await caught_up(kube, cache.watch)
        assert _role_at(cache, "10.1.0.20") == "b"


async def test_ip_reuse_after_old_pod_finished(kube: KubeEmulator, client: KubeClient) -> None:
    kube.create_pod("team", "job", ip="10.1.0.21", annotations={ROLE: "a"})
    cache = _cache(client)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        kube.set_pod_status("team", "job", phase="Succeeded")
        kube.create_pod("team", "new", ip="10.1.0.21", annotations={ROLE: "b"})
        await caught_up(kube, cache.watch)
        assert _role_at(cache, "10.1.0.21") == "b"


async def test_ip_reuse_during_grace_period_is_refused_until_the_old_pod_goes(
    kube: KubeEmulator, client: KubeClient
) -> None:
    kube.create_pod("team", "old", ip="10.1.0.22", annotations={ROLE: "a"})
    cache = _cache(client)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        kube.delete_pod("team", "old", grace_period=30)  # still running for 30s
        kube.create_pod("team", "new", ip="10.1.0.22", annotations={ROLE: "b"})
        await caught_up(kube, cache.watch)
        with pytest.raises(AmbiguousPodIP):
            cache.find_by_ip("10.1.0.22")
        kube.finalise_pod("team", "old")
        await caught_up(kube, cache.watch)
        assert _role_at(cache, "10.1.0.22") == "b"


async def test_watch_drop_resumes_without_loss_or_relist(
    kube: KubeEmulator, client: KubeClient
) -> None:
    cache = _cache(client)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        await kube.wait_for_watchers(1, "pods")
        # the stream ends; changes made before the client is back must still arrive
        kube.drop_watches("pods")
        kube.create_pod("team", "during-gap", ip="10.1.0.30")
        kube.create_pod("team", "gone", ip="10.1.0.31")
        kube.delete_pod("team", "gone", grace_period=0)
        await caught_up(kube, cache.watch)
        assert cache.find_by_ip("10.1.0.30") is not None
        assert cache.find_by_ip("10.1.0.31") is None
    assert kube.request_count("GET", PODS, watch=False) == 1
    assert kube.request_count("GET", PODS, watch=True) >= 2


async def test_compaction_during_gap_relists_and_drops_deleted_pods(
    kube: KubeEmulator, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    kube.create_pod("team", "stays", ip="10.1.0.40")
    kube.create_pod("team", "deleted-in-gap", ip="10.1.0.41", annotations={ROLE: "a"})
    cache = _cache(client)
    caplog.set_level(logging.INFO, logger="kiam.k8s")
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        await kube.wait_for_watchers(1, "pods")
        # hold the client's next watch while the pod goes and history is compacted
        fault = kube.inject_fault(
            method="GET", path=f"^{PODS}$", query="watch=true", status=500, delay=0.2
        )
        kube.drop_watches("pods")
        await kube.wait_for(lambda: fault.hits == 1)
        kube.delete_pod("team", "deleted-in-gap", grace_period=0)
        kube.compact()
        await eventually(lambda: cache.watch.lists >= 2)
        await caught_up(kube, cache.watch)
        assert cache.find_by_ip("10.1.0.41") is None
        assert cache.find_by_ip("10.1.0.40") is not None
    assert kube.request_count("GET", PODS, watch=False) == 2
    assert "re-listing" in caplog.text
    assert "list/watch failed (attempt" in caplog.text


async def test_http_410_on_watch_relists(kube: KubeEmulator, client: KubeClient) -> None:
    cache = _cache(client)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        await kube.wait_for_watchers(1, "pods")
        kube.inject_fault(method="GET", path=f"^{PODS}$", query="watch=true", status=410)
        kube.drop_watches("pods")
        await eventually(lambda: cache.watch.lists >= 2)
        kube.create_pod("team", "after", ip="10.1.0.42")
        assert await cache.wait_for_ip("10.1.0.42", timeout=5) is not None


async def test_list_errors_are_retried_with_backoff(
    kube: KubeEmulator, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    kube.create_pod("team", "p", ip="10.1.0.50")
    kube.inject_fault(method="GET", path=f"^{PODS}$", query="^(?!.*watch)", status=503, times=2)
    cache = _cache(client)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        assert cache.find_by_ip("10.1.0.50") is not None
    assert kube.request_count("GET", PODS, watch=False) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("attempt 1" in m for m in warnings)
    assert any("attempt 2" in m for m in warnings)


async def test_resync_relists_periodically(kube: KubeEmulator, client: KubeClient) -> None:
    kube.create_pod("team", "p", ip="10.1.0.60")
    cache = _cache(client, resync_interval=0.1)
    async with running(cache.run()):
        await eventually(lambda: cache.watch.lists >= 2)
        assert cache.find_by_ip("10.1.0.60") is not None
    assert kube.request_count("GET", PODS, watch=False) >= 2


async def test_inactive_watch_is_reconnected_from_its_version(
    kube: KubeEmulator, client: KubeClient
) -> None:
    cache = _cache(client, inactivity_timeout=0.05)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        await kube.wait_for_requests(3, "GET", PODS, watch=True)
        kube.create_pod("team", "p", ip="10.1.0.70")
        assert await cache.wait_for_ip("10.1.0.70", timeout=5) is not None
    assert kube.request_count("GET", PODS, watch=False) == 1


async def test_announcement_overflow_is_counted(kube: KubeEmulator, client: KubeClient) -> None:
    for i in range(5):
        kube.create_pod("team", f"p{i}", ip=f"10.1.1.{i}", annotations={ROLE: "r"})
    kube.create_pod("team", "no-role", ip="10.1.1.100")
    before = REGISTRY.get_sample_value("kiam_k8s_dropped_pods_total") or 0.0
    cache = _cache(client, announce_buffer=2)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        announced: list[PodInfo] = [cache.announcements.get_nowait() for _ in range(2)]
        assert all(p.role == "r" for p in announced)
        kube.create_pod("team", "later", ip="10.1.1.50", annotations={ROLE: "r2"})
        await caught_up(kube, cache.watch)
        assert cache.announcements.get_nowait().name == "later"
    after = REGISTRY.get_sample_value("kiam_k8s_dropped_pods_total") or 0.0
    assert after - before == 3


async def test_paged_list(kube: KubeEmulator, client: KubeClient) -> None:
    for i in range(5):
        kube.create_pod("team", f"p{i}", ip=f"10.1.2.{i}")
    replaced: list[list[PodInfo]] = []
    lw = ListWatch(
        client,
        path=PODS,
        decode=pod_info_from_json,
        on_replace=replaced.append,
        on_event=lambda kind, pod: None,
        options=WatchOptions(resync_interval=0, page_size=2),
    )
    await lw.relist()
    assert sorted(p.name for p in replaced[0]) == [f"p{i}" for i in range(5)]
    assert kube.request_count("GET", PODS, watch=False) == 3
    assert lw.resource_version == str(kube.resource_version)


async def test_annotation_changes_are_reported(kube: KubeEmulator, client: KubeClient) -> None:
    kube.create_pod("default", "web", ip="10.0.0.1", annotations={ROLE: "reader"})
    changed: list[str] = []
    cache = PodCache(
        client, options=WATCH, announce_buffer=100,
        on_annotations_changed=lambda pod: changed.append(pod.key),
    )
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        kube.create_pod("default", "new", ip="10.0.0.2", annotations={ROLE: "reader"})
        kube.patch("pods", "default", "web", {"metadata": {"labels": {"tier": "1"}}})
        await caught_up(kube, cache.watch, "pods")
        assert changed == []  # a new pod and a label change are not annotation changes
        kube.patch("pods", "default", "web", {"metadata": {"annotations": {"touched": "1"}}})
        await caught_up(kube, cache.watch, "pods")
        assert changed == ["default/web"]


async def test_host_network_pods_are_found_by_uid_only(
    kube: KubeEmulator, client: KubeClient
) -> None:
    agent = kube.create_pod("kube-system", "agent", ip="192.168.0.1", host_network=True,
                            annotations={ROLE: "node-tools"})
    web = kube.create_pod("team", "web", ip="10.1.0.5")
    done = kube.create_pod("team", "done", ip="10.1.0.7", phase="Succeeded", host_network=True)
    cache = _cache(client)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        found = cache.find_by_uid(agent["metadata"]["uid"])
        assert found is not None and (found.name, found.role) == ("agent", "node-tools")
        assert cache.find_by_ip("192.168.0.1") is None  # never by the node's address
        assert "agent" not in [p.name for p in cache.live_pods()]
        assert cache.find_by_uid(web["metadata"]["uid"]) is not None
        assert cache.find_by_uid(done["metadata"]["uid"]) is None
        assert cache.find_by_uid("no-such-uid") is None
        kube.create_pod("kube-system", "late", ip="192.168.0.1", host_network=True)
        late = kube.get("pods", "kube-system", "late")["metadata"]["uid"]
        await eventually(lambda: cache.find_by_uid(late) is not None)
        kube.set_pod_status("kube-system", "agent", phase="Failed")
        await eventually(lambda: cache.find_by_uid(agent["metadata"]["uid"]) is None)
        kube.delete_pod("kube-system", "late")
        kube.finalise_pod("kube-system", "late")
        await eventually(lambda: cache.find_by_uid(late) is None)
        # a re-list keeps them too
        kube.compact()
        kube.drop_watches("pods")
        kube.create_pod("kube-system", "after", ip="192.168.0.1", host_network=True)
        after = kube.get("pods", "kube-system", "after")["metadata"]["uid"]
        await eventually(lambda: cache.find_by_uid(after) is not None)


async def test_wait_for_uid_is_woken_by_the_watch(kube: KubeEmulator, client: KubeClient) -> None:
    cache = _cache(client)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        assert await cache.wait_for_uid("nobody", timeout=0.05) is None
        for host_network in (True, False):
            # created in this loop turn: the cache cannot have the watch event yet
            pod = kube.create_pod("team", f"p-{int(host_network)}", ip="10.1.0.8",
                                  host_network=host_network)
            uid = pod["metadata"]["uid"]
            assert cache.find_by_uid(uid) is None
            found = await cache.wait_for_uid(uid, timeout=5)
            assert found is not None and found.uid == uid


async def test_listeners_hear_every_change_once(kube: KubeEmulator, client: KubeClient) -> None:
    kube.create_pod("default", "web", ip="10.0.0.1", annotations={ROLE: "reader"})
    heard: list[tuple[str | None, str | None]] = []
    cache = _cache(client)

    def listener(old: PodInfo | None, new: PodInfo | None) -> None:
        # the cache is updated before a listener hears of it
        if new is not None:
            assert new in cache.claimants(new.ips[0])
        heard.append((old and old.role, new and new.role))

    cache.add_listener(listener)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        assert heard == [(None, "reader")]  # the first list
        kube.patch("pods", "default", "web", {"metadata": {"labels": {"tier": "1"}}})
        kube.patch("pods", "default", "web", {"metadata": {"annotations": {ROLE: "writer"}}})
        kube.set_pod_status("default", "web", phase="Succeeded")
        await caught_up(kube, cache.watch, "pods")
        # a label change changes nothing kiam keeps: not told
        assert heard == [(None, "reader"), ("reader", "writer"), ("writer", None)]
        assert cache.claimants("10.0.0.1") == ()
        # a re-list tells the differences it makes, and nothing else
        kube.create_pod("default", "late", ip="10.0.0.2")
        await caught_up(kube, cache.watch, "pods")
        before = len(heard)
        await cache.watch.relist()
        assert len(heard) == before
        cache._replace([])
        assert heard[before:] == [("", None)]
