"""Fixtures of the AWS-side tests: a clean AWS environment and the STS stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kiam_testbed.sts import StsStandIn
from tests.aws.cache_fakes import FakeClock, FakeGateway


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Dummy credentials for botocore's default chain; nothing ambient leaks in."""
    empty = tmp_path_factory.mktemp("aws") / "none"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def sts() -> AsyncIterator[StsStandIn]:
    async with StsStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def clock() -> FakeClock:
    """The credential-cache suites' clock (tests/aws/test_credential_cache.py)."""
    return FakeClock()


@pytest.fixture
def gateway(clock: FakeClock) -> FakeGateway:
    """The credential-cache suites' scripted STS gateway."""
    return FakeGateway(clock)
