"""What Go Kiam's command lines look like, written down from uswitch/kiam (not its code).

:data:`GO_FLAGS`: every flag of the ``agent``, ``server`` and ``health`` commands of every
Go Kiam release that had them (v2.0-rc1 to v4.2 and master; v2.x shipped them as the
binaries ``/agent``, ``/server`` and ``/health``, v3.0 on as ``/kiam agent|server|health``),
each with the first and the last release that accepted it. Read from ``cmd/`` at each tag.
v1.x had one process and no commands; its command lines cannot name ours
(docs/MIGRATING.md).

:data:`CHART_ARGV`: the command lines Go Kiam's Helm chart (``helm/kiam`` at master,
chart 6.x, app v4.x) renders, and those of its plain manifests (``deploy/``), for the
server container, its two exec probes and the agent container. Written down from the
templates with the values of each case; the paths, ports and addresses are the chart's,
which a test swaps for its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

HEAD: Final = "master"

_COMMON: Final = {
    "cert": ("v2.0-rc1", HEAD),
    "key": ("v2.0-rc1", HEAD),
    "ca": ("v2.0-rc1", HEAD),
    "json-log": ("v2.0-rc1", HEAD),
    "level": ("v2.0-rc1", HEAD),
}
_CLIENT: Final = {
    "server-address": ("v2.0-rc1", HEAD),
    "server-address-refresh": ("v2.1", HEAD),
    "gateway-timeout-creation": ("v2.8", HEAD),
    "grpc-keepalive-time-ms": ("v3.5", "v3.6"),
    "grpc-keepalive-timeout-ms": ("v3.5", "v3.6"),
    "grpc-keepalive-permit-without-stream": ("v3.5", HEAD),
    "grpc-keepalive-time-duration": ("v4.0-beta1", HEAD),
    "grpc-keepalive-timeout-duration": ("v4.0-beta1", HEAD),
}
_TELEMETRY: Final = {
    "statsd": ("v2.0-rc1", "v3.6"),
    "statsd-interval": ("v2.0-rc1", "v3.6"),
    "statsd-prefix": ("v3.0-rc1", "v3.6"),
    "prometheus-listen-addr": ("v2.5", HEAD),
    "prometheus-sync-interval": ("v2.5", HEAD),
    "pprof-listen-addr": ("v3.0", HEAD),
}

GO_FLAGS: Final[Mapping[str, Mapping[str, tuple[str, str]]]] = {
    "agent": {
        **_COMMON,
        **_CLIENT,
        **_TELEMETRY,
        "port": ("v2.0-rc1", HEAD),
        "allow-ip-query": ("v2.0-rc1", HEAD),
        "whitelist-route-regexp": ("v3.0-rc2", "v3.6"),
        "allow-route-regexp": ("v4.0-beta1", HEAD),
        "iptables": ("v2.0-rc1", HEAD),
        "iptables-remove": ("v3.3", HEAD),
        "host": ("v2.0-rc1", HEAD),
        "host-interface": ("v2.0-rc1", HEAD),
    },
    "server": {
        **_COMMON,
        **_TELEMETRY,
        "fetchers": ("v2.0-rc1", HEAD),
        "prefetch-buffer-size": ("v2.0-rc2", HEAD),
        "bind": ("v2.0-rc1", HEAD),
        "kubeconfig": ("v2.0-rc1", HEAD),
        "sync": ("v2.0-rc1", HEAD),
        "role-base-arn": ("v2.0-rc1", HEAD),
        "role-base-arn-autodetect": ("v2.4", HEAD),
        "disable-strict-namespace-regexp": ("v4.0-beta1", HEAD),
        "session": ("v2.0-rc1", HEAD),
        "session-duration": ("v2.7", HEAD),
        "session-refresh": ("v3.0-rc1", HEAD),
        "assume-role-arn": ("v2.6", HEAD),
        "region": ("v3.2", HEAD),
        "grpc-keepalive-time-duration": ("v4.0-beta1", HEAD),
        "grpc-keepalive-timeout-duration": ("v4.0-beta1", HEAD),
        "grpc-max-connection-idle-duration": ("v4.0-beta1", HEAD),
        "grpc-max-connection-age-duration": ("v4.0-beta1", HEAD),
        "grpc-max-connection-age-grace-duration": ("v4.0-beta1", HEAD),
    },
    "health": {
        **_COMMON,
        **_CLIENT,
        "timeout": ("v2.0-rc1", HEAD),
    },
}

GO_BOOLEANS: Final = frozenset(
    {
        "json-log",
        "allow-ip-query",
        "iptables",
        "iptables-remove",
        "grpc-keepalive-permit-without-stream",
        "role-base-arn-autodetect",
        "disable-strict-namespace-regexp",
    }
)
"""Kingpin's boolean flags: ``--NAME`` and ``--no-NAME``, no value."""


# ---------------------------------------------------------------- the chart's command lines

# Placeholders a test replaces: the chart's TLS paths, ports and addresses.
TLS: Final = ("--cert=/etc/kiam/tls/cert", "--key=/etc/kiam/tls/key", "--ca=/etc/kiam/tls/ca")
DEPLOY_SERVER_TLS: Final = (
    "--cert=/etc/kiam/tls/server.pem",
    "--key=/etc/kiam/tls/server-key.pem",
    "--ca=/etc/kiam/tls/ca.pem",
)
DEPLOY_AGENT_TLS: Final = (
    "--cert=/etc/kiam/tls/agent.pem",
    "--key=/etc/kiam/tls/agent-key.pem",
    "--ca=/etc/kiam/tls/ca.pem",
)


