from __future__ import annotations

import dataclasses
import logging

import pytest

from kiam.aws.errors import AwsError, StsAccessDenied, StsFailure, StsThrottled, StsUnavailable
from kiam.aws.retry import RetryPolicy


class Script:
    """An operation failing with the given errors, then answering "ok"; records sleeps."""

    def __init__(self, *errors: AwsError) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.sleeps: list[float] = []

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


FIXED = RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=1.0, budget=5.0, jitter=0.0)


async def test_success_needs_no_retry() -> None:
    script = Script()
    assert await FIXED.call(script, description="op", sleep=script.sleep) == "ok"
    assert (script.calls, script.sleeps) == (1, [])


@pytest.mark.parametrize("error", [StsThrottled("slow down"), StsUnavailable("500")])
async def test_transient_errors_are_retried_with_backoff(error: AwsError) -> None:
    script = Script(error, error, error)
    assert await FIXED.call(script, description="op", sleep=script.sleep) == "ok"
    assert script.calls == 4
    assert script.sleeps == pytest.approx([0.1, 0.2, 0.4])


async def test_without_retry_throttled_throttling_is_one_attempt() -> None:
    policy = dataclasses.replace(FIXED, retry_throttled=False)
    script = Script(StsThrottled("slow down"))
    with pytest.raises(StsThrottled):
        await policy.call(script, description="op", sleep=script.sleep)
    assert (script.calls, script.sleeps) == (1, [])
    # other transient errors are still retried
    script = Script(StsUnavailable("500"))
    assert await policy.call(script, description="op", sleep=script.sleep) == "ok"
    assert script.calls == 2


async def test_gives_up_after_max_attempts(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(*[StsThrottled("slow down")] * 5)
    caplog.set_level(logging.INFO, logger="kiam.aws.retry")
    with pytest.raises(StsThrottled):
        await FIXED.call(script, description="AssumeRole x", sleep=script.sleep)
    assert script.calls == 4
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(",")[1].strip() for m in messages] == [
        "attempt 1/4",
        "attempt 2/4",
        "attempt 3/4",
        "attempt 4/4",
    ]
    assert "giving up" in messages[-1]


@pytest.mark.parametrize("error", [StsAccessDenied("no"), StsFailure("bad request")])
async def test_permanent_errors_are_not_retried(error: AwsError) -> None:
    script = Script(error)
    with pytest.raises(type(error)):
        await FIXED.call(script, description="op", sleep=script.sleep)
    assert (script.calls, script.sleeps) == (1, [])


async def test_budget_limits_total_wait() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=1.0, max_delay=1.0, budget=2.5, jitter=0.0)
    script = Script(*[StsUnavailable("down")] * 10)
    with pytest.raises(StsUnavailable):
        await policy.call(script, description="op", sleep=script.sleep)
    assert script.sleeps == [1.0, 1.0]
    assert script.calls == 3


def test_jitter_stays_within_half_to_full_delay() -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=10.0, jitter=1.0)
    assert policy.delay(1, rng=lambda: 0.0) == pytest.approx(0.1)
    assert policy.delay(1, rng=lambda: 1.0) == pytest.approx(0.2)
    assert policy.delay(3, rng=lambda: 1.0) == pytest.approx(0.8)


def test_delays_are_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=3.0, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]


def test_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
