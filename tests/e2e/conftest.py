"""The end-to-end bed: pods as network namespaces, everything else in a node namespace.

One bed per test module (module-scoped fixtures), torn down whatever happens. As a
normal user every test here skips, saying that it needs root.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiam_testbed import netns
from kiam_testbed.sdk_clients import PodRun, run_in_pod
from kiam_testbed.stack import Stack, node_placement

__all__ = ["PodRun", "node_stack", "run_in_pod"]


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
