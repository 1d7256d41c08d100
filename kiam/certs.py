"""``kiam certs``: a private CA plus server and agent key pairs for the agent <-> server mTLS.

The files are meant for development, the demo and small clusters; production clusters
usually issue them with cert-manager. Everything is EC P-256, signed with SHA-256:

- ``ca.pem`` / ``ca-key.pem``: self-signed CA (CA:TRUE, keyCertSign), valid ten times as
  long as the leaves so leaves can be re-issued without redistributing the CA.
- ``server.pem`` / ``server-key.pem``: serverAuth (+clientAuth), one SAN per server name,
  an IP SAN when the name parses as an IP address (gRPC checks those for ``127.0.0.1``).
- ``agent.pem`` / ``agent-key.pem``: CN (and DNS SAN) ``kiam-agent``, clientAuth.
- ``webhook.pem`` / ``webhook-key.pem``: serverAuth, one SAN per webhook name: what
  ``kiam webhook`` presents to the API server (its MutatingWebhookConfiguration's
  ``caBundle`` is ``ca.pem``).

Key files are written with mode 0600; existing files are never overwritten unless asked.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kiam.common.settings import DEFAULT_SERVER_NAMES, DEFAULT_WEBHOOK_NAMES, CertsSettings

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server-key.pem"
AGENT_CERT = "agent.pem"
AGENT_KEY = "agent-key.pem"
WEBHOOK_CERT = "webhook.pem"
WEBHOOK_KEY = "webhook-key.pem"
ALL_FILES = (
    CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, AGENT_CERT, AGENT_KEY, WEBHOOK_CERT, WEBHOOK_KEY
)

AGENT_COMMON_NAME = "kiam-agent"
WEBHOOK_COMMON_NAME = "kiam-webhook"
SERVER_COMMON_NAME = "kiam-server"
CA_COMMON_NAME = "kiam-ca"
# Clocks on nodes disagree a little; a certificate that starts "now" is refused by a peer
# whose clock runs behind.
BACKDATE = datetime.timedelta(minutes=5)


class CertsError(Exception):
    """A file could not be written (or would be overwritten without ``force``)."""


@dataclass(frozen=True, kw_only=True)
class KeyPair:
    """One certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, kw_only=True)
class Issued:
    """The CA and the three leaves, PEM-encoded, before anything touches the disk."""

    ca: KeyPair
    server: KeyPair
    agent: KeyPair
    webhook: KeyPair

    def files(self) -> dict[str, bytes]:
        return {
            CA_CERT: self.ca.cert_pem,
            CA_KEY: self.ca.key_pem,
            SERVER_CERT: self.server.cert_pem,
            SERVER_KEY: self.server.key_pem,
            AGENT_CERT: self.agent.cert_pem,
            AGENT_KEY: self.agent.key_pem,
            WEBHOOK_CERT: self.webhook.cert_pem,
            WEBHOOK_KEY: self.webhook.key_pem,
        }


