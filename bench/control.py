"""Parent-side handles on the benchmark's helper processes (synchronous on purpose:
starting processes is set-up work; asyncio callers use ``asyncio.to_thread``)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from kiam_testbed.commands import isolated_env

ROOT = Path(__file__).resolve().parents[1]
"""The repository: the working directory of ``python -m bench.*`` children."""


class BenchError(Exception):
    """A helper process failed, or a benchmark's precondition did not hold."""


@dataclass
class StandInsProcess:
    """``python -m bench.standins``: the emulator (and STS stand-in) in a child process."""

    popen: subprocess.Popen[bytes]
    stderr_path: Path
    kube_url: str
    sts_url: str

    @classmethod
    def start(cls, workdir: Path, *, kubeconfig: Path, sts: bool = False,
              history_size: int = 10_000) -> StandInsProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        stderr_path = workdir / "standins.err"
        command = [sys.executable, "-m", "bench.standins", "--kubeconfig", str(kubeconfig),
                   "--history-size", str(history_size)]
        if sts:
            command.append("--sts")
        with stderr_path.open("wb") as stderr:
            popen = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr, env=isolated_env(), cwd=ROOT)
        proc = cls(popen=popen, stderr_path=stderr_path, kube_url="", sts_url="")
        try:
            first = proc._read()
        except BaseException:
            proc.stop()
            raise
        proc.kube_url, proc.sts_url = str(first["kube"]), str(first["sts"])
        return proc

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        if self.popen.stdin is None or self.popen.stdout is None:
            raise BenchError("stand-ins process has no pipes")
        return self.popen.stdin, self.popen.stdout

    def _read(self) -> dict[str, Any]:
        _, stdout = self._pipes()
        line = stdout.readline()
        if not line:
            tail = self.stderr_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"stand-ins process ended (exit {self.popen.poll()}):\n{tail}")
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
        if self.popen.poll() is None and self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.write(b'{"cmd": "quit"}\n')
                self.popen.stdin.close()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
