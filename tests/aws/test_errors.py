"""botocore's exceptions, translated at the boundary (pure: no sockets)."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from kiam.aws.errors import AwsError, StsAccessDenied, StsFailure, StsThrottled, StsUnavailable
from kiam.aws.sts import resolve_endpoint, translate_error

ROLE = "arn:aws:iam::123456789012:role/reader"


def client_error(code: str, status: int, message: str = "the message") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "AssumeRole",
    )


@pytest.mark.parametrize(
    ("error", "kind", "retryable"),
    [
        (client_error("AccessDenied", 403), StsAccessDenied, False),
        (client_error("InvalidClientTokenId", 403), StsAccessDenied, False),
        (client_error("Throttling", 400), StsThrottled, True),
        (client_error("RequestLimitExceeded", 400), StsThrottled, True),
        (client_error("Whatever", 429), StsThrottled, True),
        (client_error("InternalFailure", 500), StsUnavailable, True),
        (client_error("Unknown", 503), StsUnavailable, True),
        (client_error("IDPCommunicationError", 400), StsUnavailable, True),
        (client_error("ValidationError", 400), StsFailure, False),
        (client_error("MalformedPolicyDocument", 400), StsFailure, False),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), StsUnavailable, True),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"), StsUnavailable, True),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), StsUnavailable, True),
        (NoCredentialsError(), StsFailure, False),
    ],
)
def test_translation(error: Exception, kind: type[AwsError], retryable: bool) -> None:
    translated = translate_error(error, role_arn=ROLE)
    assert type(translated) is kind
    assert translated.retryable is retryable
    assert isinstance(translated, AwsError)
    assert ROLE in str(translated)
    assert translated.role_arn == ROLE


def test_message_has_what_an_operator_needs() -> None:
    translated = translate_error(
        client_error("AccessDenied", 403, "User x is not authorized to perform sts:AssumeRole"),
        role_arn=ROLE,
    )
    assert translated.code == "AccessDenied"
    assert str(translated) == (
        f"STS AssumeRole {ROLE}: AccessDenied (HTTP 403): "
        "User x is not authorized to perform sts:AssumeRole"
    )


def test_no_credentials_message_says_where_they_come_from() -> None:
    assert "no AWS credentials" in str(translate_error(NoCredentialsError(), role_arn=ROLE))


@pytest.mark.parametrize(
    ("region", "endpoint", "expected"),
    [
        ("", "", ("us-east-1", "https://sts.amazonaws.com")),
        ("eu-west-1", "", ("eu-west-1", "https://sts.eu-west-1.amazonaws.com")),
        ("cn-north-1", "", ("cn-north-1", "https://sts.cn-north-1.amazonaws.com.cn")),
        ("us-gov-east-1", "", ("us-gov-east-1", "https://sts.us-gov-east-1.amazonaws.com")),
        ("eu-west-1", "http://127.0.0.1:5000", ("eu-west-1", "http://127.0.0.1:5000")),
        ("", "http://127.0.0.1:5000", ("us-east-1", "http://127.0.0.1:5000")),
        ("us-east-1-fips", "", ("us-east-1", "https://sts-fips.us-east-1.amazonaws.com")),
        ("us-west-2-fips", "http://127.0.0.1:5000", ("us-west-2", "http://127.0.0.1:5000")),
    ],
)
def test_resolve_endpoint(region: str, endpoint: str, expected: tuple[str, str]) -> None:
    assert resolve_endpoint(region=region, endpoint_url=endpoint) == expected
