"""``--role-base-arn-autodetect``: the base role ARN from the instance's IAM profile.

Reads ``/latest/meta-data/iam/info`` from the instance metadata service with an IMDSv2
session token (falling back to a token-less request when the service refuses to issue
one, as IMDSv1-only stand-ins do) and turns its ``InstanceProfileArn`` into
``arn:<partition>:iam::<account>:role/``.
"""

from __future__ import annotations

import logging

import aiohttp
import orjson

from kiam.aws.arn import InvalidRoleArn, base_arn_from_instance_profile
from kiam.aws.errors import BaseArnUnavailable

log = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"
INFO_PATH = "/latest/meta-data/iam/info"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


async def detect_base_arn(metadata_endpoint: str, *, time_limit: float = 5.0) -> str:
    """The base role ARN of this instance; raises BaseArnUnavailable with the reason."""
    base = metadata_endpoint.rstrip("/")
    client_timeout = aiohttp.ClientTimeout(total=time_limit)
    try:
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            headers = {}
            token = await _token(session, base)
            if token:
                headers[TOKEN_HEADER] = token
            async with session.get(base + INFO_PATH, headers=headers) as response:
                body = await response.read()
                if response.status != 200:
                    raise BaseArnUnavailable(
                        f"cannot detect the base role ARN: {base}{INFO_PATH} answered "
                        f"HTTP {response.status}; does the instance have an IAM instance "
                        "profile? Otherwise set --role-base-arn"
                    )
    except (aiohttp.ClientError, TimeoutError) as error:
        raise BaseArnUnavailable(
            f"cannot detect the base role ARN: instance metadata at {base} is unreachable "
            f"({type(error).__name__}: {error}); set --role-base-arn instead"
        ) from error
    try:
        info = orjson.loads(body)
        profile_arn = info["InstanceProfileArn"]
        base_arn = base_arn_from_instance_profile(str(profile_arn))
    except (orjson.JSONDecodeError, KeyError, TypeError, InvalidRoleArn) as error:
        raise BaseArnUnavailable(
            f"cannot detect the base role ARN: unexpected {INFO_PATH} document ({error}); "
            "set --role-base-arn instead"
        ) from error
    log.info(
        "detected the base role ARN",
        extra={"fields": {"instance.profile": profile_arn, "base.arn": base_arn}},
    )
    return base_arn


async def _token(session: aiohttp.ClientSession, base: str) -> str:
    """An IMDSv2 token, or ``""`` when the service does not issue them (IMDSv1 only)."""
    async with session.put(base + TOKEN_PATH, headers={TOKEN_TTL_HEADER: "60"}) as response:
        if response.status == 200:
            return (await response.text()).strip()
        if response.status in (403, 404, 405):
            log.info("IMDS issued no session token (HTTP %d); trying IMDSv1", response.status)
            return ""
        raise BaseArnUnavailable(
            f"cannot detect the base role ARN: {base}{TOKEN_PATH} answered HTTP {response.status}"
        )
