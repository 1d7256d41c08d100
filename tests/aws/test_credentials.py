from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kiam.aws.arn import RoleArn
from kiam.aws.credentials import CredentialKey, Credentials

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make(**overrides: object) -> Credentials:
    values: dict[str, object] = {
        "access_key_id": "ASIAEXAMPLE",
        "secret_access_key": "SECRET-do-not-log",
        "session_token": "TOKEN-do-not-log",
        "expiration": NOW + timedelta(minutes=15),
        "last_updated": NOW,
    }
    values.update(overrides)
    return Credentials(**values)  # type: ignore[arg-type]


def test_repr_and_str_hide_secret_and_token() -> None:
    credentials = make()
    for text in (repr(credentials), str(credentials), f"{credentials}", f"{[credentials]}"):
        assert "ASIAEXAMPLE" in text
        assert "SECRET" not in text
        assert "TOKEN" not in text


def test_remaining() -> None:
    credentials = make()
    assert credentials.remaining(NOW) == timedelta(minutes=15)
    assert credentials.remaining(NOW + timedelta(minutes=20)) == timedelta(minutes=-5)


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make(expiration=datetime(2026, 1, 1))


def test_frozen() -> None:
    credentials = make()
    with pytest.raises(AttributeError):
        credentials.access_key_id = "other"  # type: ignore[misc]


def test_keys_are_values() -> None:
    arn = RoleArn("arn:aws:iam::123456789012:role/a")
    one = CredentialKey(role_arn=arn, session_name="kiam-x", external_id="e1")
    same = CredentialKey(role_arn=arn, session_name="kiam-x", external_id="e1")
    other = CredentialKey(role_arn=arn, session_name="kiam-x", external_id="e2")
    assert one == same
    assert len({one, same, other}) == 2
    assert CredentialKey(role_arn=arn, session_name="kiam-x").external_id == ""
