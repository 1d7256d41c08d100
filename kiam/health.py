"""``kiam health``: probe kiam servers over mTLS; exit 0 when one answers GetHealth.

As in Go Kiam the probe retries every 100 ms until ``--timeout`` runs out, so a server
that is still starting does not fail a liveness probe at once. Several servers may be
named (comma-separated); each round tries them in turn and the first answer wins.

Prints ``healthy: <message>`` (stdout, exit 0) or the reason for the last failure
(stderr, exit 1): unreachable, TLS refused, timed out, or the server's own status.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass

import grpc

from kiam.common.logs import configure
from kiam.common.settings import HealthSettings
from kiam.common.tls import TLSError, channel_credentials
from kiam.wire import kiam_pb2, kiam_pb2_grpc

log = logging.getLogger(__name__)

RETRY_INTERVAL = 0.1
"""Seconds between rounds, as in Go Kiam's health command."""


class HealthCheckError(Exception):
    """No server answered before the deadline; the message says why (from the last try)."""


@dataclass(frozen=True, kw_only=True)
class Healthy:
    address: str
    message: str


def server_addresses(text: str) -> list[str]:
    """The ``host:port`` targets in ``--server-address`` (comma-separated, blanks dropped)."""
    addresses = [part.strip() for part in text.split(",") if part.strip()]
    if not addresses:
        raise HealthCheckError("no server address given")
    return addresses


def describe_rpc_error(address: str, error: grpc.aio.AioRpcError) -> str:
    """A reason a person can act on, from a gRPC failure."""
    code = error.code()
    details = error.details() or ""
    lowered = details.lower()
    if code is grpc.StatusCode.UNAVAILABLE:
        if any(word in lowered for word in ("ssl", "tls", "handshake", "certificate")):
            reason = "TLS refused"
        elif "socket closed" in lowered:
            # what a client sees when the server rejects its certificate
            reason = "connection closed during the handshake (certificate not accepted?)"
        elif "failed to connect" in lowered or "connection refused" in lowered:
            reason = "unreachable"
        else:
            reason = "server unavailable"
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        reason = "timed out"
    else:
        reason = f"server answered {code.name}"
    return f"{address}: {reason}: {details}" if details else f"{address}: {reason}"


async def probe(settings: HealthSettings) -> Healthy:
    """Call GetHealth until a server answers or ``settings.timeout`` passes.

    Raises :class:`HealthCheckError` (with the last failure) or :class:`TLSError`.
    """
    addresses = server_addresses(settings.server_address)
    credentials = channel_credentials(settings.tls)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.timeout
    channels = {address: grpc.aio.secure_channel(address, credentials) for address in addresses}
    last = "no attempt finished before the deadline"
    try:
        while True:
            for address, channel in channels.items():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise HealthCheckError(
                        f"no healthy server within {settings.timeout:g}s; last error: {last}"
                    )
                # One attempt may not eat the whole deadline: other servers deserve a try.
                attempt = min(remaining, max(settings.gateway_timeout_creation, RETRY_INTERVAL))
                stub = kiam_pb2_grpc.KiamServiceStub(channel)
                try:
                    status = await stub.GetHealth(kiam_pb2.GetHealthRequest(), timeout=attempt)
                except grpc.aio.AioRpcError as exc:
                    last = describe_rpc_error(address, exc)
                    log.debug("health probe failed: %s", last)
                    continue
                return Healthy(address=address, message=status.message)
            pause = min(RETRY_INTERVAL, deadline - loop.time())
            if pause > 0:
                await asyncio.sleep(pause)
    finally:
        await asyncio.gather(*(channel.close(None) for channel in channels.values()))


def run_health(settings: HealthSettings) -> int:
    """``kiam health``: 0 and ``healthy: <message>`` when a server answers, else 1."""
    configure(json_log=settings.log.json_log, level=settings.log.level)
    try:
        healthy = asyncio.run(probe(settings))
    except (HealthCheckError, TLSError) as exc:
        print(f"kiam health: unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"healthy: {healthy.message}")
    return 0