def _probe(tls: tuple[str, ...], *, refresh: bool, gateway: str) -> tuple[str, ...]:
    # the chart's liveness and readiness probes are the same command line
    return (
        "/kiam",
        "health",
        *tls,
        "--server-address=127.0.0.1:443",
        *(("--server-address-refresh=2s",) if refresh else ()),
        "--timeout=5s",
        f"--gateway-timeout-creation={gateway}",
    )


CHART_ARGV: Final[Mapping[str, Mapping[str, tuple[str, ...]]]] = {
    # helm template kiam helm/kiam (values.yaml): autodetected base ARN, no iptables
    "chart defaults": {
        "server": (
            "/kiam",
            "server",
            "--json-log",
            "--level=info",
            "--bind=0.0.0.0:443",
            *TLS,
            "--role-base-arn-autodetect",
            "--session-duration=15m",
            "--sync=1m",
            "--prometheus-listen-addr=0.0.0.0:9620",
            "--prometheus-sync-interval=5s",
        ),
        "probe": _probe(TLS, refresh=True, gateway="1s"),
        "agent": (
            "/kiam",
            "agent",
            "--no-iptables-remove",
            "--host-interface=cali+",
            "--json-log",
            "--level=info",
            "--port=8181",
            *TLS,
            "--server-address=kiam-server:443",
            "--prometheus-listen-addr=0.0.0.0:9620",
            "--prometheus-sync-interval=5s",
            "--gateway-timeout-creation=1s",
        ),
    },
    # helm template kiam helm/kiam -f helm/kiam/ci/test-values.yaml
    "chart ci/test-values.yaml": {
        "server": (
            "/kiam",
            "server",
            "--json-log",
            "--level=info",
            "--bind=0.0.0.0:443",
            *TLS,
            "--role-base-arn=arn:aws:iam::0123456789:role/",
            "--session-duration=15m",
            "--sync=1m",
            "--prometheus-listen-addr=0.0.0.0:9620",
            "--prometheus-sync-interval=5s",
        ),
        "probe": _probe(TLS, refresh=True, gateway="60s"),
        "agent": (
            "/kiam",
            "agent",
            "--no-iptables-remove",
            "--host-interface=cali+",
            "--json-log",
            "--level=info",
            "--port=8181",
            *TLS,
            "--server-address=kiam-server:443",
            "--prometheus-listen-addr=0.0.0.0:9620",
            "--prometheus-sync-interval=5s",
            "--gateway-timeout-creation=60s",
        ),
    },
    # every value the templates test set: roleBaseArn, assumeRoleArn, keepaliveParams.*
    # (agent: time, timeout, PermitWithoutStream), disableStrictNamespaceRegexp,
    # allowRouteRegexp, host.iptables with iptablesRemoveOnShutdown, log.level debug,
    # and extraArgs {region: us-east-1, session: fleet}
    "chart every option on": {
        "server": (
            "/kiam",
            "server",
            "--json-log",
            "--level=debug",
            "--bind=0.0.0.0:443",
            *TLS,
            "--role-base-arn=arn:aws:iam::123456789012:role/",
            "--assume-role-arn=arn:aws:iam::123456789012:role/kiam-server",
            "--session-duration=30m",
            "--sync=1m",
            "--prometheus-listen-addr=0.0.0.0:9620",
            "--prometheus-sync-interval=5s",
            "--grpc-keepalive-time-duration=10s",
            "--grpc-keepalive-timeout-duration=2s",
            "--grpc-max-connection-idle-duration=5m",
            "--grpc-max-connection-age-duration=10m",
            "--grpc-max-connection-age-grace-duration=30s",
            "--disable-strict-namespace-regexp",
            "--region=us-east-1",
            "--session=fleet",
        ),
        "probe": _probe(TLS, refresh=True, gateway="1s"),
        "agent": (
            "/kiam",
            "agent",
            "--iptables",
            "--host-interface=cali+",
            "--json-log",
            "--level=debug",
            "--port=8181",
            *TLS,
            "--server-address=kiam-server:443",
            "--prometheus-listen-addr=0.0.0.0:9620",
            "--prometheus-sync-interval=5s",
            "--allow-route-regexp=^/latest/meta-data/placement/availability-zone$",
            "--gateway-timeout-creation=1s",
            "--grpc-keepalive-time-duration=10s",
            "--grpc-keepalive-timeout-duration=2s",
            "--grpc-keepalive-permit-without-stream",
        ),
    },
    # deploy/server.deployment.yaml and deploy/agent.yaml: command [/kiam], args [server, ...]
    "deploy manifests": {
        "server": (
            "/kiam",
            "server",
            "--json-log",
            "--level=warn",
            "--bind=0.0.0.0:443",
            *DEPLOY_SERVER_TLS,
            "--role-base-arn-autodetect",
            "--sync=1m",
            "--prometheus-listen-addr=0.0.0.0:9620",
            "--prometheus-sync-interval=5s",
        ),
        "probe": _probe(DEPLOY_SERVER_TLS, refresh=False, gateway="1s"),
        "agent": (
            "/kiam",
            "agent",
            "--iptables",
            "--host-interface=cali+",
            "--json-log",
            "--port=8181",
            *DEPLOY_AGENT_TLS,
            "--server-address=kiam-server:443",
            "--prometheus-listen-addr=0.0.0.0:9620",
            "--prometheus-sync-interval=5s",
            "--gateway-timeout-creation=1s",
        ),
    },
}
