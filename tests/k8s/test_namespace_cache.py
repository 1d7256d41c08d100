"""NamespaceCache against the Kubernetes API emulator."""

from __future__ import annotations

import asyncio

from kiam.k8s.client import KubeClient
from kiam.k8s.namespace_cache import NamespaceCache
from kiam_testbed.kube import KubeEmulator
from tests.k8s.conftest import FAST, caught_up, running

PERMITTED = "iam.amazonaws.com/permitted"


async def test_permitted_follows_the_annotation(kube: KubeEmulator, client: KubeClient) -> None:
    kube.create_namespace("team", annotations={PERMITTED: "arn:aws:iam::1:role/a"})
    cache = NamespaceCache(client, resync_interval=0, backoff=FAST)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        assert cache.permitted("team") == "arn:aws:iam::1:role/a"
        assert cache.permitted("default") == ""
        assert cache.permitted("nowhere") is None

        kube.patch("namespaces", "", "team", {"metadata": {"annotations": {PERMITTED: ".*"}}})
        await caught_up(kube, cache.watch, "namespaces")
        assert cache.permitted("team") == ".*"

        kube.patch("namespaces", "", "team", {"metadata": {"annotations": {PERMITTED: None}}})
        await caught_up(kube, cache.watch, "namespaces")
        assert cache.permitted("team") == ""

        kube.delete("namespaces", "", "team")
        await caught_up(kube, cache.watch, "namespaces")
        assert cache.permitted("team") is None


async def test_wait_for_namespace_created_later(kube: KubeEmulator, client: KubeClient) -> None:
    cache = NamespaceCache(client, resync_interval=0, backoff=FAST)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        waiter = asyncio.create_task(cache.wait_for_namespace("late", timeout=10))
        await asyncio.sleep(0)
        assert not waiter.done()
        kube.create_namespace("late", annotations={PERMITTED: "x"})
        info = await waiter
        assert info is not None and info.permitted == "x"
        assert await cache.wait_for_namespace("never", timeout=0.05) is None
