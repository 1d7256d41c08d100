"""CredentialCache with a RefusalMemory: a permanent refusal is answered from memory for
its window, with a fake clock and a fake gateway (no sockets, no real time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kiam.aws.credential_cache import CredentialCache
from kiam.aws.errors import StsAccessDenied, StsThrottled
from kiam.aws.refusals import RefusalMemory
from tests.aws.cache_fakes import (
    DUE,
    FakeClock,
    FakeGateway,
    key,
    new_cache,
    sample,
    settle,
    until,
)

TTL = 60.0


def denied() -> StsAccessDenied:
    return StsAccessDenied("STS AssumeRole reader: AccessDenied (HTTP 403): no trust",
                           role_arn=key().role_arn, code="AccessDenied")


@pytest.fixture
async def cache(clock: FakeClock, gateway: FakeGateway) -> AsyncIterator[CredentialCache]:
    cache = new_cache(clock, gateway, refusals=RefusalMemory(ttl=TTL))
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


async def test_throttling_is_not_remembered_as_a_refusal(
    cache: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    gateway.failures = [StsThrottled("slow down", code="Throttling")]
    with pytest.raises(StsThrottled):
        await cache.get(key())
    clock.advance(1.0)  # past the first backoff step (kiam.aws.backoff)
    assert (await cache.get(key())).access_key_id == "ASIA2"


async def test_throttling_backs_off_per_key_one_call_per_step(
    cache: CredentialCache, gateway: FakeGateway, clock: FakeClock
) -> None:
    await cache.get(key("cached"))
    skips = sample("kiam_sts_backoff_skips_total")
    gateway.failures = [StsThrottled("slow down", code="Throttling")] * 3
    steps = 0
    for served_at in range(100):  # noqa: B007  (10 s of requests, 10 a second)
        try:
            await cache.get(key())
        except StsThrottled as exc:
            steps += not exc.remembered
        else:
            break
        # another key with cached credentials is served throughout
        assert (await cache.get(key("cached"))).access_key_id == "ASIA1"
        clock.advance(0.1)
    # three throttled calls, each opening a longer step (<= 1 s, 2 s, 4 s), then success
    assert [k.role_arn.rsplit("/", 1)[1] for k in gateway.calls] == ["cached"] + ["reader"] * 4
    assert steps == 3
    assert served_at >= 35  # the steps lasted at least 0.5 + 1 + 2 s
    assert sample("kiam_sts_backoff_skips_total") > skips


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
