"""StsGateway with the real aiobotocore client against the STS stand-in (moto behind a
fault-injecting proxy) on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from kiam.aws.arn import RoleArn
from kiam.aws.credentials import CredentialKey
from kiam.aws.errors import StsAccessDenied, StsThrottled, StsUnavailable
from kiam.aws.retry import RetryPolicy
from kiam.aws.sts import StsGateway
from kiam_testbed.sts import FaultKind, StsStandIn

ROLE = RoleArn("arn:aws:iam::123456789012:role/reader")
OWN_ROLE = "arn:aws:iam::123456789012:role/kiam-server"
FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, jitter=0.0)


def key(session: str = "kiam-web", external_id: str = "") -> CredentialKey:
    return CredentialKey(role_arn=ROLE, session_name=session, external_id=external_id)


@pytest.fixture
async def gateway(sts: StsStandIn) -> AsyncIterator[StsGateway]:
    async with await StsGateway.create(endpoint_url=sts.url, retry=FAST) as gateway:
        yield gateway


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_assume_role_sends_what_the_pod_asked_for(
    gateway: StsGateway, sts: StsStandIn
) -> None:
    credentials = await gateway.assume_role(key(external_id="ext-123"), duration=1800)
    assert credentials.access_key_id
    assert credentials.secret_access_key
    assert credentials.session_token
    assert credentials.expiration.utcoffset() == timedelta(0)
    assert credentials.expiration - credentials.last_updated > timedelta(seconds=1700)
    (call,) = sts.calls
    assert call.role_arn == ROLE
    assert call.session_name == "kiam-web"
    assert call.external_id == "ext-123"
    assert call.duration_seconds == 1800
    assert call.successful


async def test_no_external_id_when_empty(gateway: StsGateway, sts: StsStandIn) -> None:
    await gateway.assume_role(key(), duration=900)
    (call,) = sts.calls
    assert call.external_id is None
    assert call.duration_seconds == 900


async def test_server_errors_are_retried_with_exact_attempt_counts(
    gateway: StsGateway, sts: StsStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kiam.aws.retry")
    sts.queue_fault(FaultKind.INTERNAL_FAILURE, count=2, role_arn=ROLE)
    credentials = await gateway.assume_role(key(), duration=900)
    assert credentials.access_key_id
    # exactly our attempts: botocore's own retries are off
    assert sts.assume_role_calls(ROLE) == 3
    assert sts.faulted_assume_role_calls(ROLE) == 2
    attempts = [r.getMessage() for r in caplog.records if r.name == "kiam.aws.retry"]
    assert len(attempts) == 2
    assert "attempt 1/4" in attempts[0]
    assert "attempt 2/4" in attempts[1]
    assert "InternalFailure" in attempts[0]


async def test_throttling_is_one_attempt(gateway: StsGateway, sts: StsStandIn) -> None:
    # no retries underneath: the credential cache backs off per key (kiam.aws.backoff)
    errors = sample("kiam_sts_issuing_errors_total")
    sts.queue_fault(FaultKind.THROTTLING, count=10, role_arn=ROLE)
    with pytest.raises(StsThrottled, match="Throttling"):
        await gateway.assume_role(key(), duration=900)
    assert sts.assume_role_calls(ROLE) == 1
    assert sample("kiam_sts_issuing_errors_total") == errors + 1


async def test_access_denied_is_not_retried(gateway: StsGateway, sts: StsStandIn) -> None:
    sts.queue_fault(FaultKind.ACCESS_DENIED, count=5, role_arn=ROLE)
    with pytest.raises(StsAccessDenied) as caught:
        await gateway.assume_role(key(), duration=900)
    assert sts.assume_role_calls(ROLE) == 1
    message = str(caught.value)
    assert ROLE in message
    assert "AccessDenied" in message
    assert "not authorized" in message
    assert caught.value.code == "AccessDenied"


@pytest.mark.parametrize("kind", [FaultKind.INTERNAL_FAILURE, FaultKind.SERVICE_UNAVAILABLE])
async def test_server_errors_are_retried(
    gateway: StsGateway, sts: StsStandIn, kind: FaultKind
) -> None:
    sts.queue_fault(kind, count=1, role_arn=ROLE)
    assert (await gateway.assume_role(key(), duration=900)).access_key_id
    assert sts.assume_role_calls(ROLE) == 2


async def test_persistent_server_errors_become_unavailable(
    gateway: StsGateway, sts: StsStandIn
) -> None:
    sts.queue_fault(FaultKind.INTERNAL_FAILURE, count=10, role_arn=ROLE)
    with pytest.raises(StsUnavailable, match="InternalFailure"):
        await gateway.assume_role(key(), duration=900)
    assert sts.assume_role_calls(ROLE) == 4


async def test_connection_reset_is_retried(gateway: StsGateway, sts: StsStandIn) -> None:
    sts.queue_fault(FaultKind.RESET, count=1, role_arn=ROLE)
    assert (await gateway.assume_role(key(), duration=900)).access_key_id
    assert sts.assume_role_calls(ROLE) == 2


async def test_read_timeout_is_retried(sts: StsStandIn) -> None:
    sts.queue_fault(FaultKind.TIMEOUT, count=1, role_arn=ROLE, delay=5)
    async with await StsGateway.create(
        endpoint_url=sts.url, retry=FAST, read_timeout=0.3
    ) as gateway:
        assert (await gateway.assume_role(key(), duration=900)).access_key_id
    assert sts.assume_role_calls(ROLE) == 2


async def test_unreachable_endpoint() -> None:
    with socket.socket() as sock:  # held bound, not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        async with await StsGateway.create(
            endpoint_url=f"http://127.0.0.1:{port}", retry=FAST
        ) as gateway:
            with pytest.raises(StsUnavailable, match=ROLE):
                await gateway.assume_role(key(), duration=900)


async def test_metrics_count_calls(gateway: StsGateway) -> None:
    observed = sample("kiam_sts_assumerole_timing_seconds_count")
    await gateway.assume_role(key(), duration=900)
    assert sample("kiam_sts_assumerole_timing_seconds_count") == observed + 1
    assert sample("kiam_sts_assumerole_current") == 0


async def test_assume_role_arn_chains_through_the_servers_own_role(sts: StsStandIn) -> None:
    async with await StsGateway.create(
        endpoint_url=sts.url, assume_role_arn=OWN_ROLE, session_name="kiam-server", retry=FAST
    ) as gateway:
        # the own role is assumed at start-up, before any pod asks
        assert [c.role_arn for c in sts.calls] == [OWN_ROLE]
        assert sts.calls[0].session_name == "kiam-server"
        await gateway.assume_role(key(), duration=900)
        await gateway.assume_role(key("kiam-other"), duration=900)
    # its credentials are reused, not fetched per call
    assert [c.role_arn for c in sts.calls] == [OWN_ROLE, ROLE, ROLE]


async def test_own_role_refused_fails_at_start_up(sts: StsStandIn) -> None:
    sts.queue_fault(FaultKind.ACCESS_DENIED, count=1, role_arn=OWN_ROLE)
    with pytest.raises(StsAccessDenied, match=OWN_ROLE):
        await StsGateway.create(endpoint_url=sts.url, assume_role_arn=OWN_ROLE, retry=FAST)
    assert sts.assume_role_calls(OWN_ROLE) == 1


async def test_own_role_throttled_is_retried(sts: StsStandIn) -> None:
    sts.queue_fault(FaultKind.THROTTLING, count=2, role_arn=OWN_ROLE)
    async with await StsGateway.create(
        endpoint_url=sts.url, assume_role_arn=OWN_ROLE, retry=FAST
    ) as gateway:
        await gateway.assume_role(key(), duration=900)
    assert sts.assume_role_calls(OWN_ROLE) == 3
    assert sts.assume_role_calls(ROLE) == 1


async def test_own_role_is_refreshed_before_it_expires(sts: StsStandIn) -> None:
    offset = timedelta(0)

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    async with await StsGateway.create(
        endpoint_url=sts.url, assume_role_arn=OWN_ROLE, retry=FAST, clock=clock
    ) as gateway:
        await gateway.assume_role(key(), duration=900)
        offset = timedelta(minutes=40)  # 20 minutes left: still good
        await gateway.assume_role(key(), duration=900)
        assert [c.role_arn for c in sts.calls] == [OWN_ROLE, ROLE, ROLE]
        offset = timedelta(minutes=51)  # 9 minutes left: must be refreshed first
        await gateway.assume_role(key(), duration=900)
    assert [c.role_arn for c in sts.calls] == [OWN_ROLE, ROLE, ROLE, OWN_ROLE, ROLE]


@pytest.mark.parametrize(
    ("region", "assume_role_arn", "match"),
    [
        ("", "kiam-server", "not a role ARN"),
        ("not a region", "", "invalid AWS region"),
    ],
)
async def test_bad_settings_are_refused(region: str, assume_role_arn: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        await StsGateway.create(region=region, assume_role_arn=assume_role_arn)
