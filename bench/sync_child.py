"""One sync measurement in a fresh process: ``python -m bench.sync_child --kubeconfig PATH
--mode kiam|baseline``; prints ``{"seconds", "rss_before", "rss_after", "pods"}`` as JSON.

- ``kiam``: a real :class:`~kiam.k8s.pod_cache.PodCache` lists every pod through
  :class:`~kiam.k8s.client.KubeClient` and indexes them (``ListWatch.relist``, exactly what
  the server's first sync does: pages of 500, each decoded and dropped).
- ``baseline``: the same pages fetched through the same client and ``orjson.loads``-ed;
  the decoded pod dicts are kept (what a cache of whole pod objects would hold).

A fresh process per measurement so one measurement's garbage and allocator arenas do not
count in the next. Everything imported and the client connected before "before".
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from typing import Any

import orjson

from kiam.k8s.client import KubeClient
from kiam.k8s.pod_cache import PODS_PATH, PodCache
from kiam.k8s.watching import WatchOptions

PAGE = 500  # as ListWatch's default page size


def rss_bytes() -> int:
    """VmRSS of this process, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _baseline(client: KubeClient) -> tuple[int, list[Any]]:
    items: list[Any] = []
    params: dict[str, str | int | bool] = {"limit": PAGE}
    while True:
        body = await client.list_raw(PODS_PATH, params)
        page = orjson.loads(body)
        del body
        items.extend(page.get("items") or ())
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return len(items), items
        params["continue"] = token


async def _kiam(client: KubeClient) -> tuple[int, PodCache]:
    cache = PodCache(client, options=WatchOptions(resync_interval=0), announce_buffer=1000)
    await cache.watch.relist()
    return len(cache), cache


async def measure(kubeconfig: str, mode: str) -> dict[str, float]:
    client = await KubeClient.create(kubeconfig)
    try:
        # warm the connection and the code paths on a tiny page, outside the measurement
        await client.list_raw(PODS_PATH, {"limit": 1})
        gc.collect()
        before = rss_bytes()
        start = time.perf_counter()
        count, keep = await (_kiam(client) if mode == "kiam" else _baseline(client))
        seconds = time.perf_counter() - start
        gc.collect()
        after = rss_bytes()
        del keep
    finally:
        await client.close()
    return {"seconds": seconds, "rss_before": before, "rss_after": after, "pods": count}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_child")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--mode", choices=("kiam", "baseline"), required=True)
    args = parser.parse_args()
    result = asyncio.run(measure(args.kubeconfig, args.mode))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
