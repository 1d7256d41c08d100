"""CredentialCache with a fake clock and a fake gateway: pure, no sockets, no real time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from kiam.aws.credential_cache import CredentialCache
from kiam.aws.credentials import CredentialKey
from kiam.aws.errors import StsAccessDenied, StsThrottled, StsUnavailable
from tests.aws.cache_fakes import (
    DUE,
    DURATION,
    REFRESH,
    FakeClock,
    FakeGateway,
    key,
    new_cache,
    sample,
    settle,
    until,
)


@pytest.fixture
async def cache(clock: FakeClock, gateway: FakeGateway) -> AsyncIterator[CredentialCache]:
    cache = new_cache(clock, gateway)
    yield cache
    await cache.close()


@pytest.fixture
async def running(cache: CredentialCache) -> AsyncIterator[CredentialCache]:
    task = asyncio.create_task(cache.run(), name="cache-run")
    await settle()
    yield cache
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_hit_after_first_fetch(cache: CredentialCache, gateway: FakeGateway) -> None:
    hits, misses = sample("kiam_sts_cache_hit_total"), sample("kiam_sts_cache_miss_total")
    first = await cache.get(key())
    second = await cache.get(key())
    assert first is second
    assert gateway.calls == [key()]
    assert sample("kiam_sts_cache_hit_total") == hits + 1
    assert sample("kiam_sts_cache_miss_total") == misses + 1


async def test_keys_differ_by_session_and_external_id(
    cache: CredentialCache, gateway: FakeGateway
) -> None:
    await cache.get(key(external_id="a"))
    await cache.get(key(external_id="b"))
    await cache.get(key(external_id="a"))
    assert gateway.calls == [key(external_id="a"), key(external_id="b")]


async def test_single_flight(cache: CredentialCache, gateway: FakeGateway) -> None:
    gateway.gate_all = asyncio.Event()
    waiters = [asyncio.create_task(cache.get(key())) for _ in range(100)]
    await settle()
    assert len(gateway.calls) == 1
    gateway.gate_all.set()
    results = await asyncio.gather(*waiters)
    assert {r.access_key_id for r in results} == {"ASIA1"}
    assert len(gateway.calls) == 1


async def test_error_reaches_every_waiter_and_is_not_cached(
    cache: CredentialCache, gateway: FakeGateway
) -> None:
    gateway.gate_all = asyncio.Event()
    gateway.failures = [StsAccessDenied("denied")]
    waiters = [asyncio.create_task(cache.get(key())) for _ in range(5)]
    await settle()
    gateway.gate_all.set()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(o, StsAccessDenied) for o in outcomes)
    assert len(gateway.calls) == 1
    # the next request tries again
    assert (await cache.get(key())).access_key_id == "ASIA2"
    assert len(gateway.calls) == 2


async def test_cancelled_waiter_does_not_cancel_the_fetch(
    cache: CredentialCache, gateway: FakeGateway
) -> None:
    gateway.gate_all = asyncio.Event()
    leaving = asyncio.create_task(cache.get(key()))
    staying = asyncio.create_task(cache.get(key()))
    await settle()
    leaving.cancel()
    await settle()
    gateway.gate_all.set()
    assert (await staying).access_key_id == "ASIA1"
    assert leaving.cancelled()
    assert len(gateway.calls) == 1
    assert key() in cache


async def test_fetch_completes_when_its_only_waiter_is_cancelled(
    cache: CredentialCache, gateway: FakeGateway
) -> None:
    gateway.gate_all = asyncio.Event()
    leaving = asyncio.create_task(cache.get(key()))
    await settle()
    leaving.cancel()
    gateway.gate_all.set()
    await until(lambda: key() in cache)
    assert (await cache.get(key())).access_key_id == "ASIA1"
    assert len(gateway.calls) == 1


async def test_never_serves_below_session_refresh(
    cache: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    await cache.get(key())
    clock.advance(DURATION - REFRESH - 1)  # 301s left
    assert (await cache.get(key())).access_key_id == "ASIA1"
    clock.advance(1)  # exactly 300s left: too little
    fresh = await cache.get(key())
    assert fresh.access_key_id == "ASIA2"
    assert fresh.remaining(clock.now()) > timedelta(seconds=REFRESH)
    assert len(gateway.calls) == 2


async def test_refreshes_ahead_while_in_use(
    running: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    running.set_keys_in_use(lambda: {key()})
    await running.get(key())
    clock.advance(DUE - 1)
    await settle()
    assert len(gateway.calls) == 1
    clock.advance(1)
    await until(lambda: len(gateway.calls) == 2)
    await settle()
    # the refreshed credentials are served from the cache, no further call
    assert (await running.get(key())).access_key_id == "ASIA2"
    assert len(gateway.calls) == 2
    # and the next refresh is scheduled from the new expiry
    clock.advance(DUE)
    await until(lambda: len(gateway.calls) == 3)


async def test_drops_keys_no_pod_uses(
    running: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    in_use = {key("a"), key("b")}
    running.set_keys_in_use(lambda: in_use)
    await running.get(key("a"))
    await running.get(key("b"))
    in_use.discard(key("b"))
    clock.advance(DUE)
    await until(lambda: key("b") not in running)
    await until(lambda: len(gateway.calls) == 3)
    assert gateway.calls[-1] == key("a")
    assert key("a") in running
    assert len(running) == 1


async def test_without_keys_in_use_everything_is_dropped(
    running: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    await running.get(key())
    clock.advance(DUE)
    await until(lambda: len(running) == 0)
    assert len(gateway.calls) == 1


async def test_loop_sleeps_until_the_next_deadline(
    running: CredentialCache, clock: FakeClock
) -> None:
    # nothing cached: sleep until woken
    assert clock.waits == [None]
    running.set_keys_in_use(lambda: {key()})
    await running.get(key())
    await settle()
    # storing woke the loop, which now sleeps until the refresh is due
    assert clock.waits == [None, DUE]
    clock.advance(100)
    await settle()
    assert clock.waits == [None, DUE, DUE - 100]


async def test_failed_refresh_is_retried_later_not_in_a_busy_loop(
    running: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    running.set_keys_in_use(lambda: {key()})
    await running.get(key())
    gateway.failures = [StsThrottled("slow down")]
    clock.advance(DUE)
    await until(lambda: len(gateway.calls) == 2)
    await settle()
    assert len(gateway.calls) == 2
    # the loop sleeps until the retry is due instead of spinning
    assert clock.waits[-1] == pytest.approx(10)
    assert len(clock.waits) < 10
    clock.advance(10)  # retry_after_failure
    await until(lambda: len(gateway.calls) == 3)
    await settle()
    assert (await running.get(key())).access_key_id == "ASIA3"


async def test_prefetch_is_bounded_by_fetchers(
    cache: CredentialCache, gateway: FakeGateway
) -> None:
    gateway.gate_all = asyncio.Event()
    keys = [key(f"role{n}") for n in range(10)]
    for k in keys:
        cache.prefetch(k)
        cache.prefetch(k)  # a repeat while queued is a no-op
    await settle()
    assert gateway.in_flight == 3
    gateway.gate_all.set()
    await until(lambda: len(cache) == 10)
    assert sorted(gateway.calls, key=str) == sorted(keys, key=str)
    assert gateway.max_in_flight == 3


async def test_prefetch_skips_fresh_keys(cache: CredentialCache, gateway: FakeGateway) -> None:
    await cache.get(key())
    cache.prefetch(key())
    await settle()
    assert len(gateway.calls) == 1


async def test_get_joins_a_running_prefetch(cache: CredentialCache, gateway: FakeGateway) -> None:
    gateway.gate_all = asyncio.Event()
    cache.prefetch(key())
    await settle()
    waiter = asyncio.create_task(cache.get(key()))
    await settle()
    gateway.gate_all.set()
    assert (await waiter).access_key_id == "ASIA1"
    assert len(gateway.calls) == 1


async def test_get_does_not_queue_behind_prefetches(
    cache: CredentialCache, gateway: FakeGateway
) -> None:
    busy = [key(f"busy{n}") for n in range(5)]
    for k in busy:
        gateway.gates[k] = asyncio.Event()
        cache.prefetch(k)
    await settle()
    assert gateway.in_flight == 3  # every fetcher is taken
    assert (await cache.get(key())).access_key_id == "ASIA4"
    for gate in gateway.gates.values():
        gate.set()
    await until(lambda: len(cache) == 6)


async def test_failed_prefetch_is_not_cached(cache: CredentialCache, gateway: FakeGateway) -> None:
    gateway.failures = [StsUnavailable("down")]
    cache.prefetch(key())
    await until(lambda: len(gateway.calls) == 1)
    await settle()
    assert key() not in cache
    assert (await cache.get(key())).access_key_id == "ASIA2"


async def test_close_fails_waiters_cleanly(cache: CredentialCache, gateway: FakeGateway) -> None:
    gateway.gate_all = asyncio.Event()
    waiter = asyncio.create_task(cache.get(key()))
    cache.prefetch(key("other"))
    await settle()
    await cache.close()
    with pytest.raises(StsUnavailable, match="shut down"):
        await waiter
    with pytest.raises(StsUnavailable):
        await cache.get(key("third"))


async def test_logs_name_the_key_but_never_the_secret(
    cache: CredentialCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = await cache.get(key())
    logged = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert credentials.access_key_id in logged
    assert key().role_arn in logged
    assert credentials.secret_access_key not in logged
    assert credentials.session_token not in logged


def test_refresh_must_be_shorter_than_duration(gateway: FakeGateway) -> None:
    with pytest.raises(ValueError, match="shorter"):
        CredentialCache(gateway, session_duration=300, session_refresh=300, fetchers=1)


async def test_a_failing_keys_in_use_keeps_keys(
    running: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    def broken() -> set[CredentialKey]:
        raise RuntimeError("pod cache exploded")

    running.set_keys_in_use(broken)
    await running.get(key())
    clock.advance(DUE)
    await until(lambda: len(gateway.calls) == 2)
    assert key() in running
