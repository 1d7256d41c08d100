"""Flag parsing and validation of the `kiam` command (no daemons are started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kiam.cli import build_parser, main


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


def test_agent_defaults_match_kiam(tmp_path: Path) -> None:
    ns = build_parser().parse_args(["agent", *_tls_files(tmp_path)])
    assert ns.port == 3100
    assert ns.allow_route_regexp == "^$"
    assert ns.iptables is False
    assert ns.iptables_remove is True
    assert ns.host_interface == "docker0"
    assert ns.server_address == "localhost:9610"
    assert ns.gateway_timeout_creation == 1.0
    assert ns.imdsv2 == "optional"


def test_bool_flags_accept_no_prefix(tmp_path: Path) -> None:
    ns = build_parser().parse_args(
        ["agent", *_tls_files(tmp_path), "--iptables", "--no-iptables-remove"]
    )
    assert ns.iptables is True
    assert ns.iptables_remove is False


def test_whitelist_route_regexp_is_an_alias(tmp_path: Path) -> None:
    ns = build_parser().parse_args(
        ["agent", *_tls_files(tmp_path), "--whitelist-route-regexp", "^/x$"]
    )
    assert ns.allow_route_regexp == "^/x$"


def test_server_defaults_match_kiam(tmp_path: Path) -> None:
    ns = build_parser().parse_args(["server", *_tls_files(tmp_path)])
    assert ns.bind == "localhost:9610"
    assert ns.sync == 60.0
    assert ns.session == "kiam"
    assert ns.session_duration == 900.0
    assert ns.session_refresh == 300.0
    assert ns.fetchers == 8
    assert ns.prefetch_buffer_size == 1000


def test_durations_are_parsed(tmp_path: Path) -> None:
    ns = build_parser().parse_args(
        [
            "server",
            *_tls_files(tmp_path),
            "--sync",
            "500ms",
            "--session-duration",
            "1h",
        ]
    )
    assert ns.sync == 0.5
    assert ns.session_duration == 3600.0


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


def test_bad_duration_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["server", *_tls_files(tmp_path), "--sync", "soon"])
    assert "invalid duration" in capsys.readouterr().err


def test_console_command_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kiam", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for command in ("agent", "server", "health", "certs", "demo"):
        assert command in result.stdout


# ---------------------------------------------------------------- one source per flag


def _settings_from_flags(command: str, argv: list[str]) -> object:
    from kiam.cli import COMMANDS
    from kiam.common.flags import from_flags

    chosen = next(c for c in COMMANDS if c.name == command)
    return from_flags(chosen.settings, build_parser().parse_args([command, *argv]))


def test_flag_defaults_are_the_settings_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kiam.agent.settings import AgentSettings
    from kiam.common.settings import HealthSettings, TLSSettings
    from kiam.server.settings import ServerSettings

    monkeypatch.delenv("HOST_IP", raising=False)
    tls_argv = _tls_files(tmp_path)
    tls = TLSSettings(cert=tls_argv[1], key=tls_argv[3], ca=tls_argv[5])
    assert _settings_from_flags("agent", tls_argv) == AgentSettings(tls=tls)
    assert _settings_from_flags("health", tls_argv) == HealthSettings(tls=tls)
    base = ["--role-base-arn", "arn:aws:iam::1:role/"]
    assert _settings_from_flags("server", [*tls_argv, *base]) == ServerSettings(
        tls=tls, role_base_arn="arn:aws:iam::1:role/"
    )


def test_host_defaults_to_the_host_ip_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST_IP", "10.9.8.7")
    ns = build_parser().parse_args(["agent", *_tls_files(tmp_path)])
    assert ns.host == "10.9.8.7"


def test_metadata_endpoint_loses_its_trailing_slash(tmp_path: Path) -> None:
    ns = build_parser().parse_args(
        ["agent", *_tls_files(tmp_path), "--metadata-endpoint", "http://127.0.0.1:8/"]
    )
    assert ns.metadata_endpoint == "http://127.0.0.1:8"


def test_the_server_has_no_client_only_keepalive_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["server", *_tls_files(tmp_path), "--grpc-keepalive-permit-without-stream"]
        )
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["agent", "--port", "70000"], "must be 0-65535"),
        (["agent", "--allow-route-regexp", "("], "invalid regular expression"),
        (["server", "--fetchers", "0"], "must be at least 1"),
        (["server", "--sync", "0s"], "must be positive"),
        (["certs", "--days", "0", "--out", "x"], "must be at least 1"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    tls = _tls_files(tmp_path) if argv[0] != "certs" else []
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, *tls])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert f"argument {argv[1]}" in err


def test_kiams_unused_flags_are_accepted_with_a_warning(tmp_path: Path) -> None:
    # `kiam health` against nothing: exit 1 quickly, after the warnings
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiam",
            "health",
            *_tls_files(tmp_path),
            "--server-address",
            "127.0.0.1:1",
            "--timeout",
            "100ms",
            "--server-address-refresh",
            "5s",
            "--grpc-keepalive-time-duration",
            "3s",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    warnings = [line for line in done.stderr.splitlines() if "ignored" in line]
    assert warnings == [
        "kiam: --server-address-refresh is accepted for Kiam compatibility and ignored: "
        "deprecated in Kiam",
    ]


def test_statsd_flags_parse_and_say_they_are_ignored(tmp_path: Path) -> None:
    from kiam.common.flags import ignored_given
    from kiam.server.settings import ServerSettings

    argv = ["--statsd", "127.0.0.1:8125", "--statsd-interval", "100ms"]
    ns = build_parser().parse_args(["server", *_tls_files(tmp_path), *argv])
    assert [item.name for item in ignored_given(ServerSettings, ns)] == [
        "statsd",
        "statsd-interval",
    ]
    plain = build_parser().parse_args(["server", *_tls_files(tmp_path)])
    assert ignored_given(ServerSettings, plain) == []


def test_a_repeatable_flag_fills_a_tuple_and_defaults_when_absent() -> None:
    from kiam.common.settings import DEFAULT_SERVER_NAMES

    names = ["--server-name", "kiam.example", "--server-name", "10.0.0.9"]
    given = _settings_from_flags("certs", ["--out", "pki", *names])
    assert given.server_names == ("kiam.example", "10.0.0.9")  # type: ignore[attr-defined]
    absent = _settings_from_flags("certs", ["--out", "pki"])
    assert absent.server_names == DEFAULT_SERVER_NAMES  # type: ignore[attr-defined]


def test_cross_flag_rules_hold_for_settings_made_in_code_too() -> None:
    from kiam.common.flags import SettingsError
    from kiam.common.settings import TLSSettings
    from kiam.server.settings import ServerSettings

    tls = TLSSettings(cert="c", key="k", ca="a")
    with pytest.raises(SettingsError, match="session-refresh"):
        ServerSettings(tls=tls, role_base_arn="arn:aws:iam::1:role/", session_refresh=900.0)


def test_explain_takes_the_servers_arguments_as_pasted(tmp_path: Path) -> None:
    """The server's whole command line works for ``kiam explain``: the flags that decide
    credentials fill the nested server settings, the serving-only ones (TLS files that
    need not exist here, the bind address, ...) are accepted and ignored."""
    from kiam.common.flags import ignored_given
    from kiam.server.settings import ExplainSettings

    server_argv = [
        "--cert", "/nowhere/server.pem", "--key", "/nowhere/key.pem", "--ca", "/nowhere/ca.pem",
        "--bind", "0.0.0.0:443", "--role-base-arn", "arn:aws:iam::123456789012:role/",
        "--disable-strict-namespace-regexp", "--session", "prod", "--fetchers", "4",
        "--grpc-keepalive-time-ms", "10s",
    ]
    ns = build_parser().parse_args(["explain", "team/web", *server_argv])
    settings = _settings_from_flags("explain", ["team/web", *server_argv])
    assert isinstance(settings, ExplainSettings)
    assert settings.pod == "team/web" and settings.output == "text"
    assert settings.server.role_base_arn == "arn:aws:iam::123456789012:role/"
    assert settings.server.disable_strict_namespace_regexp is True
    assert settings.server.session == "prod"
    assert [item.name for item in ignored_given(ExplainSettings, ns)] == [
        "cert", "key", "ca", "bind", "fetchers", "grpc-keepalive-time-ms"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "exactly one"),
        (["team/web", "--ip", "10.0.0.1"], "exactly one"),
        (["web"], "expected NAMESPACE/POD"),
        (["team/web"], "role-base-arn not specified"),
    ],
)
def test_explain_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [] if message.startswith("role-base-arn") else ["--role-base-arn",
                                                           "arn:aws:iam::1:role/"]
    with pytest.raises(SystemExit) as exc:
        main(["explain", *argv, *base])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
