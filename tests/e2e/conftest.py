"""The end-to-end bed: pods as network namespaces, everything else in a node namespace.

One bed per test module (module-scoped fixtures), torn down whatever happens. As a
normal user every test here skips, saying that it needs root.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiam_testbed import netns
from kiam_testbed.sdk_clients import CallerResult, parse_result, pod_command
from kiam_testbed.stack import Stack, node_placement

SDK_TIMEOUT = 60.0


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say why the end-to-end suite did not run, even under ``pytest -q`` (no ``-rs``)."""
    reason = netns.unavailable_reason()
    if reason:
        terminalreporter.write_line(f"end-to-end (network namespace) tests skipped: {reason}")


def require_bed() -> None:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"end-to-end suite skipped: {reason}")


@pytest.fixture(scope="module")
def bed() -> Iterator[netns.Bed]:
    require_bed()
    with netns.network_bed(pods=5) as made:
        yield made


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kiam-e2e-") as path:
        yield Path(path)


def node_stack(bed: netns.Bed, workdir: Path) -> Stack:
    """A stack placed in the bed's node namespace, agent behind the real DNAT rule."""
    return Stack(workdir / "stack", node_placement(bed))


@dataclass(frozen=True, kw_only=True)
class PodRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> CallerResult:
        return parse_result(self.stdout, stderr=self.stderr)


def run_in_pod(pod: netns.PodNetns, command: Sequence[str], *, home: Path) -> PodRun:
    """``command`` inside the pod, with an empty environment and an empty HOME."""
    home.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        pod.argv(pod_command(command, home=home)),
        capture_output=True,
        text=True,
        timeout=SDK_TIMEOUT,
        check=False,
    )
    return PodRun(returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)
