"""The chores a fresh clone relies on: ``make test`` (and ``.ci/run``, which calls it).

``make syspkgs`` runs against fake ``id`` and ``apt-get`` commands on a ``PATH`` of our
own, so the test sees what it would install without touching the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")

needs_make = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def _fake_bin(tmp_path: Path, *, uid: int, present: tuple[str, ...] = ()) -> Path:
    """A PATH directory with ``id -u`` answering ``uid``, an ``apt-get`` that records its
    arguments, and empty stand-ins for the commands named in ``present``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt-get.log"
    scripts = {
        "id": f'#!/bin/sh\necho {uid}\n',
        "apt-get": f'#!/bin/sh\necho "$*" >> {log}\n',
        **{name: "#!/bin/sh\nexit 0\n" for name in present},
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return bin_dir


def _syspkgs(tmp_path: Path, bin_dir: Path) -> list[str]:
    assert MAKE is not None
    done = subprocess.run(
        [MAKE, "-s", "-C", str(ROOT), "syspkgs"], env={"PATH": str(bin_dir)},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    log = tmp_path / "apt-get.log"
    return log.read_text().splitlines() if log.exists() else []


@needs_make
def test_root_without_the_tools_installs_them_from_debian(tmp_path: Path) -> None:
    calls = _syspkgs(tmp_path, _fake_bin(tmp_path, uid=0))
    assert calls == ["update -qq", "install -y -qq --no-install-recommends iproute2 iptables "
                     "wrk util-linux kubernetes-client"]


@needs_make
def test_root_installs_only_what_is_missing(tmp_path: Path) -> None:
    calls = _syspkgs(tmp_path, _fake_bin(tmp_path, uid=0, present=("ip", "kubectl", "setpriv")))
    assert calls == ["update -qq", "install -y -qq --no-install-recommends iptables wrk"]


@needs_make
def test_nothing_is_installed_when_present_or_not_root(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "user").mkdir()
    present = ("ip", "iptables", "wrk", "setpriv", "kubectl")
    assert _syspkgs(tmp_path / "root", _fake_bin(tmp_path / "root", uid=0, present=present)) == []
    assert _syspkgs(tmp_path / "user", _fake_bin(tmp_path / "user", uid=1000)) == []


def _dry_run(target: str) -> str:
    """Every recipe ``make TARGET`` would run on a fresh clone (-n -B), without running it."""
    assert MAKE is not None
    done = subprocess.run([MAKE, "-n", "-B", "-C", str(ROOT), target], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_make
def test_make_test_sets_up_then_lints_then_tests() -> None:
    stdout = _dry_run("test")
    steps = ["-m venv .venv", "pip install --quiet -e '.[test]' -e ./testbed", "apt-get install",
             "ruff check kiam testbed tests", ".venv/bin/mypy", ".venv/bin/pytest"]
    positions = [stdout.find(step) for step in steps]
    assert -1 not in positions, stdout
    assert positions == sorted(positions), stdout


@needs_make
def test_make_demo_installs_the_product_and_the_test_bed_without_test_tools() -> None:
    stdout = _dry_run("demo")
    installs = [line for line in stdout.splitlines() if "pip install" in line]
    assert installs[-1].endswith("pip install --quiet -e . -e ./testbed"), installs
    assert "[test]" not in stdout
    assert ".venv/bin/kiam demo" in stdout, stdout


def test_ci_runs_make_test_from_the_repository_root(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "make.log"
    fake_make = bin_dir / "make"
    fake_make.write_text(f'#!/bin/sh\necho "$(pwd) $*" >> {record}\n')
    fake_make.chmod(0o755)
    bash = shutil.which("bash")
    assert bash is not None
    os.symlink(bash, bin_dir / "bash")
    (bin_dir / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")
    done = subprocess.run([str(ROOT / ".ci" / "run")], env={"PATH": str(bin_dir)},
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # the README's test command first, then mutation testing (docs/policy.md)
    assert record.read_text().splitlines() == [f"{ROOT} test", f"{ROOT} mutation"]
