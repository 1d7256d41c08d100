"""CredentialCache with a Pacer: every STS call takes a budget token first, pods before
refreshes before prefetch; throttling slows the budget. Fake clock and gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from kiam.aws.backoff import ThrottleBackoff
from kiam.aws.budget import Priority, StsBudget
from kiam.aws.credential_cache import CredentialCache
from kiam.aws.credentials import CredentialKey
from kiam.aws.errors import StsThrottled
from kiam.aws.pacing import Pacer
from tests.aws.cache_fakes import (
    DUE,
    DURATION,
    MARGIN,
    REFRESH,
    FakeClock,
    FakeGateway,
    key,
    new_cache,
    settle,
    until,
)


def throttled(name: str = "reader") -> StsThrottled:
    return StsThrottled("STS AssumeRole: Throttling (HTTP 400): Rate exceeded",
                        role_arn=key(name).role_arn, code="Throttling")


@pytest.fixture
def pacer(clock: FakeClock) -> Pacer:
    return Pacer(StsBudget(qps=1, burst=1, now=clock.now().timestamp()), clock=clock)


@pytest.fixture
async def cache(
    clock: FakeClock, gateway: FakeGateway, pacer: Pacer
) -> AsyncIterator[CredentialCache]:
    cache = new_cache(clock, gateway, pacer=pacer,
                      backoff=ThrottleBackoff(base=1.0, cap=30.0, rng=lambda: 1.0))
    yield cache
    await cache.close()


async def test_calls_beyond_the_burst_wait_for_the_clock(
    cache: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    for name in ("a", "b", "c"):
        cache.prefetch(key(name))
    await settle()
    assert gateway.calls == [key("a")]  # the burst: one token
    clock.advance(0.5)
    await settle()
    assert len(gateway.calls) == 1
    clock.advance(0.5)
    await until(lambda: len(gateway.calls) == 2)
    clock.advance(1.0)
    await until(lambda: len(gateway.calls) == 3)
    assert gateway.calls == [key("a"), key("b"), key("c")]


async def test_a_pod_goes_before_prefetches_queued_earlier(
    cache: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    for name in ("a", "b", "c"):
        cache.prefetch(key(name))
    await settle()
    pod = asyncio.create_task(cache.get(key("pod")))
    await settle()
    clock.advance(1.0)
    await until(pod.done)
    assert gateway.calls == [key("a"), key("pod")]
    assert pod.result().access_key_id == "ASIA2"


async def test_a_pod_joining_a_queued_prefetch_gets_its_own_turn_first(
    cache: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    cache.prefetch(key("a"))
    cache.prefetch(key("b"))
    await settle()
    pod = asyncio.create_task(cache.get(key("b")))  # b's prefetch waits for a token
    await settle()
    clock.advance(1.0)
    await until(pod.done)
    clock.advance(5.0)
    await settle()
    # one call for b: the prefetch's token went back unused
    assert gateway.calls == [key("a"), key("b")]
    assert pacer_waiting(cache) == 0


def pacer_waiting(cache: CredentialCache) -> int:
    pacer = cache._pacer
    assert pacer is not None
    return pacer.budget.waiting


async def test_refreshes_go_by_deadline_before_prefetch(
    clock: FakeClock, gateway: FakeGateway
) -> None:
    keys = {key("late"), key("early"), key("new")}
    fast = Pacer(StsBudget(qps=100, burst=100, now=clock.now().timestamp()), clock=clock)
    cache = CredentialCache(gateway, session_duration=DURATION, session_refresh=REFRESH,
                            fetchers=3, clock=clock, refresh_margin=MARGIN, pacer=fast,
                            keys_in_use=lambda: keys)
    runner = asyncio.create_task(cache.run())
    try:
        await cache.get(key("late"))  # cached first (the sweep meets it first) ...
        clock.current -= timedelta(seconds=1)
        await cache.get(key("early"))  # ... but these expire a second earlier
        clock.current += timedelta(seconds=1)
        await settle()
        # from the refresh on, one call a second, and the bucket is empty then
        due = (clock.now() + timedelta(seconds=DUE + 1)).timestamp()
        slow = StsBudget(qps=1, burst=1, now=due)
        slow.enqueue(Priority.POD)
        slow.grant(now=due)
        cache._pacer = Pacer(slow, clock=clock)
        clock.advance(DUE + 1)
        await settle()
        cache.prefetch(key("new"))
        await settle()
        for _ in range(3):
            clock.advance(1.0)
            await settle()
        assert gateway.calls[2:] == [key("early"), key("late"), key("new")]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_throttling_slows_the_budget_and_success_speeds_it_up(
    cache: CredentialCache, gateway: FakeGateway, clock: FakeClock, pacer: Pacer
) -> None:
    pacer.budget.qps = pacer.budget._rate = 8.0
    pacer.budget.increase = 2.0
    gateway.failures.append(throttled("a"))
    with pytest.raises(StsThrottled):
        await cache.get(key("a"))
    assert pacer.budget.rate == 4.0
    assert REGISTRY.get_sample_value("kiam_sts_budget_rate") == 4.0
    clock.advance(1.0)
    await cache.get(key("b"))
    assert pacer.budget.rate == 6.0
    assert REGISTRY.get_sample_value("kiam_sts_budget_waiting") == 0


async def test_a_throttled_prefetch_is_fetched_again_after_its_step(
    cache: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    wanted: set[CredentialKey] = {key("a")}
    cache.set_keys_in_use(lambda: wanted)
    runner = asyncio.create_task(cache.run())
    try:
        gateway.failures.append(throttled("a"))
        cache.prefetch(key("a"))
        await until(lambda: len(gateway.calls) == 1)
        await settle()
        assert key("a") not in cache
        clock.advance(0.5)  # within the 1 s step: no call
        await settle()
        assert len(gateway.calls) == 1
        clock.advance(0.6)  # the step is over: fetched again, retry_after_failure or not
        await until(lambda: key("a") in cache)
        assert gateway.calls == [key("a"), key("a")]
        # a key no pod uses any more is not fetched again
        gateway.failures.append(throttled("b"))
        cache.prefetch(key("b"))
        await settle()
        clock.advance(1.0)  # its token
        await until(lambda: len(gateway.calls) == 3)
        clock.advance(5.0)
        await settle()
        clock.advance(5.0)
        await settle()
        assert len(gateway.calls) == 3
        assert key("b") not in cache._wanted
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_closing_cancels_calls_waiting_for_a_token(
    cache: CredentialCache, gateway: FakeGateway, pacer: Pacer
) -> None:
    for name in ("a", "b", "c"):
        cache.prefetch(key(name))
    pod = asyncio.create_task(cache.get(key("pod")))
    await settle()
    assert pacer.budget.waiting == 3
    await cache.close()
    with pytest.raises(Exception, match="shut down"):
        await pod
    assert pacer.budget.waiting == 0
    assert gateway.calls == [key("a")]


async def test_background_calls_are_bounded_by_the_budget_and_pods_are_not(
    clock: FakeClock, gateway: FakeGateway
) -> None:
    pacer = Pacer(StsBudget(qps=100, burst=100, concurrency=2,
                            now=clock.now().timestamp()), clock=clock)
    cache = CredentialCache(gateway, session_duration=DURATION, session_refresh=REFRESH,
                            fetchers=1, clock=clock, refresh_margin=MARGIN, pacer=pacer)
    gateway.gate_all = asyncio.Event()
    try:
        for name in ("a", "b", "c", "d"):
            cache.prefetch(key(name))
        await settle()
        assert gateway.in_flight == 2  # the budget's concurrency, not the fetchers
        pod = asyncio.create_task(cache.get(key("pod")))
        await settle()
        assert gateway.in_flight == 3
        gateway.gate_all.set()
        await until(lambda: len(cache) == 5)
        await settle()
        assert pod.done() and gateway.max_in_flight == 3
        assert pacer.budget.running == 0 and pacer.budget.waiting == 0
    finally:
        await cache.close()
