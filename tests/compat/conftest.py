"""Certificates for the mixed-fleet tests: one set per session, made in-process."""

from __future__ import annotations

import pytest

from kiam.certs import CertPaths, generate_certificates


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return generate_certificates(tmp_path_factory.mktemp("compat-certs"))
