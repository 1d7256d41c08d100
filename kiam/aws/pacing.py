"""The asyncio side of :class:`kiam.aws.budget.StsBudget`: callers wait for their token.

Only the call at the head of the queue watches the clock (one timer, however many wait);
whoever changes the queue wakes the new head. Waits, the rate and the tokens are
exported as metrics (docs/metrics.md).
"""

from __future__ import annotations

import asyncio
import time

from kiam.aws import metrics
from kiam.aws.budget import Priority, StsBudget, Ticket
from kiam.aws.clock import SYSTEM_CLOCK, Clock
from kiam.aws.errors import StsThrottled


class Pacer:
    """Waits for :class:`StsBudget` tokens; tells it what STS answered."""

    def __init__(self, budget: StsBudget, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.budget = budget
        self._clock = clock
        self._events: dict[Ticket, asyncio.Event] = {}
        self._watcher: Ticket | None = None  # the head, waiting with a timer
        metrics.BUDGET_RATE.set_function(lambda: self.budget.rate)
        metrics.BUDGET_TOKENS.set_function(lambda: self.budget.tokens(now=self._now()))
        metrics.BUDGET_WAITING.set_function(lambda: self.budget.waiting)

    @classmethod
    def create(
        cls, *, qps: float, burst: int, concurrency: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> Pacer:
        budget = StsBudget(
            qps=qps, burst=burst, concurrency=concurrency, now=clock.now().timestamp()
        )
        return cls(budget, clock=clock)

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def enqueue(self, priority: Priority, *, deadline: float = 0.0) -> Ticket:
        """A place in the queue; :meth:`wait` for its token."""
        ticket = self.budget.enqueue(priority, deadline=deadline)
        self._events[ticket] = asyncio.Event()
        self._wake_head()
        return ticket

    def promote(self, ticket: Ticket, priority: Priority) -> None:
        self.budget.promote(ticket, priority)
        self._wake_head()

    async def wait(self, ticket: Ticket) -> None:
        """Until ``ticket`` has its token; cancelled, it leaves the queue."""
        event = self._events[ticket]
        started = time.monotonic()
        try:
            while True:
                now = self._now()
                for granted in self.budget.grant(now=now):
                    self._set(granted)
                event.clear()
                head = self.budget.head()
                if head is not None and head is not self._watcher:
                    self._set(head)  # a new head: it watches the clock from now on
                if ticket.granted:
                    break
                at_most = None
                if head is ticket:
                    self._watcher = ticket
                    at_most = self.budget.wait(now=now)
                await self._clock.wait(event, at_most=at_most)
        except BaseException:
            self.budget.cancel(ticket)
            self._wake_head()
            raise
        finally:
            self._events.pop(ticket, None)
            if self._watcher is ticket:
                self._watcher = None
        metrics.BUDGET_WAIT.labels(priority=ticket.priority.name.lower()).observe(
            time.monotonic() - started
        )

    async def turn(self, priority: Priority, *, deadline: float = 0.0) -> Ticket:
        """Queue and wait in one step."""
        ticket = self.enqueue(priority, deadline=deadline)
        await self.wait(ticket)
        return ticket

    def unused(self, ticket: Ticket) -> None:
        """A granted call that will not be made: its token (and place) go back."""
        self.budget.cancel(ticket)
        self._nudge()

    def finished(self, ticket: Ticket) -> None:
        """A granted call is over: a background call's place goes back."""
        if ticket.granted:
            self.budget.finished(ticket)
            self._nudge()

    def _nudge(self) -> None:
        head = self.budget.head()
        if head is not None:
            self._set(head)  # a token or a place is back: the head may go now

    def answered(self, error: BaseException | None) -> None:
        """What STS answered one call: throttling slows every call, success speeds up."""
        if error is None:
            self.budget.succeeded()
        elif isinstance(error, StsThrottled):
            self.budget.throttled(now=self._now())

    def _set(self, ticket: Ticket) -> None:
        event = self._events.get(ticket)
        if event is not None:
            event.set()

    def _wake_head(self) -> None:
        head = self.budget.head()
        if head is not None and head is not self._watcher:
            self._set(head)


__all__ = ["Pacer"]
