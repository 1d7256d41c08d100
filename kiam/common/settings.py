"""Settings shared by the commands: logging, TLS, gRPC keepalive, metrics, the server address.

Every field is filled by one flag, declared on the field with its default and help
(:mod:`kiam.common.flags`); Kiam's names and defaults throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from kiam.common.flags import (
    Ignored,
    at_least,
    duration,
    existing_file,
    flag,
    nested,
    required_flag,
    url,
)
from kiam.common.logs import LEVELS

DEFAULT_SERVER_ADDRESS = "localhost:9610"
"""Where the server listens and the agent and ``kiam health`` look for it, by default."""


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    json_log: bool = flag(False, "output logs as one JSON object per line")
    level: str = flag("info", "log level", choices=LEVELS)


@dataclass(frozen=True, kw_only=True)
class TLSSettings:
    cert: str = required_flag("PEM certificate presented to the peer", check=existing_file)
    key: str = required_flag("PEM private key of --cert", check=existing_file)
    ca: str = required_flag(
        "PEM CA bundle the peer's certificate must chain to", check=existing_file
    )


@dataclass(frozen=True, kw_only=True)
class KeepaliveSettings:
    time: float = flag(
        10.0,
        "gRPC keepalive ping interval",
        name="grpc-keepalive-time-duration",
        # Go Kiam 3.5 and 3.6 spelled it -ms, and took a duration (10s) all the same
        aliases=("grpc-keepalive-time-ms",),
        parse=duration,
    )
    timeout: float = flag(
        2.0,
        "gRPC keepalive ping timeout: a ping not acknowledged by then drops the connection",
        name="grpc-keepalive-timeout-duration",
        aliases=("grpc-keepalive-timeout-ms",),
        parse=duration,
    )
    permit_without_stream: bool = flag(
        False,
        "send keepalive pings even with no RPC in flight",
        name="grpc-keepalive-permit-without-stream",
    )


@dataclass(frozen=True, kw_only=True)
class PeerSettings:
    """What every command that talks gRPC over mutual TLS takes: the TLS files, logs."""

    tls: TLSSettings = field(metadata=nested())
    log: LogSettings = field(default_factory=LogSettings, metadata=nested())


@dataclass(frozen=True, kw_only=True)
class DaemonSettings(PeerSettings):
    """What both daemons take besides: ``/metrics``, the metadata service."""

    IGNORED_FLAGS: ClassVar[tuple[Ignored, ...]] = (
        Ignored(name="statsd", reason="StatsD is not supported; metrics are served to Prometheus"),
        Ignored(name="statsd-prefix", reason="StatsD is not supported", hidden=True),
        Ignored(name="statsd-interval", reason="StatsD is not supported", hidden=True),
        Ignored(name="prometheus-sync-interval", reason="metrics are always live"),
        Ignored(name="pprof-listen-addr", reason="pprof is Go's profiler; there is no Python one"),
    )

    prometheus_listen_addr: str = flag(
        "", "host:port for /metrics, e.g. localhost:9620; empty disables"
    )
    metadata_endpoint: str = flag(
        "http://169.254.169.254",
        "the EC2 instance metadata service (agent: for allow-listed paths; "
        "server: for --role-base-arn-autodetect)",
        parse=url,
    )


@dataclass(frozen=True, kw_only=True)
class ServerConnection:
    """How the agent and ``kiam health`` reach the servers."""

    IGNORED_FLAGS: ClassVar[tuple[Ignored, ...]] = (
        Ignored(name="server-address-refresh", reason="deprecated in Kiam"),
    )

    server_address: str = flag(
        DEFAULT_SERVER_ADDRESS,
        "kiam server gRPC address: host:port, a DNS name with several addresses, "
        "or a comma-separated list",
    )
    gateway_timeout_creation: float = flag(
        1.0, "time to wait for the first server connection", parse=duration
    )


DEFAULT_SERVER_NAMES = (
    "kiam-server",
    "kiam-server.kube-system",
    "kiam-server.kube-system.svc",
    "kiam-server.kube-system.svc.cluster.local",
    "localhost",
    "127.0.0.1",
    "::1",
)
DEFAULT_WEBHOOK_NAMES = (
    "kiam-webhook",
    "kiam-webhook.kube-system",
    "kiam-webhook.kube-system.svc",
    "localhost",
    "127.0.0.1",
)
"""The API server calls a webhook Service as ``<service>.<namespace>.svc``."""


@dataclass(frozen=True, kw_only=True)
class HealthSettings(PeerSettings, ServerConnection):
    """``kiam health``: probe each server in ``server_address`` until one answers."""

    keepalive: KeepaliveSettings = field(default_factory=KeepaliveSettings, metadata=nested())
    timeout: float = flag(1.0, "overall deadline for the probe", parse=duration)


@dataclass(frozen=True, kw_only=True)
class CertsSettings:
    out: str = required_flag("directory to write the PEM files to")
    """Directory for ca.pem, ca-key.pem, server.pem, server-key.pem, agent.pem, agent-key.pem,
    webhook.pem, webhook-key.pem."""
    server_names: tuple[str, ...] = flag(
        DEFAULT_SERVER_NAMES,
        "server certificate DNS name or IP (repeatable; default: "
        + ", ".join(DEFAULT_SERVER_NAMES)
        + ")",
        name="server-name",
        repeat=True,
        metavar="NAME",
    )
    webhook_names: tuple[str, ...] = flag(
        DEFAULT_WEBHOOK_NAMES,
        "webhook serving certificate DNS name or IP (repeatable; default: "
        + ", ".join(DEFAULT_WEBHOOK_NAMES)
        + ")",
        name="webhook-name",
        repeat=True,
        metavar="NAME",
    )
    days: int = flag(
        365,
        "validity of the leaf certificates in days; the CA gets ten times as long",
        parse=at_least(1),
    )
    force: bool = flag(False, "overwrite existing files")
