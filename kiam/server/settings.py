"""Settings of ``kiam server``: one field per flag, Kiam's names and defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from kiam.common.settings import KeepaliveSettings, LogSettings, TLSSettings


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    tls: TLSSettings
    log: LogSettings = field(default_factory=LogSettings)
    keepalive: KeepaliveSettings = field(default_factory=KeepaliveSettings)
    bind: str = "localhost:9610"
    """gRPC listen address."""
    kubeconfig: str = ""
    """Path to a kubeconfig; empty means in-cluster configuration."""
    sync: float = 60.0
    """Seconds between full resyncs (re-lists) of the pod and namespace caches."""
    role_base_arn: str = ""
    """Base for bare role names, e.g. ``arn:aws:iam::123456789012:role/``."""
    role_base_arn_autodetect: bool = False
    """Detect the base ARN from the instance's IAM profile via IMDS."""
    disable_strict_namespace_regexp: bool = False
    """Do not anchor the namespace ``iam.amazonaws.com/permitted`` expression."""
    session: str = "kiam"
    """Default STS session name (sent as ``kiam-<name>``)."""
    session_duration: float = 900.0
    """Requested STS session duration in seconds (at least 15 minutes)."""
    session_refresh: float = 300.0
    """Refresh credentials when less than this many seconds are left; never serve below it."""
    assume_role_arn: str = ""
    """A role the server assumes first, to make its own STS calls with."""
    region: str = ""
    """AWS region for a regional STS endpoint; empty uses the global endpoint."""
    sts_endpoint: str = ""
    """Explicit STS endpoint URL (tests, the demo, VPC endpoints)."""
    fetchers: int = 8
    """Parallel credential fetchers for prefetch and refresh."""
    prefetch_buffer_size: int = 1000
    """Pod events held between the pod watcher and the prefetcher."""
    prometheus_listen_addr: str = ""
    """``host:port`` for /metrics; empty disables."""
    max_connection_idle: float = 0.0
    """gRPC: close connections idle this long (0 = never)."""
    max_connection_age: float = 0.0
    """gRPC: close connections this old so clients rebalance (0 = never)."""
    max_connection_age_grace: float = 0.0
    """gRPC: grace for in-flight RPCs after max age (0 = unbounded)."""
    metadata_endpoint: str = "http://169.254.169.254"
    """IMDS, used only by --role-base-arn-autodetect."""
