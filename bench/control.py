"""Parent-side handle on the benchmark's stand-ins process, a
:class:`kiam_testbed.child.Child` talked to over pipes (synchronous on purpose: asyncio
callers make their :meth:`StandInsProcess.call` in a thread), and :func:`standins_stack`,
kiam's processes on it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from kiam_testbed.child import STOP_TIMEOUT, Child, HarnessError
from kiam_testbed.commands import isolated_env
from kiam_testbed.stack import Stack, loopback_placement

ROOT = Path(__file__).resolve().parents[1]
"""The repository: the working directory of ``python -m bench.*`` children."""


class BenchError(HarnessError):
    """A helper process failed, or a benchmark's precondition did not hold."""


@dataclass
class StandInsProcess:
    """``python -m bench.standins``: the emulator (and STS stand-in) in a child process,
    driven by one JSON line per command on its stdin, answered on its stdout."""

    child: Child
    kube_url: str = ""
    sts_url: str = ""

    @classmethod
    def start(cls, workdir: Path, *, kubeconfig: Path, sts: bool = False,
              history_size: int = 10_000, sts_rate_limit: float = 0.0,
              sts_burst: int = 0) -> StandInsProcess:
        command = [sys.executable, "-m", "bench.standins", "--kubeconfig", str(kubeconfig),
                   "--history-size", str(history_size), *(["--sts"] if sts else []),
                   "--sts-rate-limit", str(sts_rate_limit), "--sts-burst", str(sts_burst)]
        proc = cls(Child.start("stand-ins", command, log_path=workdir / "standins.log",
                               env=isolated_env(), cwd=ROOT, pipes=True))
        try:
            first = proc._read()
        except BaseException:
            proc.stop()
            raise
        proc.kube_url, proc.sts_url = str(first["kube"]), str(first["sts"])
        return proc

    def _read(self) -> dict[str, Any]:
        assert self.child.popen.stdout is not None  # started with pipes
        if not (line := self.child.popen.stdout.readline()):
            raise BenchError(f"stand-ins process ended: {self.child.diagnostics()}")
        reply: dict[str, Any] = orjson.loads(line)
        return reply

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one command, wait for its answer; BenchError when it failed."""
        assert self.child.popen.stdin is not None  # started with pipes
        self.child.popen.stdin.write(orjson.dumps({"cmd": cmd, **args}) + b"\n")
        self.child.popen.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise BenchError(f"stand-ins {cmd}: {reply['error']}")
        return reply

    def stop(self) -> None:
        """Ask it to quit, then stop it as any child."""
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.child.popen.communicate(b'{"cmd": "quit"}\n', timeout=STOP_TIMEOUT)
        self.child.stop()


@contextlib.contextmanager
def standins_stack(workdir: Path, *, sts_rate_limit: float = 0.0,
                   sts_burst: int = 0) -> Iterator[tuple[StandInsProcess, Stack]]:
    """The stand-ins process (with STS, rate-limited if asked) and a loopback
    :class:`Stack` on it, with certificates; everything stopped at the end."""
    # the stand-ins write the kubeconfig where the Stack looks for it: WORKDIR/kubeconfig
    standins = StandInsProcess.start(workdir, kubeconfig=workdir / "kubeconfig", sts=True,
                                     sts_rate_limit=sts_rate_limit, sts_burst=sts_burst)
    stack = Stack(workdir, loopback_placement(), kube_url=standins.kube_url,
                  sts_url=standins.sts_url)
    try:
        stack.make_certs()
        yield standins, stack
    finally:
        stack.close()
        standins.stop()
