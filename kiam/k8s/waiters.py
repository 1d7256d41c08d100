"""Event-driven waiting for a cache entry that the watch has not delivered yet.

Both caches let a request wait for a key (a pod IP, a namespace name) until the watch
brings it, bounded by the request's deadline, without polling: a waiter parks on a
future that the cache wakes when it stores something under that key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


class KeyedWaiters:
    """Futures parked per key; :meth:`wake` resolves them, :meth:`wait_for` loops on a
    lookup until it answers or the time is up."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def __bool__(self) -> bool:
        return bool(self._waiters)

    def waiting_keys(self) -> list[str]:
        """The keys someone waits for now."""
        return list(self._waiters)

    async def wait_for(
        self,
        key: str,
        lookup: Callable[[], T | None],
        *,
        timeout: float,  # noqa: ASYNC109
    ) -> T | None:
        """``lookup()``'s first non-None answer, re-asked each time ``key`` is woken, or
        its last answer (None) once ``timeout`` seconds have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (found := lookup()) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(key, []).append(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                return lookup()
            finally:
                self._forget(key, waiter)
        return found

    def wake(self, keys: Iterable[str]) -> None:
        """Resolve every waiter parked on one of ``keys``."""
        if not self._waiters:
            return
        for key in keys:
            for waiter in self._waiters.pop(key, ()):
                if not waiter.done():
                    waiter.set_result(None)

    def _forget(self, key: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(key)
        if waiters is None:
            return
        with contextlib.suppress(ValueError):
            waiters.remove(waiter)
        if not waiters:
            del self._waiters[key]
