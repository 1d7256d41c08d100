"""NamespaceCache against the Kubernetes API emulator."""

from __future__ import annotations

import asyncio

from kiam.k8s.client import KubeClient
from kiam.k8s.model import NamespaceInfo
from kiam.k8s.namespace_cache import NamespaceCache
from kiam_testbed.kube import KubeEmulator
from tests.k8s.conftest import WATCH, caught_up, running

PERMITTED = "iam.amazonaws.com/permitted"


async def test_permitted_follows_the_annotation(kube: KubeEmulator, client: KubeClient) -> None:
    kube.create_namespace("team", annotations={PERMITTED: "arn:aws:iam::1:role/a"})
    cache = NamespaceCache(client, options=WATCH)
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
    cache = NamespaceCache(client, options=WATCH)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        waiter = asyncio.create_task(cache.wait_for_namespace("late", timeout=10))
        await asyncio.sleep(0)
        assert not waiter.done()
        kube.create_namespace("late", annotations={PERMITTED: "x"})
        info = await waiter
        assert info is not None and info.permitted == "x"
        assert await cache.wait_for_namespace("never", timeout=0.05) is None


async def test_annotation_changes_are_reported(kube: KubeEmulator, client: KubeClient) -> None:
    kube.create_namespace("team", annotations={PERMITTED: "a"})
    changed: list[str] = []
    cache = NamespaceCache(
        client, options=WATCH,
        on_annotations_changed=lambda info: changed.append(info.name),
    )
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        kube.create_namespace("new", annotations={PERMITTED: "a"})
        kube.patch("namespaces", "", "team", {"metadata": {"labels": {"tier": "1"}}})
        await caught_up(kube, cache.watch, "namespaces")
        assert changed == []  # a new namespace and a label change are not annotation changes
        kube.patch("namespaces", "", "team", {"metadata": {"annotations": {"touched": "1"}}})
        await caught_up(kube, cache.watch, "namespaces")
        assert changed == ["team"]
        # a re-list that finds changed annotations reports them too
        cache._replace([NamespaceInfo(name="team", permitted="a", annotations_digest=1)])
        assert changed == ["team", "team"]


async def test_listeners_hear_new_changed_and_gone_namespaces(
    kube: KubeEmulator, client: KubeClient
) -> None:
    kube.create_namespace("team", annotations={PERMITTED: "a"})
    heard: list[str] = []
    cache = NamespaceCache(client, options=WATCH)
    cache.add_listener(heard.append)
    async with running(cache.run()):
        await asyncio.wait_for(cache.synced.wait(), 5)
        assert "team" in heard  # the first list
        heard.clear()
        kube.patch("namespaces", "", "team", {"metadata": {"labels": {"tier": "1"}}})
        kube.patch("namespaces", "", "team", {"metadata": {"annotations": {PERMITTED: "b"}}})
        kube.create_namespace("new")
        await caught_up(kube, cache.watch, "namespaces")
        assert heard == ["team", "new"]  # the label change is not a change of the expression
        heard.clear()
        cache._replace([])
        assert sorted(heard) == sorted(info["metadata"]["name"] for info in kube.list("namespaces"))
