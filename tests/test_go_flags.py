"""Every flag any Go Kiam release's agent, server and health accepted is ours too
(tests/go_kiam.py: GO_FLAGS): meant where it still makes sense, otherwise accepted and
warned about once (docs/MIGRATING.md lists those)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kiam.cli import COMMANDS, build_parser
from kiam.common.flags import from_flags, ignored_given
from tests.go_kiam import GO_BOOLEANS, GO_FLAGS

ROOT = Path(__file__).resolve().parent.parent

# A value for each Go flag that takes one, and where it must land in our settings with
# what value; None: accepted and ignored. Values differ from the defaults, so a flag that
# were dropped on the floor would fail.
MEANT: dict[str, tuple[str, str, Any] | None] = {
    "cert": ("{file}", "tls.cert", "{file}"),
    "key": ("{file}", "tls.key", "{file}"),
    "ca": ("{file}", "tls.ca", "{file}"),
    "level": ("debug", "log.level", "debug"),
    "server-address": ("kiam-server:443", "server_address", "kiam-server:443"),
    "gateway-timeout-creation": ("60s", "gateway_timeout_creation", 60.0),
    "grpc-keepalive-time-ms": ("3s", "keepalive.time", 3.0),
    "grpc-keepalive-timeout-ms": ("3s", "keepalive.timeout", 3.0),
    "grpc-keepalive-time-duration": ("3s", "keepalive.time", 3.0),
    "grpc-keepalive-timeout-duration": ("3s", "keepalive.timeout", 3.0),
    "prometheus-listen-addr": ("0.0.0.0:9620", "prometheus_listen_addr", "0.0.0.0:9620"),
    "port": ("8181", "port", 8181),
    "whitelist-route-regexp": ("^/a$", "allow_route_regexp", "^/a$"),
    "allow-route-regexp": ("^/a$", "allow_route_regexp", "^/a$"),
    "host": ("10.0.0.9", "host", "10.0.0.9"),
    "host-interface": ("cali+", "host_interface", "cali+"),
    "fetchers": ("3", "fetchers", 3),
    "prefetch-buffer-size": ("10", "prefetch_buffer_size", 10),
    "bind": ("0.0.0.0:443", "bind", "0.0.0.0:443"),
    "kubeconfig": ("/kube/config", "kubeconfig", "/kube/config"),
    "sync": ("2m", "sync", 120.0),
    "role-base-arn": ("arn:aws:iam::123456789012:role/x/", "role_base_arn",
                      "arn:aws:iam::123456789012:role/x/"),
    "session": ("fleet", "session", "fleet"),
    "session-duration": ("1h", "session_duration", 3600.0),
    "session-refresh": ("10m", "session_refresh", 600.0),
    "assume-role-arn": ("arn:aws:iam::123456789012:role/k", "assume_role_arn",
                        "arn:aws:iam::123456789012:role/k"),
    "region": ("eu-west-1", "region", "eu-west-1"),
    "grpc-max-connection-idle-duration": ("5m", "max_connection_idle", 300.0),
    "grpc-max-connection-age-duration": ("10m", "max_connection_age", 600.0),
    "grpc-max-connection-age-grace-duration": ("30s", "max_connection_age_grace", 30.0),
    "timeout": ("5s", "timeout", 5.0),
    # booleans: (unused, attribute, unused); --NAME gives True, --no-NAME False
    "json-log": ("", "log.json_log", True),
    "allow-ip-query": ("", "allow_ip_query", True),
    "iptables": ("", "iptables", True),
    "iptables-remove": ("", "iptables_remove", True),
    "grpc-keepalive-permit-without-stream": ("", "keepalive.permit_without_stream", True),
    "role-base-arn-autodetect": ("", "role_base_arn_autodetect", True),
    "disable-strict-namespace-regexp": ("", "disable_strict_namespace_regexp", True),
    # accepted, ignored, warned about
    "statsd": None,
    "statsd-interval": None,
    "statsd-prefix": None,
    "prometheus-sync-interval": None,
    "pprof-listen-addr": None,
    "server-address-refresh": None,
}
IGNORED_VALUES = {
    "statsd": "127.0.0.1:8125",
    "statsd-interval": "100ms",
    "statsd-prefix": "kiam",
    "prometheus-sync-interval": "5s",
    "pprof-listen-addr": "localhost:9990",
    "server-address-refresh": "2s",
}

CASES = [(command, name) for command, flags in GO_FLAGS.items() for name in flags]


def test_the_list_is_whole() -> None:
    # 38 flags at Go Kiam's master (its three commands together), more in older releases
    at_head = {name for flags in GO_FLAGS.values() for name, (_, last) in flags.items()
               if last == "master"}
    assert len(at_head) == 38
    assert set(MEANT) == {name for _, name in CASES}


def _tls(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name in ("cert", "key", "ca"):
        path = tmp_path / f"{name}.pem"
        path.write_text("x")
        files[name] = str(path)
    return files


def _base(command: str, files: dict[str, str], name: str) -> list[str]:
    argv = [f"--{n}={path}" for n, path in files.items() if n != name]
    if command == "server" and name != "role-base-arn":
        argv.append("--role-base-arn=arn:aws:iam::123456789012:role/")
    if name == "iptables":
        argv.append("--host=10.0.0.1")
    return argv


def _settings(command: str, argv: list[str]) -> tuple[Any, Any]:
    chosen = next(c for c in COMMANDS if c.name == command)
    ns = build_parser().parse_args([command, *argv])
    return from_flags(chosen.settings, ns), ignored_given(chosen.settings, ns)


def _attribute(settings: Any, path: str) -> Any:
    for part in path.split("."):
        settings = getattr(settings, part)
    return settings


@pytest.mark.parametrize(("command", "name"), CASES, ids=[f"{c} --{n}" for c, n in CASES])
def test_every_go_flag_parses_and_is_meant_or_ignored(
    tmp_path: Path, command: str, name: str
) -> None:
    files = _tls(tmp_path)
    base = _base(command, files, name)
    meant = MEANT[name]
    if meant is None:
        settings, ignored = _settings(command, [*base, f"--{name}={IGNORED_VALUES[name]}"])
        assert [item.name for item in ignored] == [name]
        return
    value, attribute, expected = meant
    if name in GO_BOOLEANS:
        on, _ = _settings(command, [*base, f"--{name}"])
        off, _ = _settings(command, [*base, f"--no-{name}"])
        assert (_attribute(on, attribute), _attribute(off, attribute)) == (True, False)
        return
    given = value.format(file=files.get(name, ""))
    settings, ignored = _settings(command, [*base, f"--{name}={given}"])
    assert _attribute(settings, attribute) == (
        expected.format(file=given) if isinstance(expected, str) else expected
    )
    assert ignored == []


def test_ignored_flags_are_warned_about_once_each(tmp_path: Path) -> None:
    files = _tls(tmp_path)
    ignored = [name for name in GO_FLAGS["server"] if MEANT[name] is None]
    # each given twice; the server then stops at its first step (no such kubeconfig)
    given = [f"--{name}={IGNORED_VALUES[name]}" for name in ignored for _ in range(2)]
    done = subprocess.run(
        [sys.executable, "-m", "kiam", "server", *_base("server", files, ""), *given,
         "--kubeconfig", str(tmp_path / "absent")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("kiam: --")]
    assert all("is accepted for Kiam compatibility and ignored: " in w for w in warnings)
    assert sorted(w.split()[1] for w in warnings) == sorted(f"--{name}" for name in ignored)


def test_the_ignored_flags_are_in_the_migration_notes() -> None:
    notes = (ROOT / "docs" / "MIGRATING.md").read_text()
    for name, meant in MEANT.items():
        if meant is None:
            assert f"`--{name}`" in notes, name
