"""Server sync: time and resident memory to list+index N pods into the real PodCache.

The emulator runs in the stand-ins process (its CPU is not counted); every measurement
runs in a fresh ``bench.sync_child`` process that reports its own time and VmRSS. Baseline:
the same pages fetched and ``orjson.loads``-ed, the decoded dicts kept. Each side is
measured ``repeats`` times, alternating, and the best (lowest) time and memory are kept:
on a shared machine noise only ever adds.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench import ROOT, BenchError
from bench.report import Figure, fmt_bytes, print_table, print_values
from bench.standins import standins_stack
from kiam_testbed.commands import isolated_env

NAMESPACE = "bench"


@dataclass(frozen=True, kw_only=True)
class Sample:
    seconds: float
    bytes_per_pod: float


@dataclass(frozen=True, kw_only=True)
class SyncSizes:
    pods: tuple[int, ...]
    repeats: int


FULL = SyncSizes(pods=(10_000, 50_000), repeats=3)
QUICK = SyncSizes(pods=(200,), repeats=1)


def _measure(kubeconfig: Path, mode: str, pods: int) -> Sample:
    done = subprocess.run(
        [sys.executable, "-m", "bench.sync_child", "--kubeconfig", str(kubeconfig),
         "--mode", mode],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT, env=isolated_env(),
    )
    if done.returncode != 0:
        raise BenchError(f"sync_child {mode} failed: {done.stderr[-2000:]}")
    result = orjson.loads(done.stdout)
    if result["pods"] != pods:
        raise BenchError(f"sync_child {mode} saw {result['pods']} pods, expected {pods}")
    grown = max(0.0, result["rss_after"] - result["rss_before"])
    return Sample(seconds=result["seconds"], bytes_per_pod=grown / pods)


def _best(samples: list[Sample]) -> Sample:
    return Sample(seconds=min(s.seconds for s in samples),
                  bytes_per_pod=min(s.bytes_per_pod for s in samples))


def run(*, quick: bool, workdir: Path) -> int:
    sizes = QUICK if quick else FULL
    figures: list[Figure] = []
    headline: list[tuple[str, str]] = []
    grown: list[tuple[int, float]] = []  # (pods, kiam's RSS growth) per size
    with standins_stack(workdir / "sync", "--no-sts", certs=False) as stack:
        kubeconfig = stack.kubeconfig
        stack.create_namespace(NAMESPACE, permitted=".*")
        created = 0
        for pods in sizes.pods:
            stack.remote("bench").pods(namespace=NAMESPACE, count=pods - created, start=created)
            created = pods
            kiam: list[Sample] = []
            base: list[Sample] = []
            for i in range(sizes.repeats):
                order = ("kiam", "baseline") if i % 2 == 0 else ("baseline", "kiam")
                for mode in order:
                    (kiam if mode == "kiam" else base).append(
                        _measure(kubeconfig, mode, pods))
            k, b = _best(kiam), _best(base)
            figures += [
                Figure(f"list+index {pods:,} pods: time", k.seconds, b.seconds, "s", False),
                Figure(f"list+index {pods:,} pods: RSS per pod", k.bytes_per_pod,
                       b.bytes_per_pod, "B", False),
            ]
            grown.append((pods, k.bytes_per_pod * pods))
            headline = [
                (f"memory per cached pod ({pods:,})", fmt_bytes(k.bytes_per_pod)),
                ("... per decoded pod dict", fmt_bytes(b.bytes_per_pod)),
            ]
            if pods >= 10_000:  # below that, fixed costs swamp the per-pod figure
                headline.append(("50,000 pods in the PodCache",
                                 fmt_bytes(k.bytes_per_pod * 50_000)))
    if len(grown) >= 2:
        # the growth between two sizes leaves out what any list costs once (the page
        # buffers the allocator keeps): the cost of one more pod
        (n0, g0), (n1, g1) = grown[0], grown[-1]
        headline.append((f"marginal per pod ({n0:,} -> {n1:,})",
                         fmt_bytes(max(0.0, g1 - g0) / (n1 - n0))))
    print_table("Server sync: list + index into the PodCache",
                "same pages fetched and orjson.loads-ed, dicts kept", figures)
    print_values("Memory per pod (headline)", headline)
    return 0
