"""Fairness between pods: a per-caller limit on requests in flight and on their rate.

Pure bookkeeping, no I/O, time injected (``now``). Rules (docs/architecture.md,
"Fairness between pods"):

1. A caller is a TCP peer address, the agent's only notion of a pod.
2. A request is admitted while its caller has fewer than ``max_in_flight`` admitted
   requests unanswered, and a token in its bucket: a bucket holds up to ``burst``
   tokens, refills at ``rate`` per second, and each admitted request takes one. A
   refused request takes nothing, so a flooding pod is served again at ``rate`` as soon
   as it slows down, and never waits longer than it is told.
3. A refusal says which limit and how long to wait: ``retry_after`` whole seconds, at
   least 1 (HTTP's ``Retry-After`` counts whole seconds), the time until a token is
   back for the rate, 1 for requests in flight (one answer frees a place).
4. ``0`` turns a limit off.
5. Memory is bounded: at most ``capacity`` callers are remembered, the one seen longest
   ago forgotten first. Forgetting is lenient, never harsh: a forgotten caller starts
   again with a full bucket, and the answers to its requests still in flight release
   nothing. A caller with nothing in flight and a full bucket is the same as one never
   seen, so it is forgotten at once.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

CAPACITY = 4096
"""Callers remembered: far more than the pods one node runs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerLimits:
    max_in_flight: int
    """Admitted requests of one caller not yet answered; 0: no limit."""
    rate: float
    """Requests per second one caller is admitted at, sustained; 0: no limit."""
    burst: int
    """Requests one caller may make at once above ``rate`` (the bucket's size)."""


NO_LIMITS = CallerLimits(max_in_flight=0, rate=0, burst=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """The caller must wait; the answer is 429 with ``Retry-After: retry_after``."""

    limit: Literal["in_flight", "rate"]
    retry_after: int


@dataclass(slots=True)
class _Caller:
    tokens: float
    updated: float
    in_flight: int = 0


class CallerLimiter:
    """Admits or refuses each caller's requests by :class:`CallerLimits`."""

    def __init__(self, limits: CallerLimits, *, capacity: int = CAPACITY) -> None:
        self.limits = limits
        self.capacity = capacity
        self._callers: OrderedDict[str, _Caller] = OrderedDict()

    def __len__(self) -> int:
        """Callers remembered."""
        return len(self._callers)

    def admit(self, caller: str, *, now: float) -> Refused | None:
        """``None``: admitted, and :meth:`release` must follow once it is answered."""
        limits = self.limits
        state = self._callers.get(caller)
        if state is None:
            state = _Caller(tokens=limits.burst, updated=now)
            self._callers[caller] = state
            while len(self._callers) > self.capacity:
                self._callers.popitem(last=False)
        else:
            self._callers.move_to_end(caller)
            # a clock that went back refills nothing
            elapsed = max(now - state.updated, 0.0)
            state.tokens = min(limits.burst, state.tokens + elapsed * limits.rate)
            state.updated = now
        if limits.max_in_flight and state.in_flight >= limits.max_in_flight:
            return Refused(limit="in_flight", retry_after=1)
        if limits.rate:
            if state.tokens < 1:
                # more than 0 s, so at least 1
                wait = (1 - state.tokens) / limits.rate
                return Refused(limit="rate", retry_after=math.ceil(wait))
            state.tokens -= 1
        state.in_flight += 1
        return None

    def release(self, caller: str, *, now: float) -> None:
        """One admitted request of ``caller`` was answered."""
        state = self._callers.get(caller)
        if state is None:
            return  # forgotten while in flight (rule 5)
        state.in_flight -= 1
        full = state.tokens + (now - state.updated) * self.limits.rate
        if state.in_flight == 0 and full >= self.limits.burst:
            del self._callers[caller]


__all__ = ["CAPACITY", "NO_LIMITS", "CallerLimiter", "CallerLimits", "Refused"]
