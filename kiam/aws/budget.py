"""The server-wide STS budget: a token bucket with priorities and an adaptive rate.

Every AssumeRole the credential cache makes takes a token first (docs/sts.md). Rules:

1. The bucket refills at the current ``rate`` (calls/s) and holds up to ``burst`` tokens,
   scaled by ``rate / qps`` while the rate is below ``qps`` (never less than one); each
   call takes one. A clock that goes back refills nothing.
2. Calls wait in one queue and tokens go to the first in it: calls a pod is waiting for
   (:attr:`Priority.POD`) first, then refreshes by deadline, earliest first
   (:attr:`Priority.REFRESH`), then prefetch (:attr:`Priority.PREFETCH`); ties in
   arrival order. A waiting call can be promoted (a pod joins a prefetch) or cancelled.
   With ``concurrency``, background calls (refresh, prefetch) also need one of that many
   places: a token goes to one only while fewer background calls are running, so tokens
   are spent when calls start, never banked by calls that wait for a place.
3. Adaptive rate, AIMD: a throttled answer halves the rate (multiplicative decrease by
   ``decrease``), at most once per ``cooldown`` seconds, since the answers to calls sent
   together report the same overload, and empties the bucket; never below ``floor``.
   Each successful call adds ``increase`` calls/s back (additive increase), up to
   ``qps``.

Pure: time comes in as ``now`` (seconds, any monotonic origin); no I/O.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from dataclasses import dataclass, field


class Priority(enum.IntEnum):
    """Who gets the next token: the lowest value first (rule 2)."""

    POD = 0
    REFRESH = 1
    PREFETCH = 2


@dataclass(eq=False, slots=True, kw_only=True)
class Ticket:
    """One call's place in the queue: ``queued`` while it waits, then ``granted`` until
    it is finished (or cancelled)."""

    priority: Priority
    deadline: float
    queued: bool = False
    granted: bool = False
    _order: tuple[int, float, int] = field(init=False, repr=False)  # set when queued


class StsBudget:
    """See the module docstring."""

    def __init__(
        self,
        *,
        qps: float,
        burst: int,
        now: float,
        floor: float | None = None,
        increase: float | None = None,
        decrease: float = 0.5,
        cooldown: float = 1.0,
        concurrency: int | None = None,
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("the STS budget needs qps > 0 and burst >= 1")
        if not 0 < decrease < 1:
            raise ValueError("the decrease factor must be between 0 and 1")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.qps = qps
        self.burst = burst
        self.floor = min(qps, 1.0) if floor is None else min(qps, floor)
        self.increase = qps / 20 if increase is None else increase
        self.decrease = decrease
        self.cooldown = cooldown
        self.concurrency = concurrency
        self._running = 0  # background calls granted and not finished
        self._rate = qps
        self._tokens = float(burst)
        self._updated = now
        self._decreased_at: float | None = None
        self._queue: list[tuple[tuple[int, float, int], Ticket]] = []
        self._waiting = 0
        self._seq = itertools.count()

    # -- state -------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """Calls per second the bucket refills at now (rule 3)."""
        return self._rate

    @property
    def capacity(self) -> float:
        """Tokens the bucket holds at most at the current rate (rule 1)."""
        return max(1.0, self.burst * self._rate / self.qps)

    @property
    def waiting(self) -> int:
        """Calls in the queue."""
        return self._waiting

    @property
    def running(self) -> int:
        """Background calls granted and not finished yet (rule 2)."""
        return self._running

    def tokens(self, *, now: float) -> float:
        """Tokens in the bucket at ``now``, without taking any."""
        elapsed = max(0.0, now - self._updated)
        return min(self.capacity, self._tokens + elapsed * self._rate)

    # -- the queue ---------------------------------------------------------------------

    def enqueue(self, priority: Priority, *, deadline: float = 0.0) -> Ticket:
        """Queue a call; ``deadline`` orders refreshes (rule 2)."""
        ticket = Ticket(priority=priority, deadline=deadline)
        self._push(ticket)
        return ticket

    def promote(self, ticket: Ticket, priority: Priority) -> None:
        """Move a waiting call up to ``priority``; a granted or higher one stays."""
        if ticket.queued and priority < ticket.priority:
            ticket.priority = priority
            self._push(ticket)  # the old entry is skipped: its order no longer matches

    def cancel(self, ticket: Ticket) -> None:
        """Take a call out of the queue; a granted call that will not be made gives its
        token back."""
        if ticket.queued:
            ticket.queued = False
            self._waiting -= 1
        elif ticket.granted:
            self.finished(ticket)
            self._tokens = min(self.capacity, self._tokens + 1)

    def finished(self, ticket: Ticket) -> None:
        """A granted call is over: a background call gives its place back (rule 2)."""
        if ticket.granted:
            ticket.granted = False
            if ticket.priority is not Priority.POD:
                self._running -= 1

    def head(self) -> Ticket | None:
        """The call the next token goes to."""
        self._skip_stale()
        return self._queue[0][1] if self._queue else None

    def grant(self, *, now: float) -> list[Ticket]:
        """Hand the tokens in the bucket to the first calls in the queue (rules 1, 2)."""
        self._refill(now)
        granted = []
        while self._tokens >= 1 and (ticket := self.head()) is not None:
            background = ticket.priority is not Priority.POD
            if background and self._full():
                break  # the queue's order: nothing behind the head goes first
            heapq.heappop(self._queue)
            ticket.queued = False
            ticket.granted = True
            self._waiting -= 1
            self._tokens -= 1
            self._running += background
            granted.append(ticket)
        return granted

    def wait(self, *, now: float) -> float | None:
        """Seconds until the first call in the queue gets a token; None when none waits,
        or when the first waits for a background call to finish, not for time."""
        head = self.head()
        if head is None or (head.priority is not Priority.POD and self._full()):
            return None
        missing = 1 - self.tokens(now=now)
        return max(0.0, missing / self._rate)

    # -- what STS answered -------------------------------------------------------------

    def throttled(self, *, now: float) -> bool:
        """STS throttled a call: decrease the rate (rule 3); True when it did."""
        if self._decreased_at is not None and now - self._decreased_at < self.cooldown:
            return False
        self._refill(now)
        self._decreased_at = now
        self._rate = max(self.floor, self._rate * self.decrease)
        self._tokens = 0.0
        return True

    def succeeded(self) -> None:
        """A call succeeded: increase the rate (rule 3)."""
        self._rate = min(self.qps, self._rate + self.increase)

    # -- inside --------------------------------------------------------------------------

    def _full(self) -> bool:
        return self.concurrency is not None and self._running >= self.concurrency

    def _push(self, ticket: Ticket) -> None:
        if not ticket.queued:
            self._waiting += 1
        ticket.queued = True
        seq = next(self._seq)
        # refreshes by deadline; the others in arrival order
        deadline = ticket.deadline if ticket.priority is Priority.REFRESH else float(seq)
        ticket._order = (int(ticket.priority), deadline, seq)
        heapq.heappush(self._queue, (ticket._order, ticket))

    def _skip_stale(self) -> None:
        while self._queue:
            order, ticket = self._queue[0]
            if ticket.queued and ticket._order == order:
                return
            heapq.heappop(self._queue)

    def _refill(self, now: float) -> None:
        self._tokens = self.tokens(now=now)
        self._updated = max(self._updated, now)


__all__ = ["Priority", "StsBudget", "Ticket"]
