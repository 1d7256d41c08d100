"""The one lifecycle of both daemons: start in order, run root tasks, stop in a stated order.

::

    async with Supervisor("kiam agent", shutdown_order=("stop http", TASKS, "close")) as daemon:
        client = make_client()
        daemon.on_stop("close", client.close)        # registered as soon as there is
        runner = await start_http()                  # something to undo
        daemon.on_stop("stop http", runner.cleanup)
        daemon.start("token-purge", purge_forever())  # a root task
        return await daemon.run()                    # logs "kiam agent ready", waits

1. **Start-up** is the body of the ``async with``, step by step; a step that fails ends
   the process after the steps already taken are undone (the same shutdown as below, for
   what was registered). There are no hand-written clean-ups on error paths.
2. **Ready**: :meth:`Supervisor.run` is reached only when every start step has
   completed; it logs one ``<name> ready`` line (after its ``ready`` condition, when one
   is given) and waits for the stop flag.
3. **Signals** (SIGTERM, SIGINT) only set the stop flag, from the moment the ``async
   with`` is entered: a signal during start-up is honoured once start-up is done, and
   everything it set up is still undone in order.
4. **The first root task to end or fail** sets the stop flag too; a failure makes the
   exit code 1.
5. **Shutdown** runs the steps in ``shutdown_order``, which each daemon states once: not
   the order of registration, because an order such as "stop taking requests, then
   remove the iptables rule" is not the reverse of the start order. :data:`TASKS` is the
   step that cancels the root tasks. Steps never registered (start-up did not get that
   far) are skipped. Each step gets at most ``shutdown_timeout`` seconds; one that fails
   or overruns is logged and the next step still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

TASKS = "stop tasks"
"""The shutdown step that cancels the root tasks and waits for them."""

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Supervisor:
    """A daemon's start-up, root tasks and ordered, bounded shutdown (see the module)."""

    def __init__(
        self, name: str, *, shutdown_order: Sequence[str], shutdown_timeout: float = 10.0
    ) -> None:
        if TASKS not in shutdown_order or len(set(shutdown_order)) != len(shutdown_order):
            raise ValueError(f"shutdown_order must name each step once, {TASKS!r} among them")
        self.name = name
        self.failed: BaseException | None = None
        """The first root task's failure, if any."""
        self._order = tuple(shutdown_order)
        self._timeout = shutdown_timeout
        self._stop = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._steps: dict[str, list[Callable[[], Awaitable[object]]]] = {}
        self._started = False

    # ------------------------------------------------------------ start-up

    async def __aenter__(self) -> Supervisor:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def on_stop(self, step: str, stop: Callable[[], Awaitable[object]]) -> None:
        """Undo something just set up, at ``step`` of the shutdown order.

        Several undos may share a step; they run in reverse registration order.
        """
        if step not in self._order or step == TASKS:
            raise ValueError(f"{step!r} is not a step of {self.name}'s shutdown order")
        self._steps.setdefault(step, []).insert(0, stop)

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A root task: when it ends or fails, the daemon stops."""
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._on_done)
        return task

    async def run(
        self,
        *,
        ready: Callable[[], Awaitable[None]] | None = None,
        fields: Mapping[str, object] | None = None,
    ) -> int:
        """Start-up is complete: log ``<name> ready`` (once ``ready`` returns) and wait
        for the stop flag. The exit code: 1 when a root task failed, else 0."""
        self._started = True
        announcer = asyncio.create_task(self._announce(ready, fields), name="ready")
        try:
            await self._stop.wait()
        finally:
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer
        return 1 if self.failed is not None else 0

    def stop(self) -> None:
        self._stop.set()

    async def _announce(
        self, ready: Callable[[], Awaitable[None]] | None, fields: Mapping[str, object] | None
    ) -> None:
        try:
            if ready is not None:
                await ready()
        except Exception as exc:
            log.error("%s cannot become ready: %s; stopping", self.name, exc, exc_info=exc)
            self.failed = self.failed or exc
            self._stop.set()
            return
        log.info("%s ready", self.name, extra={"fields": dict(fields or {})})

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s; shutting down", sig.name)
        self._stop.set()

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

    # ------------------------------------------------------------ shutdown

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        try:
            for step in self._order:
                if step == TASKS:
                    await self._stop_tasks()
                for stop in self._steps.get(step, ()):
                    await self._bounded(step, stop)
        finally:
            loop = asyncio.get_running_loop()
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
        if self._started:
            # a failed start-up is reported by its caller, in one line
            log.info("%s stopped", self.name)

    async def _bounded(self, step: str, stop: Callable[[], Awaitable[object]]) -> None:
        try:
            await asyncio.wait_for(stop(), timeout=self._timeout)
        except TimeoutError:
            log.warning("shutdown step %s did not finish within %ss", step, self._timeout)
        except Exception as exc:
            log.warning("shutdown step %s failed: %s", step, exc)

    async def _stop_tasks(self) -> None:
        pending = [task for task in self._tasks.values() if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            _, still = await asyncio.wait(pending, timeout=self._timeout)
            for task in still:
                log.warning("task %s did not stop within %ss", task.get_name(), self._timeout)
        for task in self._tasks.values():
            if task.done() and not task.cancelled():
                with contextlib.suppress(BaseException):
                    task.exception()  # retrieved: asyncio must not log it again
