"""``kiam health``: probe kiam servers over mTLS; exit 0 when one answers GetHealth.

As in Go Kiam the probe retries every 100 ms until ``--timeout`` runs out, so a server
that is still starting does not fail a liveness probe at once. Several servers may be
named (comma-separated); each round tries them in turn and the first answer wins.
Addresses, channels and keepalive are the agent's (:mod:`kiam.wire.client`): a name
without a port gets 9610, and a DNS name is dialled as ``dns:///name:port``.

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
from kiam.wire.client import describe, grpc_targets, secure_channel

log = logging.getLogger(__name__)

RETRY_INTERVAL = 0.1
"""Seconds between rounds, as in Go Kiam's health command."""


class HealthCheckError(Exception):
    """No server answered before the deadline; the message says why (from the last try)."""


@dataclass(frozen=True, kw_only=True)
class Healthy:
    address: str
    message: str


async def probe(settings: HealthSettings) -> Healthy:
    """Call GetHealth until a server answers or ``settings.timeout`` passes.

    Raises :class:`HealthCheckError` (with the last failure) or :class:`TLSError`.
    """
    try:
        targets = grpc_targets(settings.server_address)
    except ValueError as exc:
        raise HealthCheckError(f"--server-address: {exc}") from None
    credentials = await asyncio.to_thread(channel_credentials, settings.tls)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.timeout
    channels = {
        target: secure_channel(target, credentials=credentials, keepalive=settings.keepalive)
        for target in targets
    }
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
                    last = describe(address, exc)
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
