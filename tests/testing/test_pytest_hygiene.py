"""The suite's own hygiene, proved by running pytest on a few bad tests.

The project's pytest settings (pyproject) and root conftest are applied to a scratch
directory: a test that leaks an asyncio task, one that warns, and one that hangs must
each fail, and a clean one must pass. Otherwise those guards could silently stop working.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BAD_TESTS = '''
import asyncio
import time
import warnings


async def test_clean():
    task = asyncio.create_task(asyncio.sleep(0))
    await task


async def test_leaks_a_task():
    asyncio.create_task(asyncio.sleep(3600), name="leaky-task")


def test_warns():
    warnings.warn("a stray warning", UserWarning)


def test_hangs():
    time.sleep(30)
'''


def test_leaks_warnings_and_hangs_fail_the_test(tmp_path: Path) -> None:
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_inner.py").write_text(BAD_TESTS)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q", "-rA",
         # the configured per-test timeout, shortened so the hanging test costs 1 s
         "-o", "timeout=1", str(tmp_path / "test_inner.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "PASSED test_inner.py::test_clean" in out, out
    assert "ERROR test_inner.py::test_leaks_a_task - Failed: test leaked" in out, out
    assert "Failed: test leaked asyncio tasks: leaky-task:" in out, out
    assert "FAILED test_inner.py::test_warns - UserWarning: a stray warning" in out, out
    assert "FAILED test_inner.py::test_hangs - Failed: Timeout" in out, out


def test_the_suite_has_a_per_test_timeout() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.pytest.ini_options]", 1)[1].split("\n[", 1)[0]
    timeouts = [line for line in section.splitlines() if line.startswith("timeout")]
    assert len(timeouts) == 1, section
    assert 0 < int(timeouts[0].split("=", 1)[1]) <= 300
