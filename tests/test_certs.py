"""``kiam certs``: the files parse, the chain verifies, SANs and modes are right,
nothing is overwritten by accident, and the command works as a real process."""

from __future__ import annotations

import datetime
import ipaddress
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from kiam.certs import (
    ALL_FILES,
    CertsError,
    generate_certificates,
    run_certs,
    subject_alternative_names,
)
from kiam.common.settings import DEFAULT_SERVER_NAMES, CertsSettings

KIAM = Path(sys.executable).parent / "kiam"


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_sans_split_ip_and_dns() -> None:
    sans = subject_alternative_names(["kiam-server", "127.0.0.1", "::1", " ", "a.b.svc"])
    assert sans == [
        x509.DNSName("kiam-server"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.DNSName("a.b.svc"),
    ]


def test_files_parse_and_chain_verifies(tmp_path: Path) -> None:
    paths = generate_certificates(tmp_path / "out", days=30)
    assert sorted(p.name for p in paths.directory.iterdir()) == sorted(ALL_FILES)

    ca = _cert(paths.ca)
    server = _cert(paths.server_cert)
    agent = _cert(paths.agent_cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > datetime.timedelta(days=299)
    assert server.not_valid_after_utc - server.not_valid_before_utc < datetime.timedelta(days=31)

    for path in (paths.ca_key, paths.server_key, paths.agent_key):
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"
    server_key = serialization.load_pem_private_key(paths.server_key.read_bytes(), None)
    assert server_key.public_key() == server.public_key()

    store = Store([ca])
    server_chain = (
        PolicyBuilder()
        .store(store)
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        .verify(server, [])
    )
    assert server_chain[-1] == ca
    client = PolicyBuilder().store(store).build_client_verifier().verify(agent, [])
    assert client.chain[-1] == ca

    eku = agent.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cn = agent.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "kiam-agent"


def test_server_sans_are_the_default_names(tmp_path: Path) -> None:
    paths = generate_certificates(tmp_path)
    sans = _cert(paths.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    names = [str(v) for v in sans.value.get_values_for_type(x509.DNSName)]
    ips = [str(v) for v in sans.value.get_values_for_type(x509.IPAddress)]
    assert names + ips == list(DEFAULT_SERVER_NAMES)
    eku = _cert(paths.server_cert).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku.value


def test_modes(tmp_path: Path) -> None:
    generate_certificates(tmp_path)
    for name in ALL_FILES:
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        if name.endswith("-key.pem"):
            assert mode == 0o600, name
        else:
            assert mode & 0o077 == mode & 0o044, name


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "agent.pem").write_bytes(b"keep me")
    with pytest.raises(CertsError, match=r"agent\.pem already exists"):
        generate_certificates(tmp_path)
    assert (tmp_path / "agent.pem").read_bytes() == b"keep me"
    # nothing else was written before the refusal
    assert [p.name for p in tmp_path.iterdir()] == ["agent.pem"]


def test_force_overwrites_and_narrows_key_mode(tmp_path: Path) -> None:
    first = generate_certificates(tmp_path)
    old_ca = first.ca.read_bytes()
    first.server_key.chmod(0o644)
    generate_certificates(tmp_path, force=True)
    assert first.ca.read_bytes() != old_ca
    assert stat.S_IMODE(first.server_key.stat().st_mode) == 0o600


def test_run_certs_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = CertsSettings(out=str(tmp_path), server_names=("example.test",), days=2)
    assert run_certs(settings) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'server-key.pem'}" in out
    assert run_certs(settings) == 1
    assert "ca.pem already exists" in capsys.readouterr().err


def test_kiam_certs_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    done = subprocess.run(
        [
            str(KIAM),
            "certs",
            "--out",
            str(out),
            "--server-name",
            "srv.test",
            "--server-name",
            "10.1.2.3",
            "--days",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    sans = (
        _cert(out / "server.pem")
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert sans.get_values_for_type(x509.DNSName) == ["srv.test"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]

    again = subprocess.run(
        [str(KIAM), "certs", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1
    assert "already exists" in again.stderr
