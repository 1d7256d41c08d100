"""An in-process Kubernetes API emulator on 127.0.0.1 and a real KubeClient for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from kiam.k8s.client import KubeClient
from kiam.k8s.watching import Backoff, ListWatch, WatchOptions
from kiam_testbed.kube import KubeEmulator

# no resync, and fast retries to keep the fault tests short
WATCH = WatchOptions(resync_interval=0, backoff=Backoff(initial=0.01, maximum=0.05))


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator() as emulator:
        yield emulator


@pytest.fixture
async def client(kube: KubeEmulator, tmp_path: Path) -> AsyncIterator[KubeClient]:
    kube_client = await KubeClient.create(str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    yield kube_client
    await kube_client.close()


@contextlib.asynccontextmanager
async def running(*coros: Coroutine[Any, Any, Any]) -> AsyncIterator[list[asyncio.Task[Any]]]:
    """Run the loops for the duration of the block; a loop that died fails the test."""
    tasks = [asyncio.create_task(coro) for coro in coros]
    try:
        yield tasks
    finally:
        crashed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if crashed:
            raise AssertionError(f"a loop died: {crashed[0].exception()!r}")


async def eventually(predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Wait for a condition the cache reaches through its watch (bounded, never timed)."""
    async with asyncio.timeout(timeout):
        # polling is fine here: the predicates read cache state that has no change signal
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def caught_up(kube: KubeEmulator, watch: ListWatch[Any], resource: str = "pods") -> None:
    """Wait until ``watch`` has seen every change made so far (bookmarks carry the version
    past changes to other resources)."""
    target = kube.resource_version

    def seen() -> bool:
        kube.send_bookmark(resource)
        return watch.resource_version is not None and int(watch.resource_version) >= target

    await eventually(seen)