@dataclass(frozen=True, kw_only=True)
class CertPaths:
    """Where :func:`generate_certificates` wrote each file."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.directory / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.directory / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.directory / SERVER_KEY

    @property
    def agent_cert(self) -> Path:
        return self.directory / AGENT_CERT

    @property
    def agent_key(self) -> Path:
        return self.directory / AGENT_KEY

    @property
    def webhook_cert(self) -> Path:
        return self.directory / WEBHOOK_CERT

    @property
    def webhook_key(self) -> Path:
        return self.directory / WEBHOOK_KEY


def subject_alternative_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """One SAN per name: an IP address when it parses as one, a DNS name otherwise."""
    sans: list[x509.GeneralName] = []
    for name in names:
        text = name.strip()
        if not text:
            continue
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            sans.append(x509.DNSName(text))
    return sans


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kiam"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _issue_ca(*, now: datetime.datetime, days: int) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(CA_COMMON_NAME)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def issue_leaf(
    *,
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    common_name: str,
    names: Sequence[str] = (),
    server: bool,
    days: int,
    now: datetime.datetime | None = None,
) -> KeyPair:
    """A fresh key and a certificate for it signed by the given CA.

    ``server`` adds serverAuth (and keeps clientAuth, so one pair can serve both sides in
    tests). Public so tests can re-issue a server certificate to exercise reloading.
    """
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertsError("the CA key is not an EC key")
    start = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - BACKDATE)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    sans = subject_alternative_names(names)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


def issue_all(
    *,
    server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
    webhook_names: Sequence[str] = DEFAULT_WEBHOOK_NAMES,
    days: int = 365,
) -> Issued:
    """Issue the CA and both leaves in memory."""
    if days < 1:
        raise CertsError("days must be at least 1")
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert_pem = _issue_ca(now=now, days=days * 10)
    ca = KeyPair(cert_pem=ca_cert_pem, key_pem=_key_pem(ca_key))
    server = issue_leaf(
        ca_cert_pem=ca.cert_pem,
        ca_key_pem=ca.key_pem,
        common_name=SERVER_COMMON_NAME,
        names=server_names,
        server=True,
        days=days,
        now=now,
    )
    agent = issue_leaf(
        ca_cert_pem=ca.cert_pem,
        ca_key_pem=ca.key_pem,
        common_name=AGENT_COMMON_NAME,
        # strict verifiers (cryptography's among them) want a SAN on client certificates too
        names=(AGENT_COMMON_NAME,),
        server=False,
        days=days,
        now=now,
    )
    webhook = issue_leaf(
        ca_cert_pem=ca.cert_pem,
        ca_key_pem=ca.key_pem,
        common_name=WEBHOOK_COMMON_NAME,
        names=webhook_names,
        server=True,
        days=days,
        now=now,
    )
    return Issued(ca=ca, server=server, agent=agent, webhook=webhook)


def write_pem(path: Path, data: bytes, *, private: bool, force: bool) -> None:
    """Write one file; keys are created 0600 from the start, never widened then narrowed."""
    mode = 0o600 if private else 0o644
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise CertsError(f"{path} already exists (use --force to overwrite)") from None
    except OSError as exc:
        raise CertsError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    # O_CREAT's mode does not apply to an existing file being overwritten.
    os.chmod(path, mode)


def generate_certificates(
    out_dir: str | os.PathLike[str],
    *,
    server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
    webhook_names: Sequence[str] = DEFAULT_WEBHOOK_NAMES,
    days: int = 365,
    force: bool = False,
) -> CertPaths:
    """Issue everything and write the eight PEM files into ``out_dir`` (created if missing).

    Raises :class:`CertsError` naming the first file that already exists (unless
    ``force``) before writing anything.
    """
    directory = Path(out_dir)
    if not force:
        for name in ALL_FILES:
            if (directory / name).exists():
                raise CertsError(f"{directory / name} already exists (use --force to overwrite)")
    issued = issue_all(server_names=server_names, webhook_names=webhook_names, days=days)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CertsError(f"cannot create {directory}: {exc.strerror}") from None
    for name, data in issued.files().items():
        write_pem(directory / name, data, private=name.endswith("-key.pem"), force=force)
    return CertPaths(directory=directory)


def run_certs(settings: CertsSettings) -> int:
    """``kiam certs``: write the files, say what was written; exit 1 with the reason if not."""
    try:
        paths = generate_certificates(
            settings.out,
            server_names=settings.server_names,
            webhook_names=settings.webhook_names,
            days=settings.days,
            force=settings.force,
        )
    except CertsError as exc:
        print(f"kiam certs: {exc}", file=sys.stderr)
        return 1
    for name in ALL_FILES:
        print(f"wrote {paths.directory / name}")
    print(f"server names: {', '.join(settings.server_names)}; "
          f"webhook names: {', '.join(settings.webhook_names)}; valid {settings.days} days")
    return 0
