"""Shared by the server suites: one set of certificates made by `kiam certs` per session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kiam.certs import CertPaths
from kiam_testbed.commands import aws_test_env, kiam_command


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    """``kiam certs --out DIR`` run once: the real command, as operators run it."""
    directory = tmp_path_factory.mktemp("certs") / "pki"
    subprocess.run(
        kiam_command("certs", "--out", str(directory)),
        check=True,
        capture_output=True,
        env=aws_test_env(),
        timeout=60,
    )
    return CertPaths(directory=Path(directory))
