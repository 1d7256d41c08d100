"""Settings of ``kiam server``: one field per flag, Kiam's names and defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from kiam.aws.credentials import MIN_SESSION_DURATION
from kiam.common.flags import (
    Ignored,
    SettingsError,
    at_least,
    duration,
    flag,
    nested,
    positive_duration,
)
from kiam.common.settings import (
    DEFAULT_SERVER_ADDRESS,
    DaemonSettings,
    KeepaliveSettings,
    TLSSettings,
)

GO_CONNECTION_LIMIT = 900.0
"""Go Kiam's default for each of the three gRPC connection limits: 15 minutes."""


@dataclass(frozen=True, kw_only=True)
class ServerSettings(DaemonSettings):
    # the server always accepts pings without a call in flight (kiam.server.main)
    keepalive: KeepaliveSettings = field(
        default_factory=KeepaliveSettings, metadata=nested(omit=("permit_without_stream",))
    )
    bind: str = flag(DEFAULT_SERVER_ADDRESS, "gRPC bind address")
    kubeconfig: str = flag("", "path to a kubeconfig; empty = in-cluster")
    sync: float = flag(
        60.0, "resync (re-list) interval of the pod and namespace caches", parse=positive_duration
    )
    role_base_arn: str = flag(
        "", "base ARN for bare role names, e.g. arn:aws:iam::123456789012:role/"
    )
    role_base_arn_autodetect: bool = flag(
        False, "detect the base ARN from the instance profile via the metadata service"
    )
    disable_strict_namespace_regexp: bool = flag(
        False, "do not anchor the namespace permitted expression with ^...$"
    )
    session: str = flag("kiam", "session name used for STS tokens (sent as kiam-<name>)")
    session_duration: float = flag(
        MIN_SESSION_DURATION, "requested STS session duration (minimum 15m)", parse=duration
    )
    session_refresh: float = flag(
        300.0,
        "refresh credentials this long before they expire; never serve them with less left",
        parse=duration,
    )
    assume_role_arn: str = flag(
        "", "IAM role the server assumes before making STS calls"
    )
    region: str = flag(
        "", "AWS region for a regional STS endpoint; empty uses the global endpoint"
    )
    sts_endpoint: str = flag("", "explicit STS endpoint URL (tests, the demo, VPC endpoints)")
    # A minute: a pod polling a refused role costs one AssumeRole a minute instead of one
    # per request, and a fixed trust policy is picked up within a minute even if nobody
    # touches the pod's annotations (docs/sts.md).
    sts_error_ttl: float = flag(
        60.0,
        "remember a permanent STS refusal (AccessDenied, ...) per role and session this "
        "long, answering it without calling STS; an annotation change forgets it (0 = never)",
        parse=duration,
    )
    # AWS documents STS throttling as an account-wide token bucket but publishes no rate
    # we could cite (docs/sts.md, "Sizing"): 20/s with a burst of 40 refreshes ~10,000
    # keys at the default session and refresh and leaves most of the account to others.
    sts_qps: int = flag(
        20,
        "STS AssumeRole calls per second this server makes at most (the server-wide "
        "budget; lower after Throttling, back up while calls succeed)",
        parse=at_least(1),
    )
    sts_burst: int = flag(
        40, "STS calls the budget allows at once above --sts-qps", parse=at_least(1)
    )
    fetchers: int = flag(8, "parallel credential fetchers", parse=at_least(1))
    prefetch_buffer_size: int = flag(
        1000, "pod events held between the pod watcher and the prefetcher", parse=at_least(1)
    )
    # Sized for a few thousand nodes over three or more servers, with room for one
    # server's share when another is down; a stream costs a view of its node's entries
    # (tens of pods) and at most --node-stream-buffer queued updates (docs/architecture.md,
    # "The node replica").
    node_stream_limit: int = flag(
        2000,
        "WatchNode streams (agents answering from a node replica) served at once; more are "
        "refused with RESOURCE_EXHAUSTED and those agents use the RPCs (0: none)",
        parse=at_least(0),
    )
    # A node's whole re-list is a few hundred updates at most (~110 pods, removal and
    # entry each); an agent this far behind re-snapshots faster than it would catch up.
    node_stream_buffer: int = flag(
        1000,
        "updates queued for one node stream; a stream that falls this far behind is cut "
        "off (ABORTED) and its agent re-snapshots",
        parse=at_least(1),
    )
    # As Go Kiam's server (grpc-go keepalive.ServerParameters): 15m each by default, and
    # 0 means never, as grpc-go reads a zero value (docs/MIGRATING.md).
    token_audience: str = flag(
        "kiam",
        "audience the service-account tokens of token credentials must carry "
        "(kiam webhook's --token-audience; docs/token-credentials.md)",
    )
    max_connection_idle: float = flag(
        GO_CONNECTION_LIMIT,
        "close a gRPC connection with no RPC for this long (0 = never)",
        name="grpc-max-connection-idle-duration",
        parse=duration,
    )
    max_connection_age: float = flag(
        GO_CONNECTION_LIMIT,
        "close a gRPC connection this old, so agents rebalance over the servers (0 = never)",
        name="grpc-max-connection-age-duration",
        parse=duration,
    )
    max_connection_age_grace: float = flag(
        GO_CONNECTION_LIMIT,
        "after the maximum age, time in-flight RPCs get before the connection is cut "
        "(0 = unbounded)",
        name="grpc-max-connection-age-grace-duration",
        parse=duration,
    )

    def __post_init__(self) -> None:
        if not self.role_base_arn and not self.role_base_arn_autodetect:
            raise SettingsError(
                "role-base-arn not specified and not auto-detected: "
                "use --role-base-arn or --role-base-arn-autodetect"
            )
        if not self.token_audience.strip():
            raise SettingsError("--token-audience must not be empty")
        if self.session_duration < MIN_SESSION_DURATION:
            raise SettingsError("--session-duration must be at least 15m (the STS minimum)")
        if not 0 <= self.session_refresh < self.session_duration:
            raise SettingsError("--session-refresh must be shorter than --session-duration")


