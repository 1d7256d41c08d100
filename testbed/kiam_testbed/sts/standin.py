"""The STS stand-in: moto in server mode behind a small fault-injecting HTTP proxy.

::

    async with StsStandIn() as sts:
        settings = ServerSettings(..., sts_endpoint=sts.url)
        sts.queue_fault("throttling", count=2, role_arn=arn)
        ...
        assert sts.assume_role_calls(arn) == 3

The proxy forwards every request to moto unchanged, the ``Host`` header included: botocore
signs it (SigV4), and moto reads the service name from the signature's credential scope.
moto does not verify signatures, enforces no trust policy or ExternalId, and its
``AssumeRole`` works for any role ARN without creating the role first (the account of the
issued credentials is the one in the ARN), so tests need no IAM set-up.

For a stand-in running in another process (:mod:`kiam_testbed.standins`), the same
controls are served under ``/_standin/``: ``POST /_standin/faults`` with a JSON
``{"kind", "count", "role_arn", "delay"}``, ``GET /_standin/calls``, ``POST /_standin/reset``,
``POST /_standin/rate-limit`` with ``{"rate", "burst"}``.

Rate-limit mode (``rate_limit=N, burst=B``; ``--sts-rate-limit``/``--sts-burst``): at
most N AssumeRole calls per second per account (the account in the role ARN) with a burst
of B, as STS's own token bucket; beyond it the call is answered with STS's ``Throttling``
document (HTTP 400, the shape botocore parses), recorded with ``rate_limited`` set and
never reaching moto or the fault queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from kiam.common.net import join_host_port, split_host_port
from kiam_testbed.sts.faults import (
    ERRORS,
    AccountRateLimit,
    AssumeRoleRequest,
    Fault,
    FaultKind,
    FaultQueue,
    account_of,
    error_response,
    parse_action,
    parse_assume_role,
)

log = logging.getLogger(__name__)

# Headers that describe one hop, not the message; never forwarded either way.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",  # recomputed for the body we send
    }
)


class StsStandInError(Exception):
    """The stand-in could not start (moto or the proxy)."""


@dataclass(frozen=True, kw_only=True)
class AssumeRoleCall:
    """One AssumeRole call as the stand-in saw it."""

    role_arn: str
    session_name: str
    external_id: str | None
    duration_seconds: int | None
    fault: FaultKind | None
    """What was injected (None: forwarded untouched)."""
    status: int | None
    """HTTP status the client got; None while in flight or when the connection was cut."""
    rate_limited: bool = False
    """Throttled by the rate-limit mode (``fault`` is then THROTTLING)."""

    @property
    def successful(self) -> bool:
        return self.status == 200

    @property
    def faulted(self) -> bool:
        """An injected failure (a DELAY fault alone still reaches moto)."""
        return self.fault is not None and self.fault is not FaultKind.DELAY


@dataclass(kw_only=True)
class _Record:
    request: AssumeRoleRequest
    fault: FaultKind | None
    status: int | None = None
    rate_limited: bool = False

    def frozen(self) -> AssumeRoleCall:
        return AssumeRoleCall(**asdict(self.request), fault=self.fault, status=self.status,
                              rate_limited=self.rate_limited)


class StsStandIn:
    """moto's STS on 127.0.0.1 behind a fault-injecting proxy; ``url`` is the proxy."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, rate_limit: float = 0.0, burst: int = 0
    ) -> None:
        self._host = host
        self._port = port
        self._faults = FaultQueue()
        self._limit = AccountRateLimit(rate=rate_limit, burst=burst)
        self._records: list[_Record] = []
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._moto: Any = None
        self._moto_url = ""
        self._url = ""
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._start_moto)
        except OSError as exc:
            raise StsStandInError(f"cannot start moto: {exc}") from exc
        # Raw bytes both ways: no decompression, no headers of our own.
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        app = web.Application()
        app.router.add_post("/_standin/faults", self._control_fault)
        app.router.add_get("/_standin/calls", self._control_calls)
        app.router.add_post("/_standin/reset", self._control_reset)
        app.router.add_post("/_standin/rate-limit", self._control_rate_limit)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise StsStandInError(f"cannot listen on {self._host}:{self._port}: {exc}") from exc
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{join_host_port(host, port)}"

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self._moto_url = f"http://{join_host_port(host, port)}"

    async def stop(self) -> None:
        """Stop answering; held connections (TIMEOUT faults) are cut first."""
        self._closing.set()
        try:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            if self._session is not None:
                await self._session.close()
                self._session = None
        finally:
            if self._moto is not None:
                moto, self._moto = self._moto, None
                await _stop_moto(moto, self._moto_url)

    @property
    def url(self) -> str:
        """The proxy's URL: what ``--sts-endpoint`` gets."""
        if not self._url:
            raise StsStandInError("the STS stand-in is not running")
        return self._url

    @property
    def moto_url(self) -> str:
        """moto itself, bypassing fault injection and counting."""
        return self._moto_url

    # ------------------------------------------------------------ controls

    def queue_fault(
        self,
        kind: FaultKind | str,
        *,
        count: int = 1,
        role_arn: str | None = None,
        delay: float | None = None,
    ) -> None:
        """Apply ``kind`` to the next ``count`` AssumeRole calls (for ``role_arn`` only, if
        given). Faults queued earlier are used up first."""
        self._faults.add(Fault(kind=FaultKind(kind), count=count, role_arn=role_arn, delay=delay))

    def set_rate_limit(self, rate: float, *, burst: int = 0) -> None:
        """Rate-limit mode: ``rate`` AssumeRole calls/s per account, ``burst`` at once
        (default: one second's worth); 0 turns it off. Buckets start full."""
        self._limit = AccountRateLimit(rate=rate, burst=burst)

    def pending_faults(self) -> int:
        return self._faults.pending()

    @property
    def calls(self) -> tuple[AssumeRoleCall, ...]:
        """Every AssumeRole call since the start (or the last reset), oldest first."""
        return tuple(record.frozen() for record in self._records)

    def _select(self, role_arn: str | None) -> Iterable[AssumeRoleCall]:
        return (c for c in self.calls if role_arn is None or c.role_arn == role_arn)

    def assume_role_calls(self, role_arn: str | None = None) -> int:
        """AssumeRole calls that arrived (faulted, in flight and successful alike)."""
        return sum(1 for _ in self._select(role_arn))

    def successful_assume_role_calls(self, role_arn: str | None = None) -> int:
        """AssumeRole calls moto answered with credentials."""
        return sum(1 for c in self._select(role_arn) if c.successful)

    def faulted_assume_role_calls(self, role_arn: str | None = None) -> int:
        """AssumeRole calls that got an injected failure instead of credentials."""
        return sum(1 for c in self._select(role_arn) if c.faulted)

    def rate_limited_assume_role_calls(self, role_arn: str | None = None) -> int:
        """AssumeRole calls the rate-limit mode answered with Throttling."""
        return sum(1 for c in self._select(role_arn) if c.rate_limited)

    async def wait_for_calls(self, count: int, *, role_arn: str | None = None) -> None:
        """Return once at least ``count`` AssumeRole calls (for ``role_arn``) have arrived.

        Event-driven, so a test can act while a call is in flight; bound it with
        ``asyncio.timeout``.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: self.assume_role_calls(role_arn) >= count)

    def reset(self) -> None:
        """Forget recorded calls and pending faults (moto's own state is kept)."""
        self._records.clear()
        self._faults.clear()

    # ------------------------------------------------------------ proxy

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action, params = parse_action(body, request.query_string)
        if action != "AssumeRole":
            return await self._forward(request, body)
        call = parse_assume_role(params)
        if not self._limit.admit(account_of(call.role_arn), now=time.monotonic()):
            record = _Record(request=call, fault=FaultKind.THROTTLING, rate_limited=True)
            fault: Fault | None = Fault(kind=FaultKind.THROTTLING)
        else:
            fault = self._faults.take(call.role_arn)
            record = _Record(request=call, fault=fault.kind if fault else None)
        self._records.append(record)
        async with self._changed:
            self._changed.notify_all()
        response = await self._answer(request, body, call, fault)
        record.status = response.status if response is not None else None
        return response if response is not None else web.Response()

    async def _answer(
        self,
        request: web.Request,
        body: bytes,
        call: AssumeRoleRequest,
        fault: Fault | None,
    ) -> web.Response | None:
        """The response for an AssumeRole call, or None when the connection was cut."""
        if fault is None:
            return await self._forward(request, body)
        log.info("injecting %s for %s", fault.kind, call.role_arn)
        if fault.kind is FaultKind.TIMEOUT:
            await self._pause(fault.delay)
            _cut(request)
            return None
        if fault.delay is not None and not await self._pause(fault.delay):
            _cut(request)  # the stand-in is stopping
            return None
        if fault.kind is FaultKind.RESET:
            _cut(request)
            return None
        if fault.kind in ERRORS:
            status, document = error_response(fault.kind, role_arn=call.role_arn)
            return web.Response(status=status, body=document, content_type="text/xml")
        return await self._forward(request, body)  # DELAY

    async def _pause(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: forever); False when the stand-in stops first."""
        try:
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        except TimeoutError:
            return True
        return False

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        # Keep Host as the client sent it: it is part of what botocore signed.
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP
        )
        try:
            async with self._session.request(
                request.method,
                self._moto_url + request.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream:
                data = await upstream.read()
                status = upstream.status
                back = CIMultiDict(
                    (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
                )
        except aiohttp.ClientError as exc:
            return web.Response(status=502, text=f"moto unreachable: {exc}\n")
        return web.Response(status=status, body=data, headers=back)

    # ------------------------------------------------------------ control API

    async def _control_fault(self, request: web.Request) -> web.Response:
        try:
            doc = await request.json()
            if not isinstance(doc, dict) or "kind" not in doc:
                raise ValueError('expected a JSON object with "kind"')
            if doc["kind"] not in set(FaultKind):
                raise ValueError(f"unknown fault kind {doc['kind']!r}; known: "
                                 + ", ".join(FaultKind))
            self.queue_fault(
                str(doc["kind"]),
                count=int(doc.get("count", 1)),
                role_arn=doc.get("role_arn"),
                delay=None if doc.get("delay") is None else float(doc["delay"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"pending": self.pending_faults()})

    async def _control_rate_limit(self, request: web.Request) -> web.Response:
        try:
            doc = await request.json()
            self.set_rate_limit(float(doc.get("rate", 0)), burst=int(doc.get("burst", 0)))
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({})

    async def _control_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": [asdict(c) for c in self.calls]})

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({})


async def _stop_moto(moto: Any, url: str) -> None:
    """Stop moto's server thread without waiting out its 0.5 s poll interval.

    Its ``serve_forever`` loop checks the shutdown flag whenever its listening socket
    wakes it, so knock until the thread has gone.
    """
    host, port = split_host_port(url.removeprefix("http://"))
    stopping = asyncio.create_task(asyncio.to_thread(moto.stop), name="sts-standin-moto-stop")
    while not stopping.done():
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            await writer.wait_closed()
        await asyncio.wait({stopping}, timeout=0.02)
    await stopping


def _cut(request: web.Request) -> None:
    """Reset the client's connection: SO_LINGER 0 turns the close into a TCP RST."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
