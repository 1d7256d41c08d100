"""The STS budget: a cold start of N roles (one pod each) against an STS stand-in that
throttles beyond L calls/s per account, as STS does.

Run 1, ``--sts-qps L`` with ``--sts-burst`` 10% below the stand-in's burst, as
docs/sts.md advises (kiam counts a call when it leaves, STS when it arrives, so equal
buckets leave nothing for latency jitter): every role must be cached with zero
Throttling answers, in about the ideal time (N - L) / L. Run 2, the budget set above the
stand-in's limit (``--sts-qps 2L``): the stand-in throttles, the budget halves its rate
and each throttled key backs off; throttled answers are counted and the fill time printed
beside the same ideal. Baseline: the ideal fill time, (N - L) / L seconds: the
stand-in's burst of L at once, then L a second, the fastest it allows. Beside it, the
machine's own ceiling: the same cold start with neither limit (an unlimited stand-in, a
budget far above what the processes can do), so a fill time above the ideal can be read
as the budget's doing or the machine's.

Exit status: non-zero when a role was not cached, when a pod needed a second STS call, or
when the paced run saw a Throttling answer; never because of a timing.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from pathlib import Path

from bench.coldstart import _channel, _fetch_all, _wait_serving
from bench.pods import pod_ip
from bench.report import Figure, print_table, print_values
from bench.standins import bench_call, standins_stack
from kiam_testbed.stack import Stack

NAMESPACE = "budget"


@dataclass(frozen=True, kw_only=True)
class BudgetSizes:
    roles: int
    limit: int
    """The stand-in's calls/s per account, and its burst."""


FULL = BudgetSizes(roles=2000, limit=50)
QUICK = BudgetSizes(roles=100, limit=50)


@dataclass(frozen=True, kw_only=True)
class FillResult:
    qps: int
    seconds: float
    throttled: int
    successful: int
    served_without_call: bool


async def _measure(stack: Stack, sizes: BudgetSizes) -> FillResult:
    bench = stack.remote("bench", timeout=3 * sizes.roles / sizes.limit + 120)
    call = functools.partial(bench_call, bench)
    channel = _channel(stack)
    try:
        await _wait_serving(channel)
        filled = await call("coldstart", namespace=NAMESPACE, count=sizes.roles,
                            roles=sizes.roles)
        after_fill = await call("sts_calls")
        pods = [(pod_ip(i), f"cold-role-{i}") for i in range(sizes.roles)]
        await _fetch_all(channel, pods)
        after_get = await call("sts_calls")
    finally:
        await channel.close(grace=None)
    return FillResult(qps=0, seconds=float(str(filled["seconds"])),
                      throttled=int(str(after_get["throttled"])),
                      successful=int(str(after_fill["successful"])),
                      served_without_call=after_get["calls"] == after_fill["calls"])


def _fill(workdir: Path, sizes: BudgetSizes, *, qps: int, burst: int, limited: bool = True,
          extra: tuple[str, ...] = ()) -> FillResult:
    limit = sizes.limit if limited else 0
    with standins_stack(workdir, "--sts-rate-limit", str(limit),
                        "--sts-burst", str(limit)) as stack:
        stack.create_namespace(NAMESPACE, permitted=".*")
        stack.start_server(extra=("--sts-qps", str(qps), "--sts-burst", str(burst), *extra))
        result = asyncio.run(_measure(stack, sizes))
    return FillResult(qps=qps, seconds=result.seconds, throttled=result.throttled,
                      successful=result.successful,
                      served_without_call=result.served_without_call)


def headroom(burst: int) -> int:
    """The ``--sts-burst`` docs/sts.md advises for an account burst: 10% below it."""
    return max(1, burst * 9 // 10)


def run(*, quick: bool, workdir: Path) -> int:
    sizes = QUICK if quick else FULL
    ideal = (sizes.roles - sizes.limit) / sizes.limit  # the stand-in's burst, then its rate
    paced_burst = headroom(sizes.limit)
    paced = _fill(workdir / "paced", sizes, qps=sizes.limit, burst=paced_burst)
    above = _fill(workdir / "above", sizes, qps=2 * sizes.limit, burst=sizes.limit)
    ceiling = _fill(workdir / "ceiling", sizes, qps=100 * sizes.limit,
                    burst=100 * sizes.limit, limited=False)
    print_table(f"STS budget: cold start of {sizes.roles:,} roles against a stand-in "
                f"limited to {sizes.limit} calls/s (burst {sizes.limit}); the paced run "
                f"with --sts-burst {paced_burst}",
                f"the ideal fill time, ({sizes.roles:,} - {sizes.limit}) / {sizes.limit} "
                "calls/s", [
                    Figure(f"fill time, --sts-qps {r.qps}", r.seconds, ideal, "s", False)
                    for r in (paced, above)
                ])
    print_table("STS budget: the same cold start against this machine's ceiling",
                "no limit on either side (unlimited stand-in, "
                f"--sts-qps {ceiling.qps}): {ceiling.seconds:.1f}s", [
                    Figure(f"fill time, --sts-qps {r.qps}", r.seconds, ceiling.seconds, "s",
                           False)
                    for r in (paced, above)
                ])
    rows: list[tuple[str, str]] = []
    for r in (paced, above):
        rows += [(f"--sts-qps {r.qps}: fill time", f"{r.seconds:.1f}s"),
                 (f"--sts-qps {r.qps}: ideal", f"{ideal:.1f}s"),
                 (f"--sts-qps {r.qps}: ratio", f"{r.seconds / ideal:.2f}x"),
                 (f"--sts-qps {r.qps}: throttled answers", f"{r.throttled}"),
                 (f"--sts-qps {r.qps}: roles cached", f"{r.successful}/{sizes.roles}")]
    print_values("STS budget: figures", rows)
    for r in (paced, above):
        print(f"STS budget --sts-qps {r.qps}: fill {r.seconds:.1f}s, ideal {ideal:.1f}s, "
              f"ratio {r.seconds / ideal:.2f}x, throttled {r.throttled}", flush=True)
    ok = True
    print(f"STS budget ceiling (no limits): fill {ceiling.seconds:.1f}s, "
          f"{sizes.roles / ceiling.seconds:.0f} calls/s", flush=True)
    for r in (paced, above, ceiling):
        if r.successful < sizes.roles or not r.served_without_call:
            print(f"error: --sts-qps {r.qps}: {r.successful}/{sizes.roles} roles cached; "
                  f"served without another call: {r.served_without_call}")
            ok = False
    if paced.throttled:
        print(f"error: --sts-qps {paced.qps} (at the stand-in's rate, burst "
              f"{paced_burst}) saw {paced.throttled} "
              "Throttling answers")
        ok = False
    return 0 if ok else 1
