"""Flag parsing and validation of the `kiam` command (no daemons are started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kiam.cli import build_parser, main


def test_agent_defaults_match_kiam(tmp_path: Path) -> None:
    ns = build_parser().parse_args(["agent", "--cert", "c", "--key", "k", "--ca", "a"])
    assert ns.port == 3100
    assert ns.allow_route_regexp == "^$"
    assert ns.iptables is False
    assert ns.iptables_remove is True
    assert ns.host_interface == "docker0"
    assert ns.server_address == "localhost:9610"
    assert ns.gateway_timeout_creation == 1.0
    assert ns.imdsv2 == "optional"


def test_bool_flags_accept_no_prefix() -> None:
    ns = build_parser().parse_args(
        ["agent", "--cert", "c", "--key", "k", "--ca", "a", "--iptables", "--no-iptables-remove"]
    )
    assert ns.iptables is True
    assert ns.iptables_remove is False


def test_whitelist_route_regexp_is_an_alias() -> None:
    ns = build_parser().parse_args(
        ["agent", "--cert", "c", "--key", "k", "--ca", "a", "--whitelist-route-regexp", "^/x$"]
    )
    assert ns.allow_route_regexp == "^/x$"


def test_server_defaults_match_kiam() -> None:
    ns = build_parser().parse_args(["server", "--cert", "c", "--key", "k", "--ca", "a"])
    assert ns.bind == "localhost:9610"
    assert ns.sync == 60.0
    assert ns.session == "kiam"
    assert ns.session_duration == 900.0
    assert ns.session_refresh == 300.0
    assert ns.fetchers == 8
    assert ns.prefetch_buffer_size == 1000


def test_durations_are_parsed() -> None:
    ns = build_parser().parse_args(
        [
            "server",
            "--cert",
            "c",
            "--key",
            "k",
            "--ca",
            "a",
            "--sync",
            "500ms",
            "--session-duration",
            "1h",
        ]
    )
    assert ns.sync == 0.5
    assert ns.session_duration == 3600.0


def _tls_files(tmp_path: Path) -> list[str]:
    for name in ("c", "k", "a"):
        (tmp_path / name).write_text("x")
    return [
        "--cert",
        str(tmp_path / "c"),
        "--key",
        str(tmp_path / "k"),
        "--ca",
        str(tmp_path / "a"),
    ]


def test_server_requires_a_base_arn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["server", *_tls_files(tmp_path)])
    assert exit_info.value.code == 2
    assert "role-base-arn" in capsys.readouterr().err


def test_server_refuses_short_sessions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "server",
                *_tls_files(tmp_path),
                "--role-base-arn",
                "arn:aws:iam::1:role/",
                "--session-duration",
                "10m",
            ]
        )
    assert "at least 15m" in capsys.readouterr().err


def test_agent_iptables_needs_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOST_IP", raising=False)
    with pytest.raises(SystemExit):
        main(["agent", *_tls_files(tmp_path), "--iptables", "--host", ""])
    assert "--host" in capsys.readouterr().err


def test_missing_tls_file_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["agent", "--cert", str(tmp_path / "nope"), "--key", "k", "--ca", "a"])
    assert "no such file" in capsys.readouterr().err


def test_bad_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["server", "--cert", "c", "--key", "k", "--ca", "a", "--sync", "soon"]
        )
    assert "invalid duration" in capsys.readouterr().err


def test_console_command_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kiam", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for command in ("agent", "server", "health", "certs", "demo"):
        assert command in result.stdout
