"""One set of certificates made by `kiam certs` per session, for the webhook suites."""

from __future__ import annotations

import pytest

from kiam.certs import CertPaths
from kiam_testbed.stack import Stack


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    base = tmp_path_factory.mktemp("certs")
    return CertPaths(directory=Stack(base, certs=base / "pki").make_certs())
