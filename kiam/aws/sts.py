"""The STS gateway: the only code in kiam that talks to AWS STS.

``StsGateway`` wraps one aiobotocore STS client. botocore's own retries are off (one
attempt per call) so :class:`kiam.aws.retry.RetryPolicy` alone decides, and its
"attempt n/N" counts are exact. A pod's AssumeRole that STS throttles is not retried
here: the credential cache backs off per key instead (:mod:`kiam.aws.backoff`). botocore
exceptions are translated into :mod:`kiam.aws.errors` here and go no further.

The server's own credentials come from botocore's default chain (environment, web
identity, instance profile, ...). With ``assume_role_arn`` the gateway first assumes
that role and makes every further call with the resulting credentials, which botocore
refreshes ahead of their expiry (each refresh goes through the retry policy too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, Self

from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioCredentialResolver, AioDeferredRefreshableCredentials
from aiobotocore.session import AioSession, get_session
from botocore.credentials import CredentialProvider
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from kiam.aws import metrics
from kiam.aws.arn import InvalidRoleArn, RoleArn, is_role_arn, sts_endpoint
from kiam.aws.credentials import MIN_SESSION_DURATION, CredentialKey, Credentials
from kiam.aws.errors import AwsError, StsAccessDenied, StsFailure, StsThrottled, StsUnavailable
from kiam.aws.retry import RetryPolicy

log = logging.getLogger(__name__)

GLOBAL_ENDPOINT = "https://sts.amazonaws.com"
GLOBAL_REGION = "us-east-1"
OWN_SESSION_DURATION = 3600
"""Seconds requested for the server's own role session (``--assume-role-arn``).

An hour is what every role allows, and role chaining caps sessions at an hour anyway;
botocore refreshes it 15 minutes before expiry."""

_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "RegionDisabledException",
    }
)
_THROTTLED_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "PriorRequestNotComplete",
        "SlowDown",
    }
)
_UNAVAILABLE_CODES = frozenset(
    {
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "IDPCommunicationError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def translate_error(error: Exception, *, role_arn: str) -> AwsError:
    """Map a botocore exception onto our error tree, keeping what an operator needs."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", "") or "Unknown")
        message = str(details.get("Message", "") or "")
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = f"STS AssumeRole {role_arn}: {code} (HTTP {status}): {message}".rstrip(": ")
        if code in _DENIED_CODES:
            return StsAccessDenied(text, role_arn=role_arn, code=code)
        if code in _THROTTLED_CODES or status == 429:
            return StsThrottled(text, role_arn=role_arn, code=code)
        if code in _UNAVAILABLE_CODES or status >= 500:
            return StsUnavailable(text, role_arn=role_arn, code=code)
        return StsFailure(text, role_arn=role_arn, code=code)
    if isinstance(error, HTTPClientError | BotoConnectionError):
        # connection refused/reset, connect and read timeouts, TLS failures
        name = type(error).__name__
        return StsUnavailable(f"STS AssumeRole {role_arn}: {name}: {error}", role_arn=role_arn)
    if isinstance(error, NoCredentialsError):
        return StsFailure(
            f"STS AssumeRole {role_arn}: the server has no AWS credentials "
            "(environment, web identity or instance profile)",
            role_arn=role_arn,
            code="NoCredentials",
        )
    name = type(error).__name__
    return StsFailure(f"STS AssumeRole {role_arn}: {name}: {error}", role_arn=role_arn)


def outcome(error: AwsError) -> str:
    """The ``outcome`` label of ``kiam_sts_assumerole_calls_total`` for an error."""
    if isinstance(error, StsThrottled):
        return "throttled"
    if isinstance(error, StsAccessDenied):
        return "denied"
    if isinstance(error, StsUnavailable):
        return "unavailable"
    return "failed"


def credentials_from_response(response: dict[str, Any], *, now: datetime) -> Credentials:
    """Our value from an AssumeRole response (botocore parses Expiration to a datetime)."""
    raw = response["Credentials"]
    expiration = raw["Expiration"]
    if not isinstance(expiration, datetime):
        expiration = datetime.fromisoformat(str(expiration).replace("Z", "+00:00"))
    return Credentials(
        access_key_id=raw["AccessKeyId"],
        secret_access_key=raw["SecretAccessKey"],
        session_token=raw["SessionToken"],
        expiration=expiration.astimezone(UTC),
        last_updated=now,
    )


def resolve_endpoint(*, region: str, endpoint_url: str) -> tuple[str, str]:
    """(signing region, endpoint URL): ``endpoint_url`` wins; a region picks its STS
    endpoint (``kiam.aws.arn.sts_endpoint``); neither means the global endpoint, as Go
    Kiam uses. Raises ValueError for a region that is not one."""
    if not region:
        return GLOBAL_REGION, endpoint_url or GLOBAL_ENDPOINT
    endpoint = sts_endpoint(region)
    return endpoint.signing_region, endpoint_url or endpoint.url


