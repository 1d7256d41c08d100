"""Settings shared by both daemons: logging, metrics, TLS and gRPC keepalive."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    json_log: bool = False
    """One JSON object per line instead of text."""
    level: str = "info"
    """debug, info, warn or error."""


@dataclass(frozen=True, kw_only=True)
class TLSSettings:
    cert: str
    """PEM certificate presented to the peer."""
    key: str
    """PEM private key of ``cert``."""
    ca: str
    """PEM CA bundle the peer's certificate must chain to."""


@dataclass(frozen=True, kw_only=True)
class KeepaliveSettings:
    time: float = 10.0
    """Seconds between keepalive pings on an idle connection."""
    timeout: float = 2.0
    """Seconds to wait for a ping's acknowledgement before dropping the connection."""
    permit_without_stream: bool = False
    """Ping even when no RPC is in flight."""


DEFAULT_SERVER_NAMES = (
    "kiam-server",
    "kiam-server.kube-system",
    "kiam-server.kube-system.svc",
    "kiam-server.kube-system.svc.cluster.local",
    "localhost",
    "127.0.0.1",
    "::1",
)


@dataclass(frozen=True, kw_only=True)
class HealthSettings:
    tls: TLSSettings
    log: LogSettings = field(default_factory=LogSettings)
    keepalive: KeepaliveSettings = field(default_factory=KeepaliveSettings)
    server_address: str = "localhost:9610"
    """Server to probe (``host:port``; several may be named, each is probed until one answers)."""
    gateway_timeout_creation: float = 1.0
    """Seconds to wait for the connection."""
    timeout: float = 1.0
    """Overall deadline for the probe in seconds."""


@dataclass(frozen=True, kw_only=True)
class CertsSettings:
    out: str
    """Directory for ca.pem, ca-key.pem, server.pem, server-key.pem, agent.pem, agent-key.pem."""
    server_names: tuple[str, ...] = DEFAULT_SERVER_NAMES
    """Subject alternative names of the server certificate (DNS names or IP addresses)."""
    days: int = 365
    """Validity of the leaf certificates; the CA gets ten times as long."""
    force: bool = False
    """Overwrite existing files."""
