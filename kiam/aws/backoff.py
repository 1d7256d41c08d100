"""Per-key backoff while STS throttles: the cache's retries, not botocore's.

Rules (docs/sts.md):

1. A throttled call (:class:`~kiam.aws.errors.StsThrottled`) opens a backoff step for its
   key; while the step lasts, no STS call is made for that key: requests get the
   throttling error at once (a copy marked ``remembered``), background work waits.
2. Step ``n`` lasts ``min(cap, base * 2**(n-1))`` seconds, times a jitter factor in
   [1/2, 1) so that keys throttled together do not come back together.
3. A successful call ends the backoff for its key; a throttled one after a step has ended
   opens the next, longer step. So a key costs at most one STS call per step.
4. A step that ended more than ``cap`` seconds ago is forgotten (the next throttle starts
   at step 1 again), so keys nobody asks for any more do not pile up.

Pure: time comes in as ``now``, randomness as ``rng``; no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from kiam.aws.credentials import CredentialKey
from kiam.aws.errors import AwsError, StsThrottled


@dataclass(slots=True, kw_only=True)
class _Step:
    number: int
    until: datetime
    error: AwsError


class ThrottleBackoff:
    """See the module docstring."""

    def __init__(
        self, *, base: float = 1.0, cap: float = 30.0, rng: Callable[[], float] = random.random
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self._base = base
        self._cap = cap
        self._rng = rng
        self._steps: dict[CredentialKey, _Step] = {}

    def __len__(self) -> int:
        return len(self._steps)

    def delay(self, number: int) -> float:
        """Seconds step ``number`` (1-based) lasts, before jitter (rule 2)."""
        return min(self._cap, self._base * 2.0 ** (number - 1))

    def failed(self, key: CredentialKey, error: AwsError, *, now: datetime) -> datetime | None:
        """Open the next step for ``key`` when ``error`` is throttling (rules 1, 3); when
        it ends, or None for any other error."""
        if not isinstance(error, StsThrottled):
            return None
        self._prune(now)
        previous = self._steps.get(key)
        number = 1 if previous is None else previous.number + 1
        seconds = self.delay(number) * (0.5 + self._rng() / 2)
        until = now + timedelta(seconds=seconds)
        self._steps[key] = _Step(number=number, until=until, error=error)
        return until

    def succeeded(self, key: CredentialKey) -> None:
        """End the backoff for ``key`` (rule 3)."""
        self._steps.pop(key, None)

    def until(self, key: CredentialKey, *, now: datetime) -> datetime | None:
        """When the current step for ``key`` ends, or None when no step lasts at ``now``."""
        step = self._steps.get(key)
        if step is None or now >= step.until:
            return None
        return step.until

    def blocked(self, key: CredentialKey, *, now: datetime) -> AwsError | None:
        """While a step lasts: a copy of its throttling error, marked ``remembered``."""
        step = self._steps.get(key)
        if step is None or now >= step.until:
            return None
        original = step.error
        seconds = (step.until - now).total_seconds()
        copy = type(original)(
            f"{original.message} (backing off: next attempt in {seconds:.1f}s)",
            role_arn=original.role_arn,
            code=original.code,
        )
        copy.remembered = True
        return copy

    def _prune(self, now: datetime) -> None:
        """Rule 4."""
        horizon = now - timedelta(seconds=self._cap)
        for key in [k for k, step in self._steps.items() if step.until <= horizon]:
            del self._steps[key]
