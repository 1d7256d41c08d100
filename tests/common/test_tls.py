"""mTLS between agent and server: reading the files, requiring client certificates,
and picking up rotated server certificates without a restart.

A real grpc.aio server (the standard grpc.health.v1 service) on 127.0.0.1 with
``server_credentials``; real gRPC clients; a raw TLS handshake (ssl module) to see which
certificate the server presents.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from kiam.certs import CertPaths, generate_certificates, issue_leaf
from kiam.common.settings import TLSSettings
from kiam.common.tls import (
    CertificateReloader,
    TLSError,
    channel_credentials,
    read_tls,
)
from tests.common.conftest import health_status, serve_health


def _server_tls(paths: CertPaths) -> TLSSettings:
    return TLSSettings(cert=str(paths.server_cert), key=str(paths.server_key), ca=str(paths.ca))


def _agent_tls(paths: CertPaths) -> TLSSettings:
    return TLSSettings(cert=str(paths.agent_cert), key=str(paths.agent_key), ca=str(paths.ca))


@pytest.fixture
def other_pki(tmp_path: Path) -> CertPaths:
    return generate_certificates(tmp_path / "other", days=2)


@dataclass(frozen=True)
class Served:
    port: int
    settings: TLSSettings

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def served(pki: CertPaths) -> AsyncIterator[Served]:
    settings = _server_tls(pki)
    async with serve_health(settings) as port:
        yield Served(port=port, settings=settings)


async def _presented_serial(target_port: int, paths: CertPaths) -> int:
    """Handshake with the server over plain TLS and return its certificate's serial."""
    ctx = ssl.create_default_context(cafile=str(paths.ca))
    ctx.load_cert_chain(str(paths.agent_cert), str(paths.agent_key))
    ctx.set_alpn_protocols(["h2"])

    def handshake() -> bytes:
        # A blocking socket closed without a TLS shutdown: the server starts HTTP/2 at
        # once, and an orderly close_notify exchange would trip over its frames.
        with (
            socket.create_connection(("127.0.0.1", target_port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der

    der = await asyncio.to_thread(handshake)
    return x509.load_der_x509_certificate(der).serial_number


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def _replace(path: Path, data: bytes) -> None:
    # as rotation tools do: write aside, then rename over (a new inode)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _rotate_server_cert(pki: CertPaths) -> None:
    pair = issue_leaf(
        ca_cert_pem=pki.ca.read_bytes(),
        ca_key_pem=pki.ca_key.read_bytes(),
        common_name="kiam-server",
        names=("127.0.0.1",),
        server=True,
        days=1,
    )
    _replace(pki.server_key, pair.key_pem)
    _replace(pki.server_cert, pair.cert_pem)


# ---------------------------------------------------------------- read_tls


def test_read_tls_reads_the_three_files(pki: CertPaths) -> None:
    material = read_tls(_agent_tls(pki))
    assert material.cert == pki.agent_cert.read_bytes()
    assert material.key == pki.agent_key.read_bytes()
    assert material.ca == pki.ca.read_bytes()
    assert "PRIVATE" not in repr(material)


def test_read_tls_names_a_missing_file(pki: CertPaths, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    settings = TLSSettings(cert=str(pki.agent_cert), key=str(pki.agent_key), ca=str(missing))
    with pytest.raises(TLSError, match=re.escape(f"CA {missing}: No such file")):
        read_tls(settings)


def test_read_tls_rejects_non_pem(pki: CertPaths, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    settings = TLSSettings(cert=str(junk), key=str(pki.agent_key), ca=str(pki.ca))
    with pytest.raises(TLSError, match=re.escape(f"certificate {junk}: not a PEM certificate")):
        read_tls(settings)
    settings = TLSSettings(cert=str(pki.agent_cert), key=str(junk), ca=str(pki.ca))
    with pytest.raises(TLSError, match=re.escape(f"private key {junk}: not an unencrypted PEM")):
        read_tls(settings)


def test_read_tls_rejects_empty_file(pki: CertPaths, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    settings = TLSSettings(cert=str(pki.agent_cert), key=str(pki.agent_key), ca=str(empty))
    with pytest.raises(TLSError, match="empty"):
        read_tls(settings)


def test_read_tls_rejects_a_key_of_another_certificate(pki: CertPaths) -> None:
    settings = TLSSettings(cert=str(pki.agent_cert), key=str(pki.server_key), ca=str(pki.ca))
    with pytest.raises(TLSError, match="does not match certificate"):
        read_tls(settings)


def test_channel_credentials_report_bad_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(TLSError, match=r"missing\.pem"):
        channel_credentials(TLSSettings(cert=missing, key=missing, ca=missing))


# ---------------------------------------------------------------- reloader (no sockets)


def test_reloader_returns_nothing_until_files_change(pki: CertPaths) -> None:
    reloader = CertificateReloader(_server_tls(pki))
    assert reloader() is None
    _rotate_server_cert(pki)
    assert reloader() is not None
    assert reloader.reloads == 1
    assert reloader() is None


def test_reloader_keeps_old_config_while_rotation_is_half_done(
    pki: CertPaths, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = CertificateReloader(_server_tls(pki))
    pair = issue_leaf(
        ca_cert_pem=pki.ca.read_bytes(),
        ca_key_pem=pki.ca_key.read_bytes(),
        common_name="kiam-server",
        server=True,
        days=1,
    )
    _replace(pki.server_cert, pair.cert_pem)  # the key has not arrived yet
    assert reloader() is None
    assert reloader() is None
    assert reloader.reloads == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1  # said once, not at every handshake
    assert "does not match certificate" in warnings[0]
    _replace(pki.server_key, pair.key_pem)
    assert reloader() is not None
    assert reloader.reloads == 1


# ---------------------------------------------------------------- real server


async def test_client_with_ca_signed_cert_is_served(served: Served, pki: CertPaths) -> None:
    assert await health_status(served.target, channel_credentials(_agent_tls(pki))) == "SERVING"


async def test_client_without_certificate_is_refused(served: Served, pki: CertPaths) -> None:
    anonymous = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    assert await health_status(served.target, anonymous) == "UNAVAILABLE"


async def test_client_with_cert_from_another_ca_is_refused(
    served: Served, pki: CertPaths, other_pki: CertPaths
) -> None:
    stranger = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),  # trusts the server, but is not trusted back
        private_key=other_pki.agent_key.read_bytes(),
        certificate_chain=other_pki.agent_cert.read_bytes(),
    )
    assert await health_status(served.target, stranger) == "UNAVAILABLE"


async def test_new_connections_see_a_rotated_server_certificate(
    served: Served, pki: CertPaths
) -> None:
    original = _serial(pki.server_cert)
    assert await _presented_serial(served.port, pki) == original

    _rotate_server_cert(pki)
    rotated = _serial(pki.server_cert)
    assert rotated != original
    assert await _presented_serial(served.port, pki) == rotated
    # and real gRPC clients still get through with the new certificate
    assert await health_status(served.target, channel_credentials(_agent_tls(pki))) == "SERVING"
