"""Fault injection for the STS stand-in: what can go wrong, the queue of faults to come,
and the STS error documents. Pure: no sockets here.

Faults apply to ``AssumeRole`` calls only; every other STS action (``GetCallerIdentity``
for instance) always reaches moto unchanged.
"""

from __future__ import annotations

import enum
import math
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs
from xml.sax.saxutils import escape


class FaultKind(enum.StrEnum):
    THROTTLING = "throttling"
    """HTTP 400, Sender/Throttling "Rate exceeded" (botocore retries it)."""
    ACCESS_DENIED = "access-denied"
    """HTTP 403, Sender/AccessDenied (permanent: must not be retried)."""
    INTERNAL_FAILURE = "internal-failure"
    """HTTP 500, Receiver/InternalFailure."""
    SERVICE_UNAVAILABLE = "service-unavailable"
    """HTTP 503, Receiver/ServiceUnavailable."""
    DELAY = "delay"
    """Wait ``delay`` seconds, then forward to moto as usual."""
    RESET = "reset"
    """Cut the connection (TCP RST) without an answer."""
    TIMEOUT = "timeout"
    """Answer nothing: hold the connection for ``delay`` seconds (default: until the
    stand-in stops), then cut it. The client's read timeout is what ends the call."""


# kind -> (HTTP status, error type, code, message)
ERRORS: dict[FaultKind, tuple[int, str, str, str]] = {
    FaultKind.THROTTLING: (400, "Sender", "Throttling", "Rate exceeded"),
    FaultKind.ACCESS_DENIED: (
        403,
        "Sender",
        "AccessDenied",
        "User: arn:aws:iam::123456789012:user/kiam-server is not authorized to perform: "
        "sts:AssumeRole on resource: {role_arn}",
    ),
    FaultKind.INTERNAL_FAILURE: (
        500,
        "Receiver",
        "InternalFailure",
        "The request processing has failed because of an unknown error.",
    ),
    FaultKind.SERVICE_UNAVAILABLE: (
        503,
        "Receiver",
        "ServiceUnavailable",
        "Service is unable to handle request.",
    ),
}


@dataclass(frozen=True, kw_only=True)
class Fault:
    """What to do to the next ``count`` AssumeRole calls (for ``role_arn`` only, if set)."""

    kind: FaultKind
    count: int = 1
    role_arn: str | None = None
    delay: float | None = None
    """Seconds to wait before acting (required for DELAY; the hold time for TIMEOUT)."""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("count must be at least 1")
        if self.kind is FaultKind.DELAY and self.delay is None:
            raise ValueError("a delay fault needs delay=<seconds>")
        if self.delay is not None and not (self.delay >= 0 and math.isfinite(self.delay)):
            raise ValueError("delay must be a finite number of seconds >= 0")

    def matches(self, role_arn: str) -> bool:
        return self.role_arn is None or self.role_arn == role_arn


@dataclass(kw_only=True)
class _Entry:
    fault: Fault
    remaining: int


class FaultQueue:
    """Faults in the order they were queued; each call takes from the first that matches."""

    def __init__(self) -> None:
        self._pending: list[_Entry] = []

    def add(self, fault: Fault) -> None:
        self._pending.append(_Entry(fault=fault, remaining=fault.count))

    def take(self, role_arn: str) -> Fault | None:
        """The fault for this call, if any, using up one of its count."""
        for index, entry in enumerate(self._pending):
            if entry.fault.matches(role_arn):
                entry.remaining -= 1
                if entry.remaining == 0:
                    del self._pending[index]
                return entry.fault
        return None

    def pending(self) -> int:
        """How many faulted calls are still to come (over every role)."""
        return sum(entry.remaining for entry in self._pending)

    def clear(self) -> None:
        self._pending.clear()


@dataclass(frozen=True, kw_only=True)
class AssumeRoleRequest:
    """The parameters of an AssumeRole call the stand-in cares about."""

    role_arn: str
    session_name: str
    external_id: str | None
    duration_seconds: int | None


def parse_action(body: bytes, query: str) -> tuple[str, dict[str, str]]:
    """The STS action and its parameters (form body for POST, query string for GET)."""
    params: dict[str, str] = {}
    for source in (query, body.decode("utf-8", "replace")):
        for key, values in parse_qs(source, keep_blank_values=True).items():
            params.setdefault(key, values[0])
    return params.get("Action", ""), params


def parse_assume_role(params: dict[str, str]) -> AssumeRoleRequest:
    duration = params.get("DurationSeconds")
    return AssumeRoleRequest(
        role_arn=params.get("RoleArn", ""),
        session_name=params.get("RoleSessionName", ""),
        external_id=params.get("ExternalId"),
        duration_seconds=int(duration) if duration and duration.isdigit() else None,
    )


def error_response(kind: FaultKind, *, role_arn: str) -> tuple[int, bytes]:
    """HTTP status and STS XML error body for an error fault."""
    status, error_type, code, message = ERRORS[kind]
    body = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<Error><Type>{error_type}</Type><Code>{code}</Code>"
        f"<Message>{escape(message.format(role_arn=role_arn))}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return status, body.encode()


def account_of(role_arn: str) -> str:
    """The account of ``arn:aws:iam::ACCOUNT:role/...`` ("" when it is not one)."""
    parts = role_arn.split(":")
    return parts[4] if len(parts) > 5 else ""


class AccountRateLimit:
    """STS's own throttling, as AWS describes it: a token bucket per account that refills
    at ``rate`` calls/s and holds ``burst``; a call finding it empty is throttled. Time
    comes in as ``now`` (seconds); ``rate`` 0 is no limit."""

    def __init__(self, *, rate: float = 0.0, burst: int = 0) -> None:
        if rate < 0 or burst < 0:
            raise ValueError("rate and burst must be >= 0")
        self.rate = rate
        self.burst = max(1, burst or math.ceil(rate))
        self._buckets: dict[str, tuple[float, float]] = {}  # account -> (tokens, at)

    def admit(self, account: str, *, now: float) -> bool:
        """True: the call goes through; False: STS answers Throttling."""
        if not self.rate:
            return True
        tokens, at = self._buckets.get(account, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
        if tokens < 1:
            self._buckets[account] = (tokens, max(at, now))
            return False
        self._buckets[account] = (tokens - 1, max(at, now))
        return True
