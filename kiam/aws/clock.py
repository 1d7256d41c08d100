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
        # not wait_for: on Python 3.11 it swallows a cancellation that arrives as the
        # event is set, and a cancelled fetch would go on to call STS
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await event.wait()


SYSTEM_CLOCK = SystemClock()