_SERVING_ONLY = (
    "tls",
    "keepalive",
    "bind",
    "prometheus_listen_addr",
    "sync",
    "fetchers",
    "prefetch_buffer_size",
    "max_connection_idle",
    "max_connection_age",
    "max_connection_age_grace",
)
"""Server fields that only matter to a serving process; ``kiam explain`` accepts their
flags (so the server's arguments can be pasted) and ignores them."""

_UNUSED_TLS = TLSSettings(cert="", key="", ca="")


@dataclass(frozen=True, kw_only=True)
class ExplainSettings:
    """``kiam explain``: the server's flags that decide a pod's credentials, and what to ask."""

    IGNORED_FLAGS: ClassVar[tuple[Ignored, ...]] = tuple(
        Ignored(name=name, reason="a serving flag of kiam server; kiam explain serves nothing",
                hidden=True)
        for name in (
            "cert", "key", "ca", "bind", "prometheus-listen-addr", "sync", "fetchers",
            "prefetch-buffer-size", "grpc-keepalive-time-duration", "grpc-keepalive-time-ms",
            "grpc-keepalive-timeout-duration", "grpc-keepalive-timeout-ms",
            "grpc-max-connection-idle-duration", "grpc-max-connection-age-duration",
            "grpc-max-connection-age-grace-duration",
        )
    )

    server: ServerSettings = field(
        metadata=nested(omit=_SERVING_ONLY, fill={"tls": _UNUSED_TLS})
    )
    pod: str = flag("", "the pod to explain, as NAMESPACE/POD", positional=True,
                    metavar="NAMESPACE/POD")
    ip: str = flag("", "explain the pod that owns this IP instead (as the agent asks)")
    assume: bool = flag(
        False, "also call STS AssumeRole for the pod's role with the server's STS settings"
    )
    output: str = flag("text", "output format", choices=("text", "json"))

    def __post_init__(self) -> None:
        if bool(self.pod) == bool(self.ip):
            raise SettingsError("give either NAMESPACE/POD or --ip IP (exactly one)")
        if self.pod:
            namespace, _, name = self.pod.partition("/")
            if not namespace or not name or "/" in name:
                raise SettingsError(f"{self.pod!r}: expected NAMESPACE/POD")
