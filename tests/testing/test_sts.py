"""The STS stand-in driven by the real AWS clients (aiobotocore and boto3).

Retries are switched off in the clients so each injected fault is seen as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import boto3  # type: ignore[import-untyped]
import botocore.exceptions
import pytest
from aiobotocore.session import get_session
from botocore.config import Config

from kiam_testbed.sts import FaultKind, StsStandIn

ROLE_A = "arn:aws:iam::123456789012:role/app-a"
ROLE_B = "arn:aws:iam::210987654321:role/team/app-b"
NO_RETRIES = Config(
    retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=5
)
DUMMY = {"aws_access_key_id": "AKIDTESTING", "aws_secret_access_key": "testing-secret"}


@pytest.fixture
async def sts() -> AsyncIterator[StsStandIn]:
    async with StsStandIn() as standin:
        yield standin


@pytest.fixture
async def client(sts: StsStandIn) -> AsyncIterator[Any]:
    session = get_session()
    async with session.create_client(
        "sts", region_name="us-east-1", endpoint_url=sts.url, config=NO_RETRIES, **DUMMY
    ) as c:
        yield c


async def _assume(client: Any, role: str = ROLE_A, **extra: Any) -> dict[str, Any]:
    response: dict[str, Any] = await client.assume_role(
        RoleArn=role, RoleSessionName="kiam-test", **extra
    )
    return response


async def _error_code(client: Any, role: str = ROLE_A) -> tuple[str, int]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await _assume(client, role)
    error = info.value.response
    return error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]


async def test_assume_role_passes_through_and_is_recorded(sts: StsStandIn, client: Any) -> None:
    response = await _assume(client, ExternalId="ext-1", DurationSeconds=1800)
    creds = response["Credentials"]
    assert creds["AccessKeyId"] and creds["SecretAccessKey"] and creds["SessionToken"]
    assert response["AssumedRoleUser"]["Arn"] == (
        "arn:aws:sts::123456789012:assumed-role/app-a/kiam-test"
    )
    [call] = sts.calls
    assert (call.role_arn, call.session_name, call.external_id, call.duration_seconds) == (
        ROLE_A,
        "kiam-test",
        "ext-1",
        1800,
    )
    assert call.successful and not call.faulted and call.status == 200


async def test_credentials_from_moto_identify_the_assumed_role(sts: StsStandIn) -> None:
    """Any role ARN works without creating the role; the issued credentials are that
    role's in the ARN's account (moto does the bookkeeping)."""

    def run() -> str:
        plain = boto3.client(
            "sts", region_name="us-east-1", endpoint_url=sts.url, config=NO_RETRIES, **DUMMY
        )
        creds = plain.assume_role(RoleArn=ROLE_B, RoleSessionName="sess-1")["Credentials"]
        assumed = boto3.client(
            "sts",
            region_name="us-east-1",
            endpoint_url=sts.url,
            config=NO_RETRIES,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        arn: str = assumed.get_caller_identity()["Arn"]
        return arn

    arn = await asyncio.to_thread(run)
    assert arn == "arn:aws:sts::210987654321:assumed-role/app-b/sess-1"
    # GetCallerIdentity is forwarded but is not an AssumeRole call
    assert sts.assume_role_calls() == 1


@pytest.mark.parametrize(
    ("kind", "code", "status"),
    [
        (FaultKind.THROTTLING, "Throttling", 400),
        (FaultKind.ACCESS_DENIED, "AccessDenied", 403),
        (FaultKind.INTERNAL_FAILURE, "InternalFailure", 500),
        (FaultKind.SERVICE_UNAVAILABLE, "ServiceUnavailable", 503),
    ],
)
async def test_error_faults_reach_botocore_as_error_codes(
    sts: StsStandIn, client: Any, kind: FaultKind, code: str, status: int
) -> None:
    sts.queue_fault(kind)
    assert await _error_code(client) == (code, status)
    await _assume(client)  # the fault was used up
    assert sts.faulted_assume_role_calls(ROLE_A) == 1
    assert sts.successful_assume_role_calls(ROLE_A) == 1
    assert [c.fault for c in sts.calls] == [kind, None]


async def test_reset_fault_is_a_connection_error(sts: StsStandIn, client: Any) -> None:
    sts.queue_fault("reset")
    with pytest.raises(
        (botocore.exceptions.ConnectionClosedError, botocore.exceptions.EndpointConnectionError)
    ):
        await _assume(client)
    [call] = sts.calls
    assert call.fault is FaultKind.RESET and call.status is None and call.faulted


async def test_timeout_fault_holds_until_the_client_gives_up(sts: StsStandIn) -> None:
    quick = Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=0.3)
    sts.queue_fault(FaultKind.TIMEOUT)
    async with get_session().create_client(
        "sts", region_name="us-east-1", endpoint_url=sts.url, config=quick, **DUMMY
    ) as c:
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            await _assume(c)
    assert sts.faulted_assume_role_calls() == 1
    assert sts.successful_assume_role_calls() == 0


async def test_delay_fault_holds_the_call_then_forwards(sts: StsStandIn, client: Any) -> None:
    sts.queue_fault(FaultKind.DELAY, delay=0.5)
    call = asyncio.create_task(_assume(client))
    async with asyncio.timeout(5):
        await sts.wait_for_calls(1)
    # the call has arrived but is still held: nothing was answered yet
    assert not call.done()
    assert sts.calls[0].status is None
    response = await call
    assert response["Credentials"]["AccessKeyId"]
    [record] = sts.calls
    assert record.fault is FaultKind.DELAY and record.successful and not record.faulted


async def test_faults_for_one_role_leave_others_alone(sts: StsStandIn, client: Any) -> None:
    sts.queue_fault(FaultKind.THROTTLING, count=2, role_arn=ROLE_B)
    await _assume(client, ROLE_A)
    assert await _error_code(client, ROLE_B) == ("Throttling", 400)
    await _assume(client, ROLE_A)
    assert await _error_code(client, ROLE_B) == ("Throttling", 400)
    await _assume(client, ROLE_B)
    assert sts.pending_faults() == 0
    assert sts.assume_role_calls() == 5
    assert sts.assume_role_calls(ROLE_A) == 2
    assert sts.assume_role_calls(ROLE_B) == 3
    assert sts.faulted_assume_role_calls(ROLE_B) == 2
    assert sts.successful_assume_role_calls(ROLE_B) == 1


async def test_botocore_retries_are_visible_as_separate_calls(sts: StsStandIn) -> None:
    retrying = Config(retries={"total_max_attempts": 3, "mode": "standard"})
    sts.queue_fault(FaultKind.SERVICE_UNAVAILABLE, count=2)
    async with get_session().create_client(
        "sts", region_name="us-east-1", endpoint_url=sts.url, config=retrying, **DUMMY
    ) as c:
        await _assume(c)
    assert sts.assume_role_calls(ROLE_A) == 3
    assert sts.successful_assume_role_calls(ROLE_A) == 1


async def test_reset_forgets_calls_and_faults(sts: StsStandIn, client: Any) -> None:
    await _assume(client)
    sts.queue_fault(FaultKind.THROTTLING, count=3)
    sts.reset()
    assert sts.calls == ()
    await _assume(client)
    assert sts.successful_assume_role_calls() == 1


async def test_http_control_api(sts: StsStandIn, client: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sts.url}/_standin/faults",
            json={"kind": "access-denied", "role_arn": ROLE_A},
        ) as r:
            assert r.status == 200
            assert (await r.json())["pending"] == 1
        async with http.post(f"{sts.url}/_standin/faults", json={"kind": "bogus"}) as r:
            assert r.status == 400
            assert (await r.json())["error"].startswith("unknown fault kind 'bogus'; known: ")
        for bad in ({}, ["throttling"], {"kind": "delay"}, {"kind": "reset", "count": 0}):
            async with http.post(f"{sts.url}/_standin/faults", json=bad) as r:
                assert r.status == 400, bad
                assert (await r.json())["error"], bad
        assert await _error_code(client) == ("AccessDenied", 403)
        async with http.get(f"{sts.url}/_standin/calls") as r:
            calls = (await r.json())["calls"]
        assert [(c["role_arn"], c["fault"], c["status"]) for c in calls] == [
            (ROLE_A, "access-denied", 403)
        ]
        async with http.post(f"{sts.url}/_standin/reset") as r:
            assert r.status == 200
    assert sts.calls == ()


async def test_stop_releases_a_held_call() -> None:
    sts = StsStandIn()
    await sts.start()
    sts.queue_fault(FaultKind.TIMEOUT)
    async with get_session().create_client(
        "sts", region_name="us-east-1", endpoint_url=sts.url, config=NO_RETRIES, **DUMMY
    ) as c:
        call = asyncio.create_task(_assume(c))
        async with asyncio.timeout(5):
            await sts.wait_for_calls(1)
        await sts.stop()
        with pytest.raises(botocore.exceptions.BotoCoreError):
            await call


async def test_rate_limit_mode_answers_throttling_beyond_the_rate() -> None:
    async with StsStandIn(rate_limit=5, burst=2) as limited:
        session = get_session()
        async with session.create_client(
            "sts", region_name="us-east-1", endpoint_url=limited.url, config=NO_RETRIES,
            **DUMMY,
        ) as c:
            await _assume(c)
            await _assume(c)
            assert await _error_code(c) == ("Throttling", 400)
            await _assume(c, ROLE_B)  # another account's bucket is full
            await asyncio.sleep(0.25)  # one token back at 5/s
            await _assume(c)
            limited.set_rate_limit(0)
            for _ in range(5):
                await _assume(c)
        assert limited.assume_role_calls() == 10
        assert limited.rate_limited_assume_role_calls() == 1
        assert limited.rate_limited_assume_role_calls(ROLE_B) == 0
        (throttled,) = [call for call in limited.calls if call.rate_limited]
        assert (throttled.fault, throttled.status) == (FaultKind.THROTTLING, 400)
        assert limited.faulted_assume_role_calls() == 1
