"""The one process handle's promises: readiness as a log line, a failure that carries
the log, SIGTERM then SIGKILL (the stack's own guarantees are in tests/e2e/test_stack.py)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from kiam_testbed.child import AsyncChild, Child, HarnessError
from kiam_testbed.commands import isolated_env


def _python(tmp_path: Path, code: str) -> Child:
    return Child.start("snippet", [sys.executable, "-c", code], log_path=tmp_path / "c.log",
                       env=isolated_env())


def test_wait_for_returns_the_first_matching_line(tmp_path: Path) -> None:
    child = _python(tmp_path, "import sys, time\nprint('warming up')\n"
                              "print('listening on 127.0.0.1:4242', file=sys.stderr)\n"
                              "time.sleep(60)")
    try:
        assert child.wait_for(r"listening on \S+:(\d+)")[1] == "4242"
    finally:
        assert child.stop() == -signal.SIGTERM


def test_a_child_that_exits_before_it_is_ready_fails_with_its_log(tmp_path: Path) -> None:
    child = _python(tmp_path, "import sys\nsys.exit('cannot start: port taken')")
    with pytest.raises(HarnessError, match=r"(?s)exited 1.*cannot start: port taken"):
        child.wait_for("serving on", timeout=30)


def test_a_child_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    child = _python(tmp_path, "import signal, time\n"
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                              "print('ready', flush=True)\ntime.sleep(60)")
    child.wait_for("^ready$")
    started = time.monotonic()
    assert child.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 10
    assert child.stop() == -signal.SIGKILL  # a second stop is harmless


async def test_the_async_adapter_waits_without_blocking_the_loop(tmp_path: Path) -> None:
    code = "import time\ntime.sleep(0.3)\nprint('caches synced', flush=True)\ntime.sleep(60)"
    async with AsyncChild(_python(tmp_path, code)) as child:
        assert await child.wait_for_log("caches synced") == "caches synced"
        assert child.count_logs("synced") == 1
    assert child.returncode == -signal.SIGTERM
    with pytest.raises(HarnessError, match="no log line matching 'never'"):
        await child.wait_for_log("never", timeout=0.2)


def test_without_setpriv_the_start_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no setpriv on it
    with pytest.raises(HarnessError, match=r"setpriv not found.*util-linux"):
        _python(tmp_path, "print('never runs')")
    assert not (tmp_path / "c.log").exists()
