"""Named root tasks under one supervisor.

Signals only set the stop flag; the first root task to end (or fail) stops the rest;
shutdown waits a bounded time. Both daemons run their parts through this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    """Run named coroutines until one ends or :meth:`stop` is called, then cancel the rest."""

    def __init__(self, *, shutdown_timeout: float = 10.0) -> None:
        self._stop = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._shutdown_timeout = shutdown_timeout
        self._cleanups: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self.failed: BaseException | None = None

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._on_done)
        return task

    def on_shutdown(self, name: str, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Register a cleanup; cleanups run in reverse registration order after the tasks end."""
        self._cleanups.append((name, cleanup))

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        if not self._stop.is_set():
            if task.cancelled():
                log.info("task %s was cancelled; stopping", task.get_name())
            elif (exc := task.exception()) is not None:
                log.error("task %s failed: %s; stopping", task.get_name(), exc, exc_info=exc)
                self.failed = self.failed or exc
            else:
                log.info("task %s ended; stopping", task.get_name())
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s; shutting down", sig.name)
        self._stop.set()

    async def wait(self) -> None:
        """Wait for the stop flag, then cancel the tasks and run the cleanups, each bounded."""
        await self._stop.wait()
        pending = [t for t in self._tasks.values() if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            _, still = await asyncio.wait(pending, timeout=self._shutdown_timeout)
            for task in still:
                log.warning(
                    "task %s did not stop within %ss", task.get_name(), self._shutdown_timeout
                )
        for name, cleanup in reversed(self._cleanups):
            try:
                await asyncio.wait_for(cleanup(), timeout=self._shutdown_timeout)
            except Exception as exc:
                log.warning("shutdown step %s failed: %s", name, exc)
        for task in self._tasks.values():
            if task.done() and not task.cancelled():
                with contextlib.suppress(BaseException):
                    task.exception()
