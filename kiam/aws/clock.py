"""Time for the credential cache, replaceable by a fake clock in tests."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    async def wait(self, event: asyncio.Event, *, at_most: float | None) -> None:
        """Return when ``event`` is set or ``at_most`` seconds have passed.

        Callers must tolerate early (spurious) returns: a fake clock wakes every waiter
        whenever its time moves.
        """
        ...


class SystemClock:
    """Wall-clock time; waits use the event loop's timers."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def wait(self, event: asyncio.Event, *, at_most: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), at_most)


SYSTEM_CLOCK = SystemClock()
