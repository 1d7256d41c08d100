"""The IMDS credentials document and its timestamps.

Both the server (filling the gRPC ``Credentials`` message) and the agent (rendering the
JSON a pod's SDK reads) use these, so the two sides agree on one format: RFC 3339 in
UTC with second precision and a ``Z``, as IMDS and Go Kiam write it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypedDict

import orjson

from kiam.wire import kiam_pb2


class CredentialsDocument(TypedDict):
    """What ``GET /latest/meta-data/iam/security-credentials/<role>`` returns."""

    Code: str
    LastUpdated: str
    Type: str
    AccessKeyId: str
    SecretAccessKey: str
    Token: str
    Expiration: str


def format_timestamp(moment: datetime) -> str:
    """``2026-01-01T01:00:00Z``: UTC, second precision."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or an offset, optional fraction) into UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment.astimezone(UTC)


def document_from_message(message: kiam_pb2.Credentials) -> CredentialsDocument:
    """Build the IMDS JSON document from the gRPC message, normalising the timestamps."""
    return CredentialsDocument(
        Code=message.code or "Success",
        LastUpdated=format_timestamp(parse_timestamp(message.last_updated)),
        Type=message.type or "AWS-HMAC",
        AccessKeyId=message.access_key_id,
        SecretAccessKey=message.secret_access_key,
        Token=message.token,
        Expiration=format_timestamp(parse_timestamp(message.expiration)),
    )


def render_document(document: CredentialsDocument) -> bytes:
    """The document's bytes, field order as IMDS writes it."""
    return orjson.dumps(document)
