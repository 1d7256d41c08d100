"""``/metrics`` for Prometheus on ``--prometheus-listen-addr``.

:func:`start_metrics` binds the port at start-up, so a bad address or a taken port is a
:class:`MetricsError` (one line for the operator, exit 1) before anything is served,
not a traceback from a task that dies later. The returned runner serves on its own;
``await runner.cleanup()`` stops it. :func:`serve_metrics` does both as one supervised
task, for callers that have no start-up phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from kiam.common.net import join_host_port, split_host_port

log = logging.getLogger(__name__)


class MetricsError(Exception):
    """``--prometheus-listen-addr`` cannot be served (bad address, port taken); the
    message is the one line the operator sees."""


def metrics_app(registry: CollectorRegistry = REGISTRY) -> web.Application:
    async def handle(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app


async def start_metrics(listen_addr: str, registry: CollectorRegistry = REGISTRY) -> web.AppRunner:
    """Listen on ``listen_addr`` and serve ``/metrics`` until ``runner.cleanup()``.

    Raises :class:`MetricsError` when the address is invalid or cannot be listened on.
    """
    try:
        host, port = split_host_port(listen_addr)
    except ValueError as exc:
        raise MetricsError(f"--prometheus-listen-addr: {exc}") from None
    runner = web.AppRunner(metrics_app(registry), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host or None, port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reason = exc.strerror or str(exc)
        raise MetricsError(f"cannot listen on {listen_addr} for /metrics: {reason}") from None
    # the bound address, so ":0" (tests) tells which port it got
    bound = ", ".join(join_host_port(a[0], a[1]) for a in runner.addresses)
    log.info("serving metrics on %s", bound, extra={"fields": {"address": bound}})
    return runner


async def serve_metrics(listen_addr: str, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve until cancelled; cleanup is shielded so cancellation cannot skip it."""
    runner = await start_metrics(listen_addr, registry)
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(runner.cleanup())
