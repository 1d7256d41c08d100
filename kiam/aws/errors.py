"""Errors of the AWS side. botocore's exceptions never leave ``kiam.aws``.

::

    AwsError                  anything that went wrong talking to AWS
    ├── StsAccessDenied       STS refused (AccessDenied, bad ExternalId, no trust): permanent,
    │                         never retried; the operator must fix IAM
    ├── StsThrottled          STS throttled us (Throttling, ...): retried with backoff
    ├── StsUnavailable        timeouts, connection errors and 5xx: retried with backoff
    └── StsFailure            any other STS error (validation, unknown codes): not retried
    BaseArnUnavailable        --role-base-arn-autodetect could not read the instance profile

The errors that are not ``retryable`` are permanent: the credential cache keeps them per
key for ``--sts-error-ttl`` (:mod:`kiam.aws.refusals`) and answers with a copy whose
``remembered`` is True, made without an STS call.

Messages name the role ARN, the AWS error code and AWS's message so an operator can act
on them; they never contain credentials.
"""

from __future__ import annotations


class AwsError(Exception):
    """Base of every error raised by ``kiam.aws``."""

    retryable: bool = False
    remembered: bool = False
    """True on a refusal answered from :class:`kiam.aws.refusals.RefusalMemory`."""

    def __init__(self, message: str, *, role_arn: str = "", code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.role_arn = role_arn
        self.code = code


class StsAccessDenied(AwsError):
    """STS refused to issue credentials for the role; retrying will not help."""


class StsThrottled(AwsError):
    """STS is throttling our calls."""

    retryable = True


class StsUnavailable(AwsError):
    """STS could not be reached or failed on its side (timeout, connection, 5xx)."""

    retryable = True


class StsFailure(AwsError):
    """Any other STS error."""


class BaseArnUnavailable(AwsError):
    """The base role ARN could not be detected from the instance metadata."""
