"""The client side of ``kiam.KiamService``, shared by ``kiam agent`` and ``kiam health``.

``--server-address`` may name one ``host:port``, a DNS name with several addresses, or a
comma-separated list of either; a missing port is :data:`DEFAULT_PORT`. Every entry gets
one channel: an IP literal is dialled as is; a DNS name goes through ``dns:///host:port``
with the ``round_robin`` policy, so grpc spreads calls over every address behind the
name and re-resolves when they change. TLS verifies the name we dial (the server
certificate carries ``kiam-server...``, ``localhost``, ``127.0.0.1`` and ``::1``), so no
target-name override is needed; the channel credentials are
:func:`kiam.common.tls.channel_credentials`.

What a status means, and the label metrics count it under, is :mod:`kiam.wire.status`;
:func:`describe` words a failure for a person (the ``kiam health`` output).
"""

from __future__ import annotations

import ipaddress

import grpc
from grpc import aio

from kiam.common.net import join_host_port, split_host_port
from kiam.common.settings import KeepaliveSettings
from kiam.wire import status

DEFAULT_PORT = 9610
SERVICE = "kiam.KiamService"
"""The ``grpc_service`` metric label."""
TOKEN_SERVICE = "kiam.KiamTokenService"
"""The label of the token credentials RPC (docs/token-credentials.md)."""


def grpc_targets(server_address: str) -> list[str]:
    """The grpc target of every comma-separated entry; ValueError with the reason."""
    targets: list[str] = []
    for entry in server_address.split(","):
        if not entry.strip():
            continue
        host, port = split_host_port(entry, default_port=DEFAULT_PORT)
        host = host or "localhost"
        try:
            ipaddress.ip_address(host)
        except ValueError:
            targets.append(f"dns:///{join_host_port(host, port)}")
        else:
            targets.append(join_host_port(host, port))
    if not targets:
        raise ValueError(f"no server address in {server_address!r}")
    return targets


def channel_options(keepalive: KeepaliveSettings) -> list[tuple[str, int | str]]:
    return [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.keepalive_time_ms", int(keepalive.time * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive.timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", int(keepalive.permit_without_stream)),
        ("grpc.http2.max_pings_without_data", 0),
        # reconnect quickly after a server restarts: pods wait at most a second
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


def secure_channel(
    target: str, *, credentials: grpc.ChannelCredentials, keepalive: KeepaliveSettings
) -> aio.Channel:
    """The one way either command opens a channel to a kiam server."""
    return aio.secure_channel(target, credentials, options=channel_options(keepalive))


def describe(target: str, error: aio.AioRpcError) -> str:
    """``target: reason: details``, the reason one a person can act on."""
    code = error.code()
    details = " ".join((error.details() or "").split())
    lowered = details.lower()
    answer = status.classify(error)
    if answer is status.UNAVAILABLE:
        tls_words = ("ssl", "tls", "handshake", "certificate", "hostname verification")
        if any(word in lowered for word in tls_words):
            reason = "TLS refused"
        elif "socket closed" in lowered:
            # what a client sees when the server rejects its certificate
            reason = "connection closed during the handshake (certificate not accepted?)"
        elif "failed to connect" in lowered or "connection refused" in lowered:
            reason = "unreachable"
        else:
            reason = "server unavailable"
    elif answer is status.DEADLINE_EXCEEDED:
        reason = "timed out"
    else:
        reason = f"server answered {code.name}"
    return f"{target}: {reason}: {details}" if details else f"{target}: {reason}"
