"""RefusalMemory: pure, time passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kiam.aws.arn import RoleArn
from kiam.aws.credentials import CredentialKey
from kiam.aws.errors import (
    StsAccessDenied,
    StsFailure,
    StsThrottled,
    StsUnavailable,
)
from kiam.aws.refusals import RefusalMemory

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = 60.0


def key(name: str = "reader") -> CredentialKey:
    return CredentialKey(role_arn=RoleArn(f"arn:aws:iam::1:role/{name}"), session_name="s")


def denied(name: str = "reader") -> StsAccessDenied:
    return StsAccessDenied(f"denied {name}", role_arn=f"arn:aws:iam::1:role/{name}",
                           code="AccessDenied")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_permanent_refusal_is_kept_for_the_ttl() -> None:
    memory = RefusalMemory(ttl=TTL)
    assert memory.remember(key(), denied(), now=T0) is True
    assert len(memory) == 1
    for seconds in (0.0, 1.0, TTL - 0.001):
        refusal = memory.recall(key(), now=at(seconds))
        assert isinstance(refusal, StsAccessDenied)
    assert memory.until(key(), now=at(TTL - 0.001)) == at(TTL)
    # the window ends at exactly T0 + ttl
    assert memory.until(key(), now=at(TTL)) is None
    assert memory.recall(key(), now=at(TTL)) is None
    assert len(memory) == 0
    assert memory.recall(key(), now=at(TTL)) is None


def test_the_copy_keeps_class_message_arn_and_code() -> None:
    memory = RefusalMemory(ttl=TTL)
    original = StsFailure("STS AssumeRole x: MalformedPolicyDocument (HTTP 400): bad",
                          role_arn="arn:aws:iam::1:role/x", code="MalformedPolicyDocument")
    assert memory.remember(key(), original, now=T0)
    copy = memory.recall(key(), now=T0)
    assert copy is not None and copy is not original
    assert type(copy) is StsFailure
    assert (copy.message, copy.role_arn, copy.code, str(copy)) == (
        original.message, original.role_arn, original.code, str(original))


@pytest.mark.parametrize("error", [
    StsThrottled("slow down", code="Throttling"),
    StsUnavailable("down", code="ServiceUnavailable"),
])
def test_retryable_errors_are_never_kept(error: StsThrottled | StsUnavailable) -> None:
    memory = RefusalMemory(ttl=TTL)
    assert memory.remember(key(), error, now=T0) is False
    assert memory.recall(key(), now=T0) is None
    assert memory.until(key(), now=T0) is None
    assert len(memory) == 0


def test_a_ttl_of_zero_keeps_nothing() -> None:
    memory = RefusalMemory(ttl=0)
    assert memory.remember(key(), denied(), now=T0) is False
    assert memory.recall(key(), now=T0) is None
    assert len(memory) == 0


def test_a_negative_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^the refusal TTL cannot be negative$"):
        RefusalMemory(ttl=-1)


def test_reported_once_per_window() -> None:
    memory = RefusalMemory(ttl=TTL)
    # refused in the background: the first recall is unmarked, so its caller reports it
    memory.remember(key(), denied(), now=T0)
    first = memory.recall(key(), now=T0)
    second = memory.recall(key(), now=at(1))
    assert first is not None and first.remembered is False
    assert second is not None and second.remembered is True
    # refused to a caller who reported it: every recall is marked
    memory.remember(key("other"), denied("other"), now=T0)
    memory.reported(key("other"))
    recalled = memory.recall(key("other"), now=T0)
    assert recalled is not None and recalled.remembered is True
    # a new window starts unreported again
    memory.remember(key(), denied(), now=at(TTL))
    again = memory.recall(key(), now=at(TTL))
    assert again is not None and again.remembered is False
    # reporting a key with nothing kept is harmless and keeps nothing
    memory.reported(key("none"))
    assert memory.recall(key("none"), now=T0) is None


def test_forget_drops_only_the_keys_named() -> None:
    memory = RefusalMemory(ttl=TTL)
    memory.remember(key("a"), denied("a"), now=T0)
    memory.remember(key("b"), denied("b"), now=T0)
    assert memory.forget([key("unknown")]) == 0
    assert memory.forget([key("a"), key("unknown")]) == 1
    assert memory.recall(key("a"), now=T0) is None
    assert memory.recall(key("b"), now=T0) is not None
    assert memory.forget([]) == 0
    assert len(memory) == 1


def test_expire_drops_closed_windows_only() -> None:
    memory = RefusalMemory(ttl=TTL)
    memory.remember(key("old"), denied("old"), now=T0)
    memory.remember(key("new"), denied("new"), now=at(30))
    assert memory.expire(now=at(TTL - 1)) == 0
    assert memory.expire(now=at(TTL)) == 1
    assert len(memory) == 1
    assert memory.until(key("new"), now=at(TTL)) == at(30 + TTL)
    assert memory.expire(now=at(TTL)) == 0


def test_a_later_refusal_replaces_the_earlier_one() -> None:
    memory = RefusalMemory(ttl=TTL)
    memory.remember(key(), denied(), now=T0)
    memory.remember(key(), denied(), now=at(30))
    assert memory.until(key(), now=at(TTL)) == at(30 + TTL)
    assert len(memory) == 1
