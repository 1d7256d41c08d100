"""The process stack's own guarantees that need no network namespace."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from kiam.testing.stack import Placement, Stack, process_env


def _interrupted_wrap(argv: Sequence[str]) -> list[str]:
    # Ctrl-C arriving while the child is being started (inside the Popen call).
    signal.raise_signal(signal.SIGINT)
    return list(argv)


def test_ctrl_c_while_a_child_starts_still_records_it(tmp_path: Path) -> None:
    stack = Stack(workdir=tmp_path, placement=Placement(wrap=_interrupted_wrap))
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    try:
        with pytest.raises(KeyboardInterrupt):
            stack.spawn("sleeper", sleeper, env=process_env())
        assert "sleeper" in stack.processes, "the started child was lost"
        assert stack.processes["sleeper"].popen.poll() is None
    finally:
        stack.close()
    # SIGTERM stops it: the child did not inherit an ignored or blocked signal.
    assert stack.processes["sleeper"].popen.returncode == -signal.SIGTERM
