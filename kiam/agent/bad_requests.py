"""Requests the HTTP parser refuses: 400 with one line, counted, logged quietly.

aiohttp answers a request it cannot parse (a request target with bytes HTTP forbids, an
over-long request line or header, a malformed header) inside its protocol handler,
before any route sees it, and logs each one at error level with a traceback. Any pod can
send such requests as fast as it likes, so on the agent that log line is a way to bury
real errors and fill the node's disk. Here instead (docs/architecture.md, "Malformed
requests"):

- the answer is 400 with a one-line reason and the connection is closed, as before;
- each is counted in ``kiam_metadata_bad_requests_total``;
- at most one warning line per caller address per :data:`WARN_INTERVAL`, without a
  traceback (:class:`WarnLimiter`, pure).

Why by hand: aiohttp has no public hook for this path (``RequestHandler.handle_error``
is called before middlewares), so :class:`MetadataRunner` gives its server a
``RequestHandler`` subclass. Any other error keeps aiohttp's own handling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from kiam.agent import metrics

log = logging.getLogger("kiam.agent")

WARN_INTERVAL = 60.0
"""Seconds between two warnings about one caller's malformed requests."""
MAX_LINE = 8190
"""Longest request line or header line (bytes), aiohttp's default, as the README states."""
IDLE_TIMEOUT = 75.0
"""Seconds an idle keep-alive connection is kept open (aiohttp's default is an hour)."""
FIRST_REQUEST_TIMEOUT = 10.0
"""Seconds a new connection has to deliver its first request's headers (aiohttp has no
such limit, so a pod could hold connections open for ever by sending nothing)."""


class WarnLimiter:
    """One warning per key per ``interval``; remembers at most ``capacity`` keys."""

    def __init__(self, *, interval: float = WARN_INTERVAL, capacity: int = 4096) -> None:
        self.interval = interval
        self.capacity = capacity
        self._last: OrderedDict[str, float] = OrderedDict()

    def should_warn(self, key: str, *, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)  # the key warned about longest ago
        return True


def one_line(message: str) -> str:
    """aiohttp's parser messages can span lines (a pointer under the bad byte): keep one."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return first.rstrip(":").strip() or "malformed HTTP request"


class _QuietRequestHandler(RequestHandler):
    limiter: WarnLimiter

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        loop.call_later(FIRST_REQUEST_TIMEOUT, self._close_if_silent, transport)

    def _close_if_silent(self, transport: asyncio.BaseTransport) -> None:
        # no request parsed yet: a slow or silent client; later requests on a kept-alive
        # connection are bounded by keepalive_timeout
        if self._request_count == 0 and not transport.is_closing():
            transport.close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        reason = one_line(exc.message if isinstance(exc.message, str) else str(exc))
        metrics.bad_requests.inc()
        caller = request.remote or "unknown"
        if self.limiter.should_warn(caller, now=time.monotonic()):
            fields = {"caller": caller, "reason": reason}
            log.warning("malformed request refused (400)", extra={"fields": fields})
        response = web.Response(status=400, text=f"bad request: {reason}\n")
        response.force_close()
        return response


class _QuietServer(web.Server):
    limiter: WarnLimiter

    def __call__(self) -> RequestHandler:
        handler = _QuietRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.limiter = self.limiter
        return handler


class MetadataRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer parser errors as the module says."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", IDLE_TIMEOUT)
        kwargs.setdefault("max_line_size", MAX_LINE)
        kwargs.setdefault("max_field_size", MAX_LINE)
        super().__init__(app, **kwargs)
        self.limiter = WarnLimiter()

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # same object, same settings: only the connection handler class changes
        server.__class__ = _QuietServer
        assert isinstance(server, _QuietServer)
        server.limiter = self.limiter
        return server
