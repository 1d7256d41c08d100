"""Permanent STS refusals, remembered per credential key for ``--sts-error-ttl``.

Rules (docs/sts.md):

1. Only a permanent refusal is kept: an error that is not ``retryable``
   (:class:`~kiam.aws.errors.StsAccessDenied`, :class:`~kiam.aws.errors.StsFailure`).
   Throttling and outages say nothing about the role, so they are never kept.
2. A kept refusal answers for its key until ``ttl`` seconds after it was given; at that
   moment it is gone, and the next request makes one STS call again. A ``ttl`` of 0
   keeps nothing.
3. Each window is reported once (log line, Event), not once per request. A caller that
   got the refusal from STS itself reports it and says so (:meth:`RefusalMemory.reported`).
   :meth:`RefusalMemory.recall` hands out a copy: unmarked while nobody has reported the
   window yet (STS refused a prefetch or a refresh), so that caller reports it, and
   marked ``remembered`` afterwards, to be answered quietly.
4. :meth:`RefusalMemory.forget` drops the refusals of the keys it is given (an annotation
   changed on a pod or a namespace): the next request asks STS at once.

Pure: time comes in as ``now``; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from kiam.aws.credentials import CredentialKey
from kiam.aws.errors import AwsError


@dataclass(slots=True, kw_only=True)
class _Refusal:
    error: AwsError
    until: datetime
    reported: bool = False


class RefusalMemory:
    """See the module docstring."""

    def __init__(self, *, ttl: float) -> None:
        if ttl < 0:
            raise ValueError("the refusal TTL cannot be negative")
        self._ttl = timedelta(seconds=ttl)
        self._kept: dict[CredentialKey, _Refusal] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def remember(self, key: CredentialKey, error: AwsError, *, now: datetime) -> bool:
        """Keep ``error`` for ``key`` when it is permanent (rule 1); True when kept."""
        if error.retryable or not self._ttl:
            return False
        self._kept[key] = _Refusal(error=error, until=now + self._ttl)
        return True

    def recall(self, key: CredentialKey, *, now: datetime) -> AwsError | None:
        """A remembered copy of the refusal kept for ``key`` (rules 2, 3), or None."""
        refusal = self._kept.get(key)
        if refusal is None:
            return None
        if now >= refusal.until:
            del self._kept[key]
            return None
        original = refusal.error
        copy = type(original)(original.message, role_arn=original.role_arn, code=original.code)
        copy.remembered = refusal.reported
        refusal.reported = True
        return copy

    def reported(self, key: CredentialKey) -> None:
        """Say that the refusal kept for ``key``, if any, has been reported (rule 3)."""
        refusal = self._kept.get(key)
        if refusal is not None:
            refusal.reported = True

    def until(self, key: CredentialKey, *, now: datetime) -> datetime | None:
        """When the refusal kept for ``key`` ends, or None when none is kept at ``now``."""
        refusal = self._kept.get(key)
        if refusal is None or now >= refusal.until:
            return None
        return refusal.until

    def forget(self, keys: Iterable[CredentialKey]) -> int:
        """Drop the refusals kept for ``keys`` (rule 4); how many there were."""
        return sum(self._kept.pop(key, None) is not None for key in keys)

    def expire(self, *, now: datetime) -> int:
        """Drop every refusal whose window has closed; how many there were."""
        gone = [key for key, refusal in self._kept.items() if now >= refusal.until]
        for key in gone:
            del self._kept[key]
        return len(gone)
