"""Parent-side handle on the benchmark's stand-ins process, a
:class:`kiam_testbed.child.Child` (synchronous on purpose: starting processes is set-up
work; asyncio callers make their :meth:`StandInsProcess.call` in a thread)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from kiam_testbed.child import STOP_TIMEOUT, Child, HarnessError
from kiam_testbed.commands import isolated_env

ROOT = Path(__file__).resolve().parents[1]
"""The repository: the working directory of ``python -m bench.*`` children."""


class BenchError(HarnessError):
    """A helper process failed, or a benchmark's precondition did not hold."""


@dataclass
class StandInsProcess:
    """``python -m bench.standins``: the emulator (and STS stand-in) in a child process,
    driven by one JSON line per command on its stdin, answered on its stdout."""

    child: Child
    kube_url: str
    sts_url: str

    @classmethod
    def start(cls, workdir: Path, *, kubeconfig: Path, sts: bool = False,
              history_size: int = 10_000) -> StandInsProcess:
        command = [sys.executable, "-m", "bench.standins", "--kubeconfig", str(kubeconfig),
                   "--history-size", str(history_size)]
        if sts:
            command.append("--sts")
        child = Child.start("stand-ins", command, log_path=workdir / "standins.log",
                            env=isolated_env(), cwd=ROOT, pipes=True)
        proc = cls(child=child, kube_url="", sts_url="")
        try:
            first = proc._read()
        except BaseException:
            proc.stop()
            raise
        proc.kube_url, proc.sts_url = str(first["kube"]), str(first["sts"])
        return proc

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        popen = self.child.popen
        if popen.stdin is None or popen.stdout is None:
            raise BenchError("stand-ins process has no pipes")
        return popen.stdin, popen.stdout

    def _read(self) -> dict[str, Any]:
        _, stdout = self._pipes()
        line = stdout.readline()
        if not line:
            raise BenchError(f"stand-ins process ended: {self.child.diagnostics()}")
        reply: dict[str, Any] = orjson.loads(line)
        return reply

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one command, wait for its answer; BenchError when it failed."""
        stdin, _ = self._pipes()
        stdin.write(orjson.dumps({"cmd": cmd, **args}) + b"\n")
        stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise BenchError(f"stand-ins {cmd}: {reply['error']}")
        return reply

    def stop(self) -> None:
        """Ask it to quit (closing its stdin), then stop it as any child."""
        stdin, stdout = self._pipes()
        with contextlib.suppress(OSError):
            stdin.write(b'{"cmd": "quit"}\n')
            stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.child.popen.wait(timeout=STOP_TIMEOUT)
        self.child.stop()
        stdout.close()
