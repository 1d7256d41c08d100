"""ThrottleBackoff: pure, time and randomness passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kiam.aws.arn import RoleArn
from kiam.aws.backoff import ThrottleBackoff
from kiam.aws.credentials import CredentialKey
from kiam.aws.errors import StsAccessDenied, StsThrottled, StsUnavailable

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def key(name: str = "reader") -> CredentialKey:
    return CredentialKey(role_arn=RoleArn(f"arn:aws:iam::1:role/{name}"), session_name="s")


def throttled() -> StsThrottled:
    return StsThrottled("STS AssumeRole r: Throttling (HTTP 400): Rate exceeded",
                        role_arn="arn:aws:iam::1:role/reader", code="Throttling")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_steps_double_up_to_the_cap() -> None:
    backoff = ThrottleBackoff(base=1.0, cap=8.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.5), (0.5, 0.75), (1.0, 1.0)])
def test_jitter_scales_each_step_between_half_and_whole(draw: float, factor: float) -> None:
    backoff = ThrottleBackoff(base=2.0, cap=30.0, rng=lambda: draw)
    assert backoff.failed(key(), throttled(), now=T0) == at(2.0 * factor)


def test_one_step_after_another_then_success_resets() -> None:
    backoff = ThrottleBackoff(base=1.0, cap=30.0, rng=lambda: 1.0)
    assert backoff.failed(key(), throttled(), now=T0) == at(1)
    assert backoff.until(key(), now=at(0.5)) == at(1)
    assert backoff.until(key(), now=at(1)) is None
    assert backoff.failed(key(), throttled(), now=at(1)) == at(3)
    assert backoff.failed(key(), throttled(), now=at(3)) == at(7)
    assert len(backoff) == 1
    backoff.succeeded(key())
    assert len(backoff) == 0
    assert backoff.until(key(), now=at(3)) is None
    assert backoff.failed(key(), throttled(), now=at(7)) == at(8)
    backoff.succeeded(key("never-throttled"))  # harmless
    assert len(backoff) == 1


def test_blocked_hands_out_a_marked_copy_while_the_step_lasts() -> None:
    backoff = ThrottleBackoff(base=2.0, cap=30.0, rng=lambda: 1.0)
    original = throttled()
    backoff.failed(key(), original, now=T0)
    copy = backoff.blocked(key(), now=at(0.5))
    assert isinstance(copy, StsThrottled) and copy is not original
    assert copy.remembered is True
    assert (copy.role_arn, copy.code) == (original.role_arn, original.code)
    assert copy.message == f"{original.message} (backing off: next attempt in 1.5s)"
    assert backoff.blocked(key(), now=at(2)) is None
    assert backoff.blocked(key("other"), now=at(0.5)) is None


@pytest.mark.parametrize("error", [
    StsAccessDenied("no", code="AccessDenied"),
    StsUnavailable("down", code="ServiceUnavailable"),
])
def test_only_throttling_opens_a_step(error: StsAccessDenied | StsUnavailable) -> None:
    backoff = ThrottleBackoff()
    assert backoff.failed(key(), error, now=T0) is None
    assert backoff.until(key(), now=T0) is None
    assert len(backoff) == 0


def test_steps_long_over_are_forgotten() -> None:
    backoff = ThrottleBackoff(base=1.0, cap=4.0, rng=lambda: 1.0)
    backoff.failed(key("old"), throttled(), now=T0)  # ends at 1
    backoff.failed(key(), throttled(), now=T0)
    # at 5 the old step ended exactly cap seconds ago: forgotten, so this is step 1 again
    assert backoff.failed(key(), throttled(), now=at(5)) == at(6)
    assert len(backoff) == 1
    backoff.failed(key("b"), throttled(), now=at(5))
    # at 9.999 the step that ended at 6 is not yet cap seconds over: it is step 2
    assert backoff.failed(key(), throttled(), now=at(9.999)) == at(11.999)
    assert len(backoff) == 2


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_settings_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match=r"^backoff needs 0 < base <= cap$"):
        ThrottleBackoff(base=base, cap=cap)


def test_base_equal_to_cap_is_allowed() -> None:
    assert ThrottleBackoff(base=1.0, cap=1.0).delay(3) == 1.0


def test_the_defaults_are_one_second_doubling_to_thirty() -> None:
    backoff = ThrottleBackoff()
    assert [backoff.delay(n) for n in (1, 2, 5, 6, 7)] == [1.0, 2.0, 16.0, 30.0, 30.0]
