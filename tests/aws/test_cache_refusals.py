"""CredentialCache with a RefusalMemory: a permanent refusal is answered from memory for
its window, with a fake clock and a fake gateway (no sockets, no real time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kiam.aws.credential_cache import CredentialCache
from kiam.aws.errors import StsAccessDenied, StsThrottled
from kiam.aws.refusals import RefusalMemory
from tests.aws.test_credential_cache import (
    DUE,
    DURATION,
    MARGIN,
    REFRESH,
    FakeClock,
    FakeGateway,
    key,
    sample,
    settle,
    until,
)

TTL = 60.0


def denied() -> StsAccessDenied:
    return StsAccessDenied("STS AssumeRole reader: AccessDenied (HTTP 403): no trust",
                           role_arn=key().role_arn, code="AccessDenied")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gateway(clock: FakeClock) -> FakeGateway:
    return FakeGateway(clock)


@pytest.fixture
async def cache(clock: FakeClock, gateway: FakeGateway) -> AsyncIterator[CredentialCache]:
    cache = CredentialCache(
        gateway,
        session_duration=DURATION,
        session_refresh=REFRESH,
        fetchers=3,
        clock=clock,
        refresh_margin=MARGIN,
        refusals=RefusalMemory(ttl=TTL),
    )
    yield cache
    await cache.close()


async def test_refusal_is_answered_from_memory_until_the_window_ends(
    cache: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    gateway.failures = [denied()]
    with pytest.raises(StsAccessDenied) as first:
        await cache.get(key())
    assert first.value.remembered is False
    hits = sample("kiam_sts_refusal_hits_total")
    for _ in range(20):
        with pytest.raises(StsAccessDenied) as again:
            await cache.get(key())
        assert again.value.remembered is True
        assert str(again.value) == str(first.value)
    assert len(gateway.calls) == 1
    assert sample("kiam_sts_refusal_hits_total") == hits + 20
    assert sample("kiam_sts_refusals_remembered") == 1
    # prefetch does not call STS for a refused key either
    cache.prefetch(key())
    await settle()
    assert len(gateway.calls) == 1
    clock.advance(TTL)
    assert (await cache.get(key())).access_key_id == "ASIA2"


async def test_throttling_is_not_remembered(cache: CredentialCache, gateway: FakeGateway) -> None:
    gateway.failures = [StsThrottled("slow down", code="Throttling")]
    with pytest.raises(StsThrottled):
        await cache.get(key())
    assert (await cache.get(key())).access_key_id == "ASIA2"


async def test_forget_refusals_asks_sts_at_once(
    cache: CredentialCache, gateway: FakeGateway
) -> None:
    gateway.failures = [denied()]
    with pytest.raises(StsAccessDenied):
        await cache.get(key())
    cache.forget_refusals([key("other")])
    with pytest.raises(StsAccessDenied):
        await cache.get(key())
    assert len(gateway.calls) == 1
    cache.forget_refusals([key()])
    assert sample("kiam_sts_refusals_remembered") == 0
    assert (await cache.get(key())).access_key_id == "ASIA2"


async def test_a_refused_prefetch_is_reported_by_the_first_request(
    cache: CredentialCache, gateway: FakeGateway
) -> None:
    gateway.failures = [denied()]
    cache.prefetch(key())
    await until(lambda: len(gateway.calls) == 1)
    await settle()
    with pytest.raises(StsAccessDenied) as first:
        await cache.get(key())
    assert first.value.remembered is False  # nobody reported this window yet
    with pytest.raises(StsAccessDenied) as second:
        await cache.get(key())
    assert second.value.remembered is True
    assert len(gateway.calls) == 1


async def test_a_refused_refresh_waits_for_the_window_and_serves_what_it_holds(
    cache: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    task = asyncio.create_task(cache.run(), name="cache-run")
    await settle()
    try:
        cache.set_keys_in_use(lambda: {key()})
        await cache.get(key())
        gateway.failures = [denied()]
        clock.advance(DUE)
        await until(lambda: len(gateway.calls) == 2)
        await settle()
        # cached credentials still hold: served, no further STS call
        assert (await cache.get(key())).access_key_id == "ASIA1"
        assert len(gateway.calls) == 2
        # the loop sleeps until the window ends instead of spinning
        assert clock.waits[-1] == pytest.approx(TTL)
        assert len(clock.waits) < 10
        clock.advance(TTL)
        await until(lambda: len(gateway.calls) == 3)
        await settle()
        assert (await cache.get(key())).access_key_id == "ASIA3"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
