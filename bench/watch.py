"""Watch ingest: MODIFIED pod events per second processed into the PodCache index.

The stand-ins process makes a batch of events first (they wait in the emulator's history),
then the measured side watches from the version before the batch, so the stream runs as
fast as the consumer reads and the emulator's cost of making events is not counted.
The last event of a batch gives a pod a fresh IP: ``PodCache.wait_for_ip`` wakes when
it is indexed, and the events arrive in order, so every earlier one was processed.
Baseline: the same stream read and orjson-decoded by ``KubeClient.watch``, nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError
from bench.report import Figure, print_table
from bench.standins import standins_stack
from kiam.common.net import normalise_ip
from kiam.k8s.client import KubeClient, Params
from kiam.k8s.pod_cache import PODS_PATH, PodCache
from kiam.k8s.watching import WatchOptions
from kiam_testbed.stack import Stack

NAMESPACE = "bench"
_TIMEOUT = 300.0


@dataclass(frozen=True, kw_only=True)
class WatchSizes:
    pods: int
    events: int
    rounds: int


FULL = WatchSizes(pods=10_000, events=20_000, rounds=3)
QUICK = WatchSizes(pods=200, events=200, rounds=1)


async def _kiam_round(cache: PodCache, *, sentinel: str) -> float:
    start = time.perf_counter()
    watching = asyncio.create_task(cache.watch.watch_once(), name="bench-watch")
    try:
        pod = await cache.wait_for_ip(normalise_ip(sentinel), timeout=_TIMEOUT)
        seconds = time.perf_counter() - start
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    if pod is None:
        raise BenchError(f"the PodCache never indexed the sentinel IP {sentinel}")
    return seconds


async def _baseline_round(client: KubeClient, *, since: int, events: int) -> float:
    params: Params = {"resourceVersion": str(since), "allowWatchBookmarks": True,
              "timeoutSeconds": int(_TIMEOUT)}
    seen = 0
    start = time.perf_counter()
    stream = client.watch(PODS_PATH, params, inactivity_timeout=60.0)
    async with contextlib.aclosing(stream):
        async for event in stream:
            if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                seen += 1
                if seen == events:
                    return time.perf_counter() - start
    raise BenchError(f"the watch ended after {seen} of {events} events")


async def _measure(stack: Stack, sizes: WatchSizes) -> tuple[float, float]:
    client = await KubeClient.create(str(stack.kubeconfig))
    kiam_best = base_best = 0.0
    try:
        cache = PodCache(client, options=WatchOptions(resync_interval=0), announce_buffer=1000)
        await cache.watch.relist()
        for i in range(sizes.rounds):
            batch = await asyncio.to_thread(stack.remote("bench").modify, namespace=NAMESPACE,
                                            count=sizes.events, pods=sizes.pods)
            if str(batch["since"]) != cache.watch.resource_version:
                raise BenchError(f"cache at {cache.watch.resource_version}, batch from "
                                 f"{batch['since']}")
            events = int(batch["events"])
            kiam_first = i % 2 == 0
            if not kiam_first:
                base = await _baseline_round(client, since=batch["since"], events=events)
            kiam = await _kiam_round(cache, sentinel=batch["sentinel_ip"])
            if kiam_first:
                base = await _baseline_round(client, since=batch["since"], events=events)
            kiam_best = max(kiam_best, events / kiam)
            base_best = max(base_best, events / base)
    finally:
        await client.close()
    return kiam_best, base_best


def run(*, quick: bool, workdir: Path) -> int:
    sizes = QUICK if quick else FULL
    with standins_stack(workdir / "watch", "--no-sts", "--history-size",
                        str(sizes.events + 1000), certs=False) as stack:
        stack.create_namespace(NAMESPACE, permitted=".*")
        stack.remote("bench").pods(namespace=NAMESPACE, count=sizes.pods)
        kiam, base = asyncio.run(_measure(stack, sizes))
    print_table(
        f"Watch ingest: {sizes.events:,} MODIFIED events over {sizes.pods:,} cached pods",
        "same stream read and orjson-decoded only",
        [Figure("pod events per second", kiam, base, "/s", True)],
    )
    return 0
