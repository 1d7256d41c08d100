"""Credentials issued by STS, and the key they are cached under."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kiam.aws.arn import RoleArn

MIN_SESSION_DURATION = 15 * 60.0
"""Seconds: the shortest session STS grants, and Kiam's default ``--session-duration``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """Temporary credentials for one role session.

    ``expiration`` and ``last_updated`` are timezone-aware (UTC). ``repr`` and ``str``
    show the access key id only: the secret and the token must never reach a log.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    last_updated: datetime

    def __post_init__(self) -> None:
        if self.expiration.tzinfo is None or self.last_updated.tzinfo is None:
            raise ValueError("credential timestamps must be timezone-aware")

    def remaining(self, now: datetime) -> timedelta:
        """Time left before expiry at ``now`` (negative once expired)."""
        return self.expiration - now

    def __str__(self) -> str:
        return f"Credentials({self.access_key_id}, expires {self.expiration.isoformat()})"


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialKey:
    """What one set of credentials is issued for: one STS session per key."""

    role_arn: RoleArn
    session_name: str
    external_id: str = ""
