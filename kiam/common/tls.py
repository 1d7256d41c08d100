"""TLS material for the mutual TLS between agents and servers.

- :func:`read_tls` reads and checks the three PEM files named by ``--cert --key --ca``.
- :func:`server_credentials` requires a client certificate from the CA and picks up new
  files on disk without a restart (cert-manager and Kubernetes secret mounts rotate
  them in place).
- :func:`channel_credentials` is the client side: the CA to trust plus our own pair.

Errors: :class:`TLSError` (the only exception raised here), whose message names the file.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kiam.common.settings import TLSSettings

log = logging.getLogger(__name__)


class TLSError(Exception):
    """A certificate, key or CA file is missing, unreadable, not PEM, or does not match."""


@dataclass(frozen=True, kw_only=True)
class TLSMaterial:
    """The PEM bytes of our certificate chain, its private key and the peer CA bundle."""

    cert: bytes
    key: bytes
    ca: bytes

    def __repr__(self) -> str:  # never show the private key
        return f"TLSMaterial(cert={len(self.cert)}B, key=<hidden>, ca={len(self.ca)}B)"


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise TLSError(f"{what} {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise TLSError(f"{what} {path}: file is empty")
    return data


def _check_certificates(data: bytes, path: str, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSError(f"{what} {path}: not a PEM certificate") from None
    return certs


def read_tls(settings: TLSSettings) -> TLSMaterial:
    """Read the three files and check they are PEM and that the key matches the certificate.

    Blocking file I/O: call it at start-up or through ``asyncio.to_thread``.
    """
    cert = _read(settings.cert, "certificate")
    key = _read(settings.key, "private key")
    ca = _read(settings.ca, "CA")
    leaf = _check_certificates(cert, settings.cert, "certificate")[0]
    _check_certificates(ca, settings.ca, "CA")
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        # TypeError: an encrypted key; we have no passphrase to offer.
        raise TLSError(f"private key {settings.key}: not an unencrypted PEM private key") from None
    public = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public != expected:
        raise TLSError(f"private key {settings.key} does not match certificate {settings.cert}")
    return TLSMaterial(cert=cert, key=key, ca=ca)


def _server_configuration(material: TLSMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert)], root_certificates=material.ca
    )


_Stamp = tuple[tuple[int, int, int], ...]


class CertificateReloader:
    """The certificate-configuration fetcher behind :func:`server_credentials`.

    gRPC calls it on every handshake, from its own threads, so the common path is three
    ``stat`` calls and a comparison. When a file changed it reads and checks all three;
    a half-rotated set (key and certificate not matching yet) keeps the old configuration
    and is retried on the next handshake.
    """

    def __init__(self, settings: TLSSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._stamp = self._current_stamp()
        self._failed: _Stamp | None = None
        self.initial = _server_configuration(read_tls(settings))
        self.reloads = 0
        """How many times new files were picked up (for tests and logs)."""

    def _current_stamp(self) -> _Stamp | None:
        s = self._settings
        try:
            stats = [os.stat(path) for path in (s.cert, s.key, s.ca)]
        except OSError:
            return None
        # The inode catches Kubernetes' symlink swap and os.replace even within one mtime tick.
        return tuple((st.st_mtime_ns, st.st_size, st.st_ino) for st in stats)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            stamp = self._current_stamp()
            if stamp is None or stamp == self._stamp:
                return None
            try:
                material = read_tls(self._settings)
            except TLSError as exc:
                if stamp != self._failed:  # once per state of the files, not per handshake
                    log.warning("TLS files changed but cannot be used yet: %s", exc)
                    self._failed = stamp
                return None
            self._stamp = stamp
            self.reloads += 1
        log.info("reloaded TLS certificate", extra={"fields": {"cert": self._settings.cert}})
        return _server_configuration(material)


def server_credentials(settings: TLSSettings) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate signed by ``settings.ca``
    and follow changes to the files on disk (checked at each new connection).

    Raises :class:`TLSError` when the files cannot be used now.
    """
    reloader = CertificateReloader(settings)
    # grpc-stubs types the fetcher without the None that grpc documents for "unchanged".
    fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], reloader)
    return grpc.dynamic_ssl_server_credentials(
        reloader.initial, fetcher, require_client_authentication=True
    )


def channel_credentials(settings: TLSSettings) -> grpc.ChannelCredentials:
    """Client credentials: trust ``settings.ca``, present ``settings.cert``/``settings.key``.

    Raises :class:`TLSError` when the files cannot be used.
    """
    material = read_tls(settings)
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca,
        private_key=material.key,
        certificate_chain=material.cert,
    )
