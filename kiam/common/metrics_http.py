"""``/metrics`` for Prometheus on ``--prometheus-listen-addr``, as a supervised task."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from kiam.common.net import join_host_port, split_host_port

log = logging.getLogger(__name__)


def metrics_app(registry: CollectorRegistry = REGISTRY) -> web.Application:
    async def handle(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app


async def serve_metrics(listen_addr: str, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve until cancelled; cleanup is shielded so cancellation cannot skip it."""
    host, port = split_host_port(listen_addr)
    runner = web.AppRunner(metrics_app(registry), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host or None, port)
        await site.start()
        # the bound address, so ":0" (tests) tells which port it got
        bound = ", ".join(join_host_port(a[0], a[1]) for a in runner.addresses)
        log.info("serving metrics on %s", bound, extra={"fields": {"address": bound}})
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(runner.cleanup())
