"""The process stack's own guarantees that need no network namespace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from kiam_testbed.commands import isolated_env
from kiam_testbed.stack import Placement, Stack


def _interrupted_wrap(argv: Sequence[str]) -> list[str]:
    # Ctrl-C arriving while the child is being started (inside the Popen call).
    signal.raise_signal(signal.SIGINT)
    return list(argv)


def test_ctrl_c_while_a_child_starts_still_records_it(tmp_path: Path) -> None:
    stack = Stack(workdir=tmp_path, placement=Placement(wrap=_interrupted_wrap))
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    try:
        with pytest.raises(KeyboardInterrupt):
            stack.spawn("sleeper", sleeper, env=isolated_env())
        assert "sleeper" in stack.processes, "the started child was lost"
        assert stack.processes["sleeper"].popen.poll() is None
    finally:
        stack.close()
    # SIGTERM stops it: the child did not inherit an ignored or blocked signal.
    assert stack.processes["sleeper"].popen.returncode == -signal.SIGTERM


def test_children_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    # A parent that starts a stack child and is then SIGKILLed: no clean-up of its runs,
    # yet the child must not outlive it.
    parent_code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from kiam_testbed.commands import isolated_env\n"
        "from kiam_testbed.stack import Placement, Stack\n"
        "stack = Stack(workdir=Path(sys.argv[1]), placement=Placement())\n"
        "child = stack.spawn('sleeper', [sys.executable, '-c', 'import time; time.sleep(60)'],"
        " env=isolated_env())\n"
        "print(child.popen.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    with subprocess.Popen([sys.executable, "-c", parent_code, str(tmp_path)],
                          stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        parent.kill()
        parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(child_pid)
    if alive:
        os.kill(child_pid, signal.SIGKILL)
    assert not alive, "the child outlived its SIGKILLed parent"


def _alive(pid: int) -> bool:
    # a zombie (reaped by init soon) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
