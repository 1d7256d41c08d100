"""Emulator endurance: the Kubernetes API emulator keeps its speed as requests pile up.

The `kmock` library was measured slowing with every request it had served; the
emulator must not (issue 2). One client process drives the emulator (in the stand-ins
process) with a fixed mix - GET a pod, list a namespace with a label selector, PATCH
a pod's labels (which writes history) - and times a batch of that mix while the
emulator is fresh, then again after many more requests of the same mix. The baseline is
the fresh batch measured in the same run; the ratio is late ÷ fresh (1.00x = no
slow-down).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import BenchError
from bench.report import Figure, print_table
from bench.standins import standins_stack

NAMESPACE = "bench"


@dataclass(frozen=True, kw_only=True)
class EmulatorSizes:
    pods: int
    batch: int
    """Requests in one timed batch."""
    pile: int
    """Requests served between the fresh and the late batch."""
    rounds: int


FULL = EmulatorSizes(pods=1_000, batch=3_000, pile=60_000, rounds=3)
QUICK = EmulatorSizes(pods=50, batch=300, pile=1_500, rounds=1)


async def _mix(session: aiohttp.ClientSession, url: str, *, count: int, pods: int,
               offset: int) -> float:
    """``count`` requests of the mix, 8 at a time; the seconds they took."""
    base = f"{url}/api/v1/namespaces/{NAMESPACE}/pods"
    queue = list(range(offset, offset + count))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            name = f"pod-{i % pods}"
            kind = i % 3
            if kind == 0:
                request = session.get(f"{base}/{name}")
            elif kind == 1:
                request = session.get(base, params={"labelSelector": "team=team-1", "limit": "20"})
            else:
                request = session.patch(
                    f"{base}/{name}", json={"metadata": {"labels": {"n": str(i)}}},
                    headers={"Content-Type": "application/merge-patch+json"})
            async with request as response:
                await response.read()
                if response.status != 200:
                    raise BenchError(f"emulator answered {response.status} to request {i}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(8)))
    return time.perf_counter() - start


async def _measure(url: str, sizes: EmulatorSizes) -> tuple[float, float]:
    async with aiohttp.ClientSession() as session:
        fresh = min([await _mix(session, url, count=sizes.batch, pods=sizes.pods, offset=0)
                     for _ in range(sizes.rounds)])
        await _mix(session, url, count=sizes.pile, pods=sizes.pods, offset=sizes.batch)
        late = min([await _mix(session, url, count=sizes.batch, pods=sizes.pods, offset=0)
                    for _ in range(sizes.rounds)])
    return fresh, late


def run(*, quick: bool, workdir: Path) -> int:
    sizes = QUICK if quick else FULL
    with standins_stack(workdir, "--no-sts", certs=False) as stack:
        stack.create_namespace(NAMESPACE, permitted=".*")
        stack.remote("bench").pods(namespace=NAMESPACE, count=sizes.pods)
        fresh, late = asyncio.run(_measure(stack.kube_url, sizes))
    served = sizes.batch * sizes.rounds + sizes.pile
    print_table(
        f"Emulator endurance: the same {sizes.batch}-request mix fresh and after "
        f"{served:,} requests",
        "the fresh batch, same run",
        [Figure(name=f"mix after {served:,} requests: requests/s", kiam=sizes.batch / late,
                baseline=sizes.batch / fresh, unit="/s", higher_is_better=True)],
    )
    return 0
