"""The one way the test bed starts and stops a process: :class:`Child`.

- Its stdout and stderr go to one log file, so no pipe fills up and the log outlives it.
- It dies with the *thread* that started it (``PR_SET_PDEATHSIG`` by ``setpriv``), so
  start children from a thread that outlives them (the main thread or an event loop's,
  never ``to_thread``).
- A Ctrl-C or SIGTERM arriving while it starts is held until its handle exists
  (:func:`signals_deferred`), so no child escapes its owner's clean-up.
- Readiness is a log line: :meth:`Child.wait_for` returns the first match of a regex, or
  raises :class:`HarnessError` (with the log's tail) when the process ends first or the
  time runs out.
- :meth:`Child.stop` sends SIGTERM, then SIGKILL after a grace; the exit code, again on
  a second call.

:class:`AsyncChild` is the thin asyncio adapter: the same waits, polling without
blocking the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
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

# setpriv execs the command: a preexec_fn would make Python fork() and run its at-fork
# hooks in the child, which aborts the child of a process with gRPC running. Essential
# in Debian; PR_SET_PDEATHSIG survives the exec (and ``ip netns exec``'s).
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
    def start(cls, name: str, command: Sequence[str], *, log_path: Path,
              env: Mapping[str, str], cwd: Path | None = None, pipes: bool = False) -> Self:
        """Start ``command`` with stdin closed and its output in ``log_path``; with
        ``pipes``, stdin and stdout are pipes to talk to it (only stderr is logged)."""
        if shutil.which(_SETPRIV[0]) is None:
            raise HarnessError("setpriv not found: the test bed needs it so that children "
                               "die with their parent (apt-get install util-linux)")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        pipe = subprocess.PIPE if pipes else None
        with signals_deferred(), log_path.open("wb") as log:
            popen = subprocess.Popen([*_SETPRIV, *command], stdin=pipe or subprocess.DEVNULL,
                                     stdout=pipe or log, stderr=log, env=dict(env), cwd=cwd)
            return cls(name=name, popen=popen, log_path=log_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def logs(self) -> list[str]:
        """Its output so far, line by line."""
        return self.log().splitlines()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.logs[-lines:])

    def count_logs(self, pattern: str) -> int:
        return sum(1 for line in self.logs if re.search(pattern, line))

    def diagnostics(self) -> str:
        code = self.popen.poll()
        state = "running" if code is None else f"exited {code}"
        return f"{self.name} ({state}); last lines:\n{self.log_tail()}"

    def check_ready(self, pattern: str, deadline: float = float("inf")) -> re.Match[str] | None:
        """The first log line matching ``pattern`` (``re.search``), None while there is
        none yet; HarnessError once the process has ended or ``deadline`` (monotonic)
        has passed without one."""
        code = self.popen.poll()  # before reading: the line may come as it exits
        if match := next(filter(None, map(re.compile(pattern).search, self.logs)), None):
            return match
        if code is not None or time.monotonic() > deadline:
            raise HarnessError(f"no log line matching {pattern!r}: {self.diagnostics()}")
        return None

    def wait_for(self, pattern: str, *, timeout: float = READY_TIMEOUT) -> re.Match[str]:
        """The first log line matching ``pattern``, waiting for it."""
        deadline = time.monotonic() + timeout
        while (match := self.check_ready(pattern, deadline)) is None:
            time.sleep(_POLL)
        return match

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code. Its pipes are closed."""
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()
        finally:
            for pipe in (self.popen.stdin, self.popen.stdout):
                if pipe is not None:
                    pipe.close()


class AsyncChild:
    """:class:`Child` for asyncio callers: waits poll the log without blocking the loop."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.signal = child.signal
        self.log_tail = child.log_tail
        self.count_logs = child.count_logs

    @property
    def returncode(self) -> int | None:
        return self.child.returncode

    @property
    def logs(self) -> list[str]:
        return self.child.logs

    async def wait_for_log(self, pattern: str, *, timeout: float = READY_TIMEOUT) -> str:  # noqa: ASYNC109
        """The first log line matching ``pattern``, as :meth:`Child.wait_for`."""
        deadline = time.monotonic() + timeout
        # a file and a child's exit: nothing but time can wake us (ASYNC110)
        while (match := self.child.check_ready(pattern, deadline)) is None:  # noqa: ASYNC110
            await asyncio.sleep(_POLL)
        return match.string

    async def wait(self, *, timeout: float = STOP_TIMEOUT) -> int:  # noqa: ASYNC109
        """Wait for the process to exit; the exit code (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while (code := self.child.returncode) is None:  # noqa: ASYNC110 (as above)
                await asyncio.sleep(_POLL)
        return code

    async def stop(self, *, timeout: float = STOP_TIMEOUT) -> int:  # noqa: ASYNC109
        """:meth:`Child.stop` in a thread; safe to call twice."""
        return await asyncio.to_thread(self.child.stop, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
