"""The one way the test bed starts and stops a process: :class:`Child`.

Every process the tests, the demo and the benchmarks start (stand-ins, ``kiam server``,
``kiam agent``, ``kiam certs``) is a :class:`Child`:

- its stdout and stderr go to one log file, so no pipe fills up and the log outlives it;
- it dies with the process that started it (``PR_SET_PDEATHSIG``, set by ``setpriv``),
  whatever kills that (strictly: with the *thread* that started it, so start children
  from a thread that outlives them, the main thread or an event loop's, never
  ``to_thread``);
- a Ctrl-C or SIGTERM arriving while it is being started is held until its handle
  exists (:func:`signals_deferred`), so no child escapes its owner's clean-up;
- readiness is a log line: :meth:`Child.wait_for` returns the first match of a regex,
  or raises :class:`HarnessError` (with the log's tail) when the process ends first or
  the time runs out;
- :meth:`Child.stop` sends SIGTERM, then SIGKILL after a grace, and returns the exit
  code; calling it again returns the same code.

:class:`AsyncChild` is the same handle for asyncio callers: the waits poll the log file
without blocking the event loop. :class:`HarnessError` is the harness's one error class.

Synchronous at heart on purpose: starting and stopping processes is set-up work.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Self

READY_TIMEOUT = 30.0
"""Seconds a process gets to say it is ready (start-up imports are slow on busy CI)."""
STOP_TIMEOUT = 10.0
"""Seconds a process gets after SIGTERM before SIGKILL."""
_POLL = 0.05

# Dying with the parent is set by util-linux's setpriv, which execs the command: a
# preexec_fn would make Python fork() and run its at-fork hooks in the child, which
# aborts the child of a process with gRPC running (the server suite's). Essential in
# Debian; PR_SET_PDEATHSIG survives the exec (and ``ip netns exec``'s).
_SETPRIV = ["setpriv", "--pdeathsig", "TERM", "--"]


class HarnessError(Exception):
    """A process did not start, did not become ready, or ended unexpectedly; or a
    request the harness made for a test failed. The message carries the log's tail."""


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the duration of the block; act on them at its end.

    Python-level handlers (not a blocked signal mask) so that a child started inside
    the block gets the default dispositions back at exec, and stays stoppable. A signal
    whose handler was "ignore" stays ignored. Only the main thread may set handlers;
    elsewhere the block runs unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(held):
            handler = previous[signal.Signals(signum)]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


@dataclass(eq=False)
class Child:
    """One child process and its log file; see the module docstring."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls,
        name: str,
        command: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path | None = None,
        pipes: bool = False,
    ) -> Self:
        """Start ``command`` with stdin closed and its output in ``log_path``; with
        ``pipes``, stdin and stdout are pipes to talk to it (only stderr is logged)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with signals_deferred(), log_path.open("wb") as log:
            popen = subprocess.Popen(
                [*_SETPRIV, *command],
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log,
                stderr=log,
                env=dict(env),
                cwd=cwd,
            )
            return cls(name=name, popen=popen, log_path=log_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[str]:
        return self.log().splitlines()

    def diagnostics(self, *, lines: int = 30) -> str:
        code = self.popen.poll()
        state = "running" if code is None else f"exited {code}"
        tail = "\n".join(self.log_lines()[-lines:])
        return f"{self.name} ({state}); last lines:\n{tail}"

    def find(self, pattern: str) -> re.Match[str] | None:
        """The first match of the regex ``pattern`` in a line of the log so far."""
        regex = re.compile(pattern)
        return next(filter(None, map(regex.search, self.log_lines())), None)

    def check_ready(self, pattern: str) -> re.Match[str] | None:
        """:meth:`find`, raising :class:`HarnessError` when the process has ended."""
        if match := self.find(pattern):
            return match
        if self.popen.poll() is not None:
            if match := self.find(pattern):  # the line may have come as it exited
                return match
            raise HarnessError(f"no log line matching {pattern!r}: {self.diagnostics()}")
        return None

    def wait_for(self, pattern: str, *, timeout: float = READY_TIMEOUT) -> re.Match[str]:
        """The first log line matching ``pattern``, waiting for it."""
        deadline = time.monotonic() + timeout
        while (match := self.check_ready(pattern)) is None:
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"no log line matching {pattern!r} within {timeout}s: {self.diagnostics()}"
                )
            time.sleep(_POLL)
        return match

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


class AsyncChild:
    """:class:`Child` for asyncio callers: waits poll the log without blocking the loop."""

    def __init__(self, child: Child) -> None:
        self.child = child

    @classmethod
    async def start(
        cls,
        name: str,
        command: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str],
    ) -> Self:
        return cls(Child.start(name, command, log_path=log_path, env=env))

    @property
    def returncode(self) -> int | None:
        return self.child.returncode

    @property
    def logs(self) -> list[str]:
        """Its output so far, line by line."""
        return self.child.log_lines()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.logs[-lines:])

    def count_logs(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.logs if regex.search(line))

    async def wait_for_log(self, pattern: str, *, timeout: float = READY_TIMEOUT) -> str:  # noqa: ASYNC109
        """The first log line matching the regex ``pattern`` (``re.search``), waiting
        for it; HarnessError if the process ends (or ``timeout`` passes) first."""
        try:
            async with asyncio.timeout(timeout):
                # a file and a child's exit: nothing but time can wake us (ASYNC110)
                while (match := self.child.check_ready(pattern)) is None:  # noqa: ASYNC110
                    await asyncio.sleep(_POLL)
        except TimeoutError:
            raise HarnessError(
                f"no log line matching {pattern!r} within {timeout}s:"
                f" {self.child.diagnostics()}"
            ) from None
        return match.string

    def signal(self, sig: signal.Signals) -> None:
        self.child.signal(sig)

    async def wait(self, *, timeout: float = STOP_TIMEOUT) -> int:  # noqa: ASYNC109
        """Wait for the process to exit; the exit code (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while (code := self.child.returncode) is None:  # noqa: ASYNC110 (as above)
                await asyncio.sleep(_POLL)
        return code

    async def stop(self, *, timeout: float = STOP_TIMEOUT) -> int:  # noqa: ASYNC109
        """SIGTERM, then SIGKILL after ``timeout``; the exit code. Safe to call twice."""
        return await asyncio.to_thread(self.child.stop, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
