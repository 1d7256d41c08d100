"""CredentialCache over the real StsGateway and the STS stand-in: call counts end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kiam.aws.arn import RoleArn
from kiam.aws.credential_cache import CredentialCache
from kiam.aws.credentials import CredentialKey
from kiam.aws.errors import StsAccessDenied
from kiam.aws.retry import RetryPolicy
from kiam.aws.sts import StsGateway
from kiam_testbed.sts import FaultKind, StsStandIn


def key(n: int) -> CredentialKey:
    return CredentialKey(
        role_arn=RoleArn(f"arn:aws:iam::123456789012:role/role{n}"), session_name="kiam-kiam"
    )


@pytest.fixture
async def cache(sts: StsStandIn) -> AsyncIterator[CredentialCache]:
    retry = RetryPolicy(base_delay=0.01, jitter=0.0)
    async with await StsGateway.create(endpoint_url=sts.url, retry=retry) as gateway:
        cache = CredentialCache(gateway, session_duration=900, session_refresh=300, fetchers=4)
        yield cache
        await cache.close()


async def test_many_pods_sharing_few_roles_cost_one_call_per_role(
    cache: CredentialCache, sts: StsStandIn
) -> None:
    # 200 pods announced over 10 roles, then every pod asks at once
    for pod in range(200):
        cache.prefetch(key(pod % 10))
    results = await asyncio.gather(*(cache.get(key(pod % 10)) for pod in range(200)))
    assert sts.assume_role_calls() == 10
    assert len({r.access_key_id for r in results}) == 10


async def test_a_refusal_reaches_every_waiter_then_a_retry_succeeds(
    cache: CredentialCache, sts: StsStandIn
) -> None:
    sts.queue_fault(FaultKind.ACCESS_DENIED, count=1, role_arn=key(1).role_arn)
    outcomes = await asyncio.gather(*(cache.get(key(1)) for _ in range(20)), return_exceptions=True)
    assert all(isinstance(o, StsAccessDenied) for o in outcomes)
    assert sts.assume_role_calls() == 1
    assert (await cache.get(key(1))).access_key_id
    assert sts.assume_role_calls() == 2