class _FixedProvider(CredentialProvider):  # type: ignore[misc]
    """Hands botocore the refreshable credentials of the server's own role."""

    METHOD = "kiam-assume-role"

    def __init__(self, credentials: AioDeferredRefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    async def load(self) -> AioDeferredRefreshableCredentials:
        return self._credentials


class StsGateway:
    """AssumeRole with our retry policy, metrics and errors. Create with :meth:`create`."""

    def __init__(
        self,
        *,
        client: Any,
        retry: RetryPolicy,
        exit_stack: contextlib.AsyncExitStack,
        clock: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._retry = retry
        self._exit_stack = exit_stack
        self._clock = clock

    @classmethod
    async def create(
        cls,
        *,
        region: str = "",
        endpoint_url: str = "",
        assume_role_arn: str = "",
        session_name: str = "kiam-kiam",
        session_duration: float = MIN_SESSION_DURATION,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> StsGateway:
        """Open the STS client (and, with ``assume_role_arn``, the chained one).

        Raises ValueError for a malformed ``assume_role_arn`` or ``region`` and
        :class:`kiam.aws.errors.AwsError` when the server cannot assume its own role.

        ``session_name`` is the RoleSessionName of the server's own role session.
        ``session_duration`` is only checked here: role chaining caps pod sessions at an
        hour, which AWS would otherwise report on every call.
        """
        if assume_role_arn and not is_role_arn(assume_role_arn):
            raise InvalidRoleArn(f"--assume-role-arn {assume_role_arn!r} is not a role ARN")
        policy = retry or RetryPolicy()
        region_name, url = resolve_endpoint(region=region, endpoint_url=endpoint_url)
        config = AioConfig(
            # one attempt per call: our RetryPolicy is the only retry layer
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        stack = contextlib.AsyncExitStack()
        try:
            base = await stack.enter_async_context(
                get_session().create_client(
                    "sts", region_name=region_name, endpoint_url=url, config=config
                )
            )
            client = base
            if assume_role_arn:
                if session_duration > OWN_SESSION_DURATION:
                    log.warning(
                        "--session-duration above 1h with --assume-role-arn: AWS caps "
                        "chained role sessions at 1h and will refuse longer ones"
                    )
                own = _OwnRole(
                    client=base,
                    role_arn=RoleArn(assume_role_arn),
                    session_name=session_name,
                    retry=policy,
                    clock=clock,
                )
                session = AioSession()
                session.register_component(
                    "credential_provider", AioCredentialResolver(providers=[own.provider()])
                )
                client = await stack.enter_async_context(
                    session.create_client(
                        "sts", region_name=region_name, endpoint_url=url, config=config
                    )
                )
                # fail fast at start-up if the server cannot assume its own role
                await own.prime()
        except BaseException:
            await stack.aclose()
            raise
        log.info(
            "STS client ready",
            extra={"fields": {"endpoint": url, "region": region_name, "role": assume_role_arn}},
        )
        # pod calls: throttling is one attempt, the cache backs off (kiam.aws.backoff)
        pod_calls = dataclasses.replace(policy, retry_throttled=False)
        return cls(client=client, retry=pod_calls, exit_stack=stack, clock=clock)

    async def close(self) -> None:
        await self._exit_stack.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def assume_role(self, key: CredentialKey, *, duration: float) -> Credentials:
        """Credentials for ``key``; raises :class:`kiam.aws.errors.AwsError` subclasses."""
        params: dict[str, Any] = {
            "RoleArn": key.role_arn,
            "RoleSessionName": key.session_name,
            "DurationSeconds": int(duration),
        }
        if key.external_id:
            params["ExternalId"] = key.external_id
        started = time.monotonic()
        metrics.ASSUMEROLE_CURRENT.inc()
        try:
            credentials = await self._retry.call(
                partial(_call_assume_role, self._client, params, clock=self._clock),
                description=f"AssumeRole {key.role_arn}",
            )
        except AwsError as error:
            metrics.ISSUING_ERRORS.inc()
            metrics.ASSUMEROLE_CALLS.labels(outcome=outcome(error)).inc()
            raise
        finally:
            metrics.ASSUMEROLE_CURRENT.dec()
            metrics.ASSUMEROLE_TIMING.observe(time.monotonic() - started)
        metrics.ASSUMEROLE_CALLS.labels(outcome="success").inc()
        return credentials


async def _call_assume_role(
    client: Any, params: dict[str, Any], *, clock: Callable[[], datetime]
) -> Credentials:
    """One AssumeRole attempt, with botocore's errors translated."""
    try:
        response = await client.assume_role(**params)
    except (ClientError, BotoCoreError) as error:
        raise translate_error(error, role_arn=params["RoleArn"]) from error
    return credentials_from_response(response, now=clock())


class _OwnRole:
    """The server's own role (``--assume-role-arn``), as botocore refreshable credentials."""

    def __init__(
        self,
        *,
        client: Any,
        role_arn: RoleArn,
        session_name: str,
        retry: RetryPolicy,
        clock: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._params = {
            "RoleArn": role_arn,
            "RoleSessionName": session_name,
            "DurationSeconds": OWN_SESSION_DURATION,
        }
        self._retry = retry
        self._clock = clock
        # botocore refreshes 15 minutes before expiry (advisory) and insists 10 minutes
        # before (mandatory), judged by our clock so tests can move time
        self._credentials = AioDeferredRefreshableCredentials(
            refresh_using=self._refresh, method=_FixedProvider.METHOD, time_fetcher=clock
        )

    def provider(self) -> _FixedProvider:
        return _FixedProvider(self._credentials)

    async def prime(self) -> None:
        await self._credentials.get_frozen_credentials()

    async def _refresh(self) -> dict[str, str]:
        role_arn = self._params["RoleArn"]
        issued = await self._retry.call(
            partial(_call_assume_role, self._client, self._params, clock=self._clock),
            description=f"AssumeRole {role_arn} (own role)",
        )
        log.info(
            "assumed the server's own role",
            extra={
                "fields": {
                    "role": role_arn,
                    "access.key.id": issued.access_key_id,
                    "expiration": issued.expiration.isoformat(),
                }
            },
        )
        return {
            "access_key": issued.access_key_id,
            "secret_key": issued.secret_access_key,
            "token": issued.session_token,
            "expiry_time": issued.expiration.isoformat(),
        }
