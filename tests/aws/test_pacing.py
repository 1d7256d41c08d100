"""Pacer on the event loop's real clock: many callers wait, one timer paces them."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from kiam.aws.budget import Priority
from kiam.aws.errors import StsAccessDenied, StsThrottled
from kiam.aws.pacing import Pacer


async def test_many_waiters_are_served_at_the_rate_in_priority_order() -> None:
    pacer = Pacer.create(qps=50, burst=1)
    served: list[str] = []

    async def call(name: str, priority: Priority, deadline: float = 0.0) -> None:
        await pacer.turn(priority, deadline=deadline)
        served.append(name)

    await pacer.turn(Priority.POD)  # the burst: the bucket is empty from here
    started = time.monotonic()
    tasks = [asyncio.create_task(call(f"prefetch-{i}", Priority.PREFETCH)) for i in range(5)]
    tasks += [asyncio.create_task(call("refresh-late", Priority.REFRESH, 9.0)),
              asyncio.create_task(call("refresh-early", Priority.REFRESH, 1.0)),
              asyncio.create_task(call("pod", Priority.POD))]
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    assert served == ["pod", "refresh-early", "refresh-late",
                      *(f"prefetch-{i}" for i in range(5))]
    assert 8 / 50 * 0.9 <= elapsed < 2.0  # paced at 50/s, not all at once
    assert pacer.budget.waiting == 0
    count = REGISTRY.get_sample_value("kiam_sts_budget_wait_seconds_count",
                                      {"priority": "prefetch"})
    assert count is not None and count >= 5


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_is_served() -> None:
    pacer = Pacer.create(qps=20, burst=1)
    await pacer.turn(Priority.POD)
    first = asyncio.create_task(pacer.turn(Priority.POD))
    second = asyncio.create_task(pacer.turn(Priority.PREFETCH))
    await asyncio.sleep(0)
    assert pacer.budget.waiting == 2
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(2):
        ticket = await second
    assert ticket.granted and pacer.budget.waiting == 0
    pacer.unused(ticket)
    assert pacer.budget.tokens(now=time.time()) >= 1


def test_only_throttling_slows_down_and_success_speeds_up() -> None:
    pacer = Pacer.create(qps=10, burst=1)
    pacer.answered(StsAccessDenied("no", code="AccessDenied"))
    assert pacer.budget.rate == 10
    pacer.answered(StsThrottled("slow down", code="Throttling"))
    assert pacer.budget.rate == 5
    assert REGISTRY.get_sample_value("kiam_sts_budget_rate") == 5
    pacer.answered(None)
    assert pacer.budget.rate == 5.5
