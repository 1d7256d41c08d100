from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from kiam.wire import kiam_pb2
from kiam.wire.credentials import (
    document_from_message,
    format_timestamp,
    parse_timestamp,
    render_document,
)


def test_timestamps_are_utc_seconds_with_z() -> None:
    moment = datetime(2026, 1, 1, 2, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(moment) == "2026-01-01T01:00:00Z"


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "text", ["2026-01-01T01:00:00Z", "2026-01-01T01:00:00.5Z", "2026-01-01T02:00:00+01:00"]
)
def test_parse_timestamp_forms(text: str) -> None:
    assert parse_timestamp(text).replace(microsecond=0) == datetime(2026, 1, 1, 1, tzinfo=UTC)


def test_document_from_message_matches_imds() -> None:
    message = kiam_pb2.Credentials(
        code="Success",
        type="AWS-HMAC",
        access_key_id="ASIAEXAMPLE",
        secret_access_key="secret",
        token="token",
        expiration="2026-01-01T01:00:00.000Z",
        last_updated="2026-01-01T00:00:00+00:00",
    )
    body = render_document(document_from_message(message))
    assert list(orjson.loads(body)) == [
        "Code", "LastUpdated", "Type", "AccessKeyId", "SecretAccessKey", "Token", "Expiration",
    ]
    assert orjson.loads(body)["Expiration"] == "2026-01-01T01:00:00Z"
    assert orjson.loads(body)["LastUpdated"] == "2026-01-01T00:00:00Z"
