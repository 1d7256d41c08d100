"""PodCache bookkeeping, fed directly with decoded pods (no sockets)."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from prometheus_client import REGISTRY

from kiam.k8s.client import KubeClient
from kiam.k8s.errors import AmbiguousPodIP
from kiam.k8s.model import PodInfo
from kiam.k8s.pod_cache import PodCache
from kiam.k8s.watching import ADDED, DELETED, MODIFIED, WatchOptions
from tests.k8s.factories import pod

# the watch loop is never started in these tests, so the client is never used
NO_CLIENT = cast(KubeClient, None)


def _cache(announce_buffer: int = 100) -> PodCache:
    options = WatchOptions(resync_interval=0)
    return PodCache(NO_CLIENT, options=options, announce_buffer=announce_buffer)


def _dropped() -> float:
    return REGISTRY.get_sample_value("kiam_k8s_dropped_pods_total") or 0.0


def _drain(queue: asyncio.Queue[PodInfo]) -> list[PodInfo]:
    items: list[PodInfo] = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def test_replace_indexes_and_marks_synced() -> None:
    cache = _cache()
    a = pod("a", ips=("10.0.0.1", "fd00::1"), role="r")
    cache._replace([a, pod("host", ips=("10.0.0.9",), host_network=True)])
    assert cache.synced.is_set()
    assert cache.find_by_ip("10.0.0.1") is a
    assert cache.find_by_ip("fd00::1") is a
    assert cache.find_by_ip("10.0.0.9") is None
    assert list(cache.live_pods()) == [a]


def test_finished_pods_are_not_kept() -> None:
    cache = _cache()
    cache._replace([pod("done", phase="Succeeded")])
    assert len(cache) == 0
    running = pod("p", role="r")
    cache._apply(ADDED, running)
    cache._apply(MODIFIED, pod("p", role="r", phase="Failed"))
    assert cache.find_by_ip("10.0.0.1") is None
    assert len(cache) == 0


def test_modified_pod_moves_to_its_new_ip() -> None:
    cache = _cache()
    cache._apply(ADDED, pod("p", ips=()))
    assert len(cache) == 1
    cache._apply(MODIFIED, pod("p", ips=("10.0.0.5",)))
    assert cache.find_by_ip("10.0.0.5") is not None
    cache._apply(MODIFIED, pod("p", ips=("10.0.0.6",)))
    assert cache.find_by_ip("10.0.0.5") is None
    assert cache.find_by_ip("10.0.0.6") is not None


def test_ip_reuse_after_delete_gives_the_new_pods_role() -> None:
    cache = _cache()
    cache._apply(ADDED, pod("old", role="a"))
    cache._apply(DELETED, pod("old", role="a"))
    cache._apply(ADDED, pod("new", role="b"))
    found = cache.find_by_ip("10.0.0.1")
    assert found is not None and found.role == "b"


def test_shared_ip_with_different_roles_is_ambiguous_until_one_goes() -> None:
    cache = _cache()
    cache._apply(ADDED, pod("old", role="a"))
    cache._apply(ADDED, pod("new", role="b"))
    with pytest.raises(AmbiguousPodIP):
        cache.find_by_ip("10.0.0.1")
    cache._apply(MODIFIED, pod("old", role="a", phase="Succeeded"))
    found = cache.find_by_ip("10.0.0.1")
    assert found is not None and found.name == "new"


def test_replace_drops_pods_missing_from_the_new_list() -> None:
    cache = _cache()
    cache._replace([pod("a", ips=("10.0.0.1",)), pod("b", ips=("10.0.0.2",))])
    cache._replace([pod("b", ips=("10.0.0.2",))])
    assert cache.find_by_ip("10.0.0.1") is None
    assert cache.find_by_ip("10.0.0.2") is not None
    assert len(cache) == 1


async def test_wait_for_ip_is_woken_by_a_later_add() -> None:
    cache = _cache()
    cache._replace([])
    waiter = asyncio.create_task(cache.wait_for_ip("10.0.0.7", timeout=60))
    await asyncio.sleep(0)
    assert not waiter.done()
    cache._apply(ADDED, pod("other", ips=("10.0.0.8",)))
    await asyncio.sleep(0)
    assert not waiter.done()
    cache._apply(ADDED, pod("late", ips=("10.0.0.7",)))
    found = await waiter
    assert found is not None and found.name == "late"
    assert not cache._waiters


async def test_wait_for_ip_is_woken_by_the_first_list() -> None:
    cache = _cache()
    waiter = asyncio.create_task(cache.wait_for_ip("10.0.0.7", timeout=60))
    await asyncio.sleep(0)
    cache._replace([pod("p", ips=("10.0.0.7",))])
    assert (await waiter) is not None


async def test_wait_for_ip_gives_up_after_the_timeout() -> None:
    cache = _cache()
    assert await cache.wait_for_ip("10.0.0.7", timeout=0.01) is None
    assert not cache._waiters


async def test_wait_for_ip_raises_when_ambiguous() -> None:
    cache = _cache()
    waiter = asyncio.create_task(cache.wait_for_ip("10.0.0.1", timeout=60))
    await asyncio.sleep(0)
    cache._replace([pod("x", role="a"), pod("y", role="b")])
    with pytest.raises(AmbiguousPodIP):
        await waiter


def test_announcements_only_for_pods_with_a_role_when_new_or_changed() -> None:
    cache = _cache()
    cache._replace([pod("a", role="r1"), pod("norole", ips=("10.0.0.2",))])
    assert [p.name for p in _drain(cache.announcements)] == ["a"]
    cache._apply(MODIFIED, pod("a", role="r1", phase="Running", ips=("10.0.0.1",)))
    cache._replace([pod("a", role="r1")])
    assert _drain(cache.announcements) == []
    cache._apply(MODIFIED, pod("a", role="r2"))
    assert [p.role for p in _drain(cache.announcements)] == ["r2"]


def test_full_announcement_queue_drops_and_counts() -> None:
    cache = _cache(announce_buffer=2)
    before = _dropped()
    cache._replace([pod(f"p{i}", ips=(f"10.0.1.{i}",), role="r") for i in range(5)])
    assert cache.announcements.qsize() == 2
    assert _dropped() - before == 3
