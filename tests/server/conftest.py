"""Shared by the server suites: one set of certificates made by `kiam certs` per session."""

from __future__ import annotations

import pytest

from kiam.certs import CertPaths
from kiam_testbed.stack import Stack


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    """``kiam certs --out DIR`` run once: the real command, as operators run it."""
    base = tmp_path_factory.mktemp("certs")
    return CertPaths(directory=Stack(base, certs=base / "pki").make_certs())
