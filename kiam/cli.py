"""The ``kiam`` command: flags (Kiam's names and defaults) -> settings -> the daemons.

Every subcommand's flags are parsed and validated here, so a bad flag fails before
anything starts, with the reason. The daemons are imported only when chosen.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from kiam.common.durations import parse_duration
from kiam.common.logs import LEVELS
from kiam.common.settings import (
    DEFAULT_SERVER_NAMES,
    CertsSettings,
    HealthSettings,
    KeepaliveSettings,
    LogSettings,
    TLSSettings,
)

log = logging.getLogger("kiam")

MIN_SESSION_DURATION = 15 * 60.0


class UsageError(Exception):
    """A flag combination that cannot work; printed as ``kiam <cmd>: error: ...``."""


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _regexp(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"invalid regular expression {text!r}: {exc}") from None
    return text


def _add_bool(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    parser.add_argument(
        f"--{name}", action=argparse.BooleanOptionalAction, default=default, help=help
    )


def _add_log_flags(parser: argparse.ArgumentParser) -> None:
    _add_bool(parser, "json-log", False, "output logs as one JSON object per line")
    parser.add_argument("--level", choices=LEVELS, default="info", help="log level")


def _add_tls_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cert", required=True, help="PEM certificate path")
    parser.add_argument("--key", required=True, help="PEM private key path")
    parser.add_argument("--ca", required=True, help="PEM CA certificate path")


def _add_telemetry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prometheus-listen-addr", default="", help="address for /metrics, e.g. localhost:9620"
    )
    # Accepted so an existing Kiam deployment's arguments keep working.
    parser.add_argument(
        "--prometheus-sync-interval",
        type=_duration,
        default=5.0,
        help="accepted for Kiam compatibility; metrics are always live",
    )
    parser.add_argument("--statsd", default="", help="not supported (use Prometheus); accepted")
    parser.add_argument("--statsd-prefix", default="kiam", help=argparse.SUPPRESS)
    parser.add_argument("--statsd-interval", type=_duration, default=0.1, help=argparse.SUPPRESS)


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server-address",
        default="localhost:9610",
        help="kiam server gRPC address: host:port, a DNS name with several addresses, "
        "or a comma-separated list",
    )
    parser.add_argument(
        "--server-address-refresh",
        type=_duration,
        default=0.0,
        help="deprecated in Kiam and ignored",
    )
    parser.add_argument(
        "--gateway-timeout-creation",
        type=_duration,
        default=1.0,
        help="time to wait for the first server connection",
    )
    parser.add_argument(
        "--grpc-keepalive-time-duration",
        type=_duration,
        default=10.0,
        help="gRPC keepalive ping interval",
    )
    parser.add_argument(
        "--grpc-keepalive-timeout-duration",
        type=_duration,
        default=2.0,
        help="gRPC keepalive ping timeout",
    )
    _add_bool(
        parser,
        "grpc-keepalive-permit-without-stream",
        False,
        "send keepalive pings even with no RPC in flight",
    )


def _log(ns: argparse.Namespace) -> LogSettings:
    return LogSettings(json_log=ns.json_log, level=ns.level)


def _tls(ns: argparse.Namespace) -> TLSSettings:
    for flag in ("cert", "key", "ca"):
        path = getattr(ns, flag)
        if not os.path.isfile(path):
            raise UsageError(f"--{flag} {path}: no such file")
    return TLSSettings(cert=ns.cert, key=ns.key, ca=ns.ca)


def _client_keepalive(ns: argparse.Namespace) -> KeepaliveSettings:
    return KeepaliveSettings(
        time=ns.grpc_keepalive_time_duration,
        timeout=ns.grpc_keepalive_timeout_duration,
        permit_without_stream=ns.grpc_keepalive_permit_without_stream,
    )


# ---------------------------------------------------------------- agent


def _agent_parser(sub: Any) -> None:
    p = sub.add_parser("agent", help="per-node metadata proxy (DaemonSet, hostNetwork)")
    _add_log_flags(p)
    _add_telemetry_flags(p)
    _add_tls_flags(p)
    _add_client_flags(p)
    p.add_argument("--port", type=int, default=3100, help="HTTP port")
    p.add_argument(
        "--listen-address",
        default="",
        help="address to bind the HTTP port on; empty binds every address",
    )
    _add_bool(
        p, "allow-ip-query", False, "allow ?ip= to override the caller address (development only)"
    )
    p.add_argument(
        "--allow-route-regexp",
        "--whitelist-route-regexp",
        dest="allow_route_regexp",
        type=_regexp,
        default="^$",
        help="metadata paths matching this are proxied to the real IMDS",
    )
    _add_bool(p, "iptables", False, "add the DNAT rule for 169.254.169.254:80")
    _add_bool(p, "iptables-remove", True, "remove the DNAT rule at shutdown")
    _add_bool(p, "iptables-cleanup", False, "remove a leftover DNAT rule and exit")
    p.add_argument(
        "--host",
        default=os.environ.get("HOST_IP", ""),
        help="this node's IP, the DNAT destination (env HOST_IP)",
    )
    p.add_argument(
        "--host-interface",
        default="docker0",
        help="interface pod traffic arrives on (!eth0 inverts, cali+ is a prefix)",
    )
    p.add_argument(
        "--imdsv2",
        choices=("optional", "required"),
        default="optional",
        help="whether token-less IMDSv1 requests are still served",
    )
    p.add_argument(
        "--metadata-endpoint",
        default="http://169.254.169.254",
        help="the real instance metadata service, for allow-listed paths",
    )
    p.set_defaults(run=_run_agent)


def _run_agent(ns: argparse.Namespace) -> int:
    from kiam.agent.settings import AgentSettings

    if (ns.iptables or ns.iptables_cleanup) and not ns.host:
        raise UsageError("--host (or env HOST_IP) is required with --iptables")
    if not 0 <= ns.port < 65536:
        raise UsageError(f"--port {ns.port}: must be 0-65535 (0 picks a free port)")
    settings = AgentSettings(
        tls=_tls(ns),
        log=_log(ns),
        keepalive=_client_keepalive(ns),
        port=ns.port,
        listen_address=ns.listen_address,
        allow_ip_query=ns.allow_ip_query,
        allow_route_regexp=ns.allow_route_regexp,
        iptables=ns.iptables,
        iptables_remove=ns.iptables_remove,
        iptables_cleanup=ns.iptables_cleanup,
        host=ns.host,
        host_interface=ns.host_interface,
        server_address=ns.server_address,
        gateway_timeout_creation=ns.gateway_timeout_creation,
        prometheus_listen_addr=ns.prometheus_listen_addr,
        imdsv2=ns.imdsv2,
        metadata_endpoint=ns.metadata_endpoint.rstrip("/"),
    )
    return _call("kiam.agent.main", "run_agent", settings, statsd=ns.statsd)


# ---------------------------------------------------------------- server


def _server_parser(sub: Any) -> None:
    p = sub.add_parser("server", help="gRPC server: caches, policy, STS (Deployment)")
    _add_log_flags(p)
    _add_telemetry_flags(p)
    _add_tls_flags(p)
    p.add_argument("--bind", default="localhost:9610", help="gRPC bind address")
    p.add_argument("--kubeconfig", default="", help="path to a kubeconfig; empty = in-cluster")
    p.add_argument("--sync", type=_duration, default=60.0, help="pod cache resync interval")
    p.add_argument(
        "--role-base-arn",
        default="",
        help="base ARN for roles, e.g. arn:aws:iam::123456789012:role/",
    )
    _add_bool(
        p,
        "role-base-arn-autodetect",
        False,
        "detect the base ARN from the instance profile via the metadata service",
    )
    _add_bool(
        p,
        "disable-strict-namespace-regexp",
        False,
        "do not anchor the namespace permitted expression with ^...$",
    )
    p.add_argument("--session", default="kiam", help="session name used for STS tokens")
    p.add_argument(
        "--session-duration",
        type=_duration,
        default=900.0,
        help="requested STS session duration (minimum 15m)",
    )
    p.add_argument(
        "--session-refresh",
        type=_duration,
        default=300.0,
        help="refresh credentials this long before they expire",
    )
    p.add_argument(
        "--assume-role-arn", default="", help="IAM role the server assumes before making STS calls"
    )
    p.add_argument("--region", default="", help="AWS region for a regional STS endpoint")
    p.add_argument("--sts-endpoint", default="", help="explicit STS endpoint URL")
    p.add_argument("--fetchers", type=int, default=8, help="parallel credential fetchers")
    p.add_argument(
        "--prefetch-buffer-size",
        type=int,
        default=1000,
        help="pod events held between the pod watcher and the prefetcher",
    )
    p.add_argument(
        "--grpc-keepalive-time-duration",
        type=_duration,
        default=10.0,
        help="gRPC keepalive ping interval",
    )
    p.add_argument(
        "--grpc-keepalive-timeout-duration",
        type=_duration,
        default=2.0,
        help="gRPC keepalive ping timeout",
    )
    p.add_argument(
        "--grpc-max-connection-idle",
        type=_duration,
        default=0.0,
        help="close gRPC connections idle this long (0 = never)",
    )
    p.add_argument(
        "--grpc-max-connection-age",
        type=_duration,
        default=0.0,
        help="close gRPC connections this old so agents rebalance (0 = never)",
    )
    p.add_argument(
        "--grpc-max-connection-age-grace",
        type=_duration,
        default=0.0,
        help="grace for in-flight RPCs after the maximum age",
    )
    p.add_argument(
        "--metadata-endpoint",
        default="http://169.254.169.254",
        help="metadata service used by --role-base-arn-autodetect",
    )
    p.set_defaults(run=_run_server)


def _run_server(ns: argparse.Namespace) -> int:
    from kiam.server.settings import ServerSettings

    if not ns.role_base_arn and not ns.role_base_arn_autodetect:
        raise UsageError(
            "role-base-arn not specified and not auto-detected: "
            "use --role-base-arn or --role-base-arn-autodetect"
        )
    if ns.session_duration < MIN_SESSION_DURATION:
        raise UsageError("--session-duration must be at least 15m (the STS minimum)")
    if not 0 <= ns.session_refresh < ns.session_duration:
        raise UsageError("--session-refresh must be shorter than --session-duration")
    if ns.fetchers < 1 or ns.prefetch_buffer_size < 1:
        raise UsageError("--fetchers and --prefetch-buffer-size must be at least 1")
    if ns.sync <= 0:
        raise UsageError("--sync must be positive")
    settings = ServerSettings(
        tls=_tls(ns),
        log=_log(ns),
        keepalive=KeepaliveSettings(
            time=ns.grpc_keepalive_time_duration, timeout=ns.grpc_keepalive_timeout_duration
        ),
        bind=ns.bind,
        kubeconfig=ns.kubeconfig,
        sync=ns.sync,
        role_base_arn=ns.role_base_arn,
        role_base_arn_autodetect=ns.role_base_arn_autodetect,
        disable_strict_namespace_regexp=ns.disable_strict_namespace_regexp,
        session=ns.session,
        session_duration=ns.session_duration,
        session_refresh=ns.session_refresh,
        assume_role_arn=ns.assume_role_arn,
        region=ns.region,
        sts_endpoint=ns.sts_endpoint,
        fetchers=ns.fetchers,
        prefetch_buffer_size=ns.prefetch_buffer_size,
        prometheus_listen_addr=ns.prometheus_listen_addr,
        max_connection_idle=ns.grpc_max_connection_idle,
        max_connection_age=ns.grpc_max_connection_age,
        max_connection_age_grace=ns.grpc_max_connection_age_grace,
        metadata_endpoint=ns.metadata_endpoint.rstrip("/"),
    )
    return _call("kiam.server.main", "run_server", settings, statsd=ns.statsd)


# ---------------------------------------------------------------- health, certs, demo


def _health_parser(sub: Any) -> None:
    p = sub.add_parser("health", help="probe a kiam server over mTLS (exit 0 healthy)")
    _add_log_flags(p)
    _add_tls_flags(p)
    _add_client_flags(p)
    p.add_argument("--timeout", type=_duration, default=1.0, help="deadline for the probe")
    p.set_defaults(run=_run_health)


def _run_health(ns: argparse.Namespace) -> int:
    settings = HealthSettings(
        tls=_tls(ns),
        log=_log(ns),
        keepalive=_client_keepalive(ns),
        server_address=ns.server_address,
        gateway_timeout_creation=ns.gateway_timeout_creation,
        timeout=ns.timeout,
    )
    return _call("kiam.health", "run_health", settings)


def _certs_parser(sub: Any) -> None:
    p = sub.add_parser("certs", help="generate a CA and server/agent key pairs for mTLS")
    p.add_argument("--out", required=True, help="directory to write the PEM files to")
    p.add_argument(
        "--server-name",
        action="append",
        dest="server_names",
        default=None,
        metavar="NAME",
        help="server certificate DNS name or IP (repeatable; default: "
        + ", ".join(DEFAULT_SERVER_NAMES)
        + ")",
    )
    p.add_argument("--days", type=int, default=365, help="validity of the leaf certificates")
    _add_bool(p, "force", False, "overwrite existing files")
    p.set_defaults(run=_run_certs)


def _run_certs(ns: argparse.Namespace) -> int:
    if ns.days < 1:
        raise UsageError("--days must be at least 1")
    settings = CertsSettings(
        out=ns.out,
        server_names=tuple(ns.server_names) if ns.server_names else DEFAULT_SERVER_NAMES,
        days=ns.days,
        force=ns.force,
    )
    return _call("kiam.certs", "run_certs", settings)


def _demo_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="the whole system locally, on the test bed's stand-ins")
    _add_bool(p, "netns", False, "run the pods as network namespaces behind iptables (root)")
    _add_log_flags(p)
    p.set_defaults(run=_run_demo)


DEMO_MISSING = (
    "kiam demo: the demo is part of kiam's test bed, which is not installed here;"
    " run `make demo` in a clone of the kiam repository"
)


def _run_demo(ns: argparse.Namespace) -> int:
    # The test bed is its own distribution (testbed/), absent from the wheel and the image.
    try:
        demo = importlib.import_module("kiam_testbed.demo")
    except ModuleNotFoundError as exc:
        if exc.name not in ("kiam_testbed", "kiam_testbed.demo"):
            raise
        print(DEMO_MISSING, file=sys.stderr)
        return 2
    run_demo: Callable[..., int] = demo.run_demo
    return run_demo(netns=ns.netns, log=_log(ns))


# ---------------------------------------------------------------- plumbing


def _call(module: str, function: str, *args: Any, statsd: str = "", **kwargs: Any) -> int:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        print(f"kiam: {module.rsplit('.', 1)[-1]} is not implemented yet", file=sys.stderr)
        return 2
    if statsd:
        print(
            "kiam: --statsd is not supported; metrics are served to Prometheus only",
            file=sys.stderr,
        )
    entry: Callable[..., int] = getattr(mod, function)
    return entry(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiam", description="IAM roles for Kubernetes pods through the EC2 metadata API"
    )
    parser.add_argument("--version", action="version", version=f"kiam {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _agent_parser(sub)
    _server_parser(sub)
    _health_parser(sub)
    _certs_parser(sub)
    _demo_parser(sub)
    return parser


def _version() -> str:
    from kiam import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        result: int = ns.run(ns)
    except UsageError as exc:
        parser.exit(2, f"kiam {ns.command}: error: {exc}\n")
    except KeyboardInterrupt:
        return 130
    return result
