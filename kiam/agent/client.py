"""gRPC client to the kiam servers, the agent's only way to reach them.

``--server-address`` may name one ``host:port``, a DNS name with several addresses, or a
comma-separated list of either. Every entry gets one channel: an IP literal is dialled
as is; a DNS name goes through ``dns:///host:port`` with the ``round_robin`` policy, so
grpc spreads calls over every address behind the name and re-resolves when they change.
TLS verifies the name we dial (the server certificate carries ``kiam-server...``,
``localhost``, ``127.0.0.1`` and ``::1``), so no target-name override is needed.

Each call has one deadline (the caller's budget). UNAVAILABLE is retried on the next
channel (with fewer than three channels, round the list again: behind a DNS name
``round_robin`` moves each retry to another address) while the budget lasts; every
other status is final, and PERMISSION_DENIED in particular is never retried. grpc
errors are translated into :mod:`kiam.agent.errors` here, using the table in
docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from grpc import aio

from kiam.agent import metrics
from kiam.agent.errors import (
    AgentError,
    AmbiguousPod,
    CredentialsFailed,
    PodNotFound,
    RoleForbidden,
    ServerFailed,
    ServerTimeout,
    ServerUnavailable,
)
from kiam.common.net import join_host_port, split_host_port
from kiam.common.settings import KeepaliveSettings
from kiam.wire import kiam_pb2, kiam_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_PORT = 9610
SERVICE = "kiam.KiamService"
# Below this much budget another attempt cannot complete; answer with what we have.
_MIN_ATTEMPT = 0.01


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


def translate(error: aio.AioRpcError, *, what: str) -> AgentError:
    """A grpc status -> the agent's exception (docs/architecture.md, status codes)."""
    code = error.code()
    detail = " ".join((error.details() or code.name).split())
    if code is grpc.StatusCode.NOT_FOUND:
        return PodNotFound(f"{what}: no pod found for this IP ({detail})")
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return AmbiguousPod(f"{what}: several pods with different roles claim this IP ({detail})")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return RoleForbidden(f"{what}: forbidden ({detail})")
    if code is grpc.StatusCode.INTERNAL:
        return CredentialsFailed(f"{what}: the kiam server could not get credentials ({detail})")
    if code is grpc.StatusCode.UNAVAILABLE:
        return ServerUnavailable(f"{what}: no kiam server available ({detail})")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServerTimeout(f"{what}: the kiam server did not answer in time")
    return ServerFailed(f"{what}: the kiam server answered {code.name} ({detail})")


class KiamClient:
    """The three RPCs of ``kiam.KiamService`` over one or several servers."""

    def __init__(
        self,
        *,
        targets: Sequence[str],
        credentials: grpc.ChannelCredentials,
        keepalive: KeepaliveSettings,
    ) -> None:
        options = channel_options(keepalive)
        self.targets = tuple(targets)
        self._channels = [aio.secure_channel(t, credentials, options=options) for t in targets]
        self._stubs = [kiam_pb2_grpc.KiamServiceStub(c) for c in self._channels]
        self._next = itertools.count()

    async def close(self) -> None:
        await asyncio.gather(*(c.close(grace=None) for c in self._channels))

    async def wait_ready(self, *, budget: float) -> bool:
        """True once any channel is connected; False when none is within ``budget``."""

        async def ready(channel: aio.Channel) -> None:
            await channel.channel_ready()

        waiters = [asyncio.create_task(ready(c)) for c in self._channels]
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=budget, return_when=asyncio.FIRST_COMPLETED
            )
            return any(not t.cancelled() and t.exception() is None for t in done)
        finally:
            for task in waiters:
                task.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def pod_role(self, ip: str, *, budget: float) -> str:
        """The role name of the pod with ``ip``; ``""`` when it has none."""
        request = kiam_pb2.GetPodRoleRequest(ip=ip)
        reply = await self._call(
            "GetPodRole", lambda stub, t: stub.GetPodRole(request, timeout=t), budget=budget
        )
        return reply.name

    async def pod_credentials(self, ip: str, role: str, *, budget: float) -> kiam_pb2.Credentials:
        request = kiam_pb2.GetPodCredentialsRequest(ip=ip, role=role)
        return await self._call(
            "GetPodCredentials",
            lambda stub, t: stub.GetPodCredentials(request, timeout=t),
            budget=budget,
        )

    async def health(self, *, budget: float) -> str:
        reply = await self._call(
            "GetHealth",
            lambda stub, t: stub.GetHealth(kiam_pb2.GetHealthRequest(), timeout=t),
            budget=budget,
        )
        return reply.message

    def _order(self) -> list[int]:
        """Channels to try, rotating the start; known-broken ones last (not skipped:
        a server that just came back is found by trying it)."""
        start = next(self._next)
        count = len(self._channels)
        rotated = [(start + i) % count for i in range(count)]
        broken = grpc.ChannelConnectivity.TRANSIENT_FAILURE
        healthy = [i for i in rotated if self._channels[i].get_state() is not broken]
        return healthy + [i for i in rotated if i not in healthy]

    async def _call(
        self,
        method: str,
        call: Callable[[kiam_pb2_grpc.KiamServiceAsyncStub, float], Awaitable[T]],
        *,
        budget: float,
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        order = self._order()
        # every channel once, and at least three tries: behind one DNS name, round_robin
        # moves each retry to another address, and a name may hide more than one dead one
        attempts = max(3, len(order))
        last: AgentError = ServerTimeout(f"{method}: no time left to ask a kiam server")
        for attempt in range(attempts):
            remaining = deadline - loop.time()
            if remaining < _MIN_ATTEMPT:
                break
            index = order[attempt % len(order)]
            metrics.grpc_client_started.labels("unary", SERVICE, method).inc()
            try:
                reply = await call(self._stubs[index], remaining)
            except aio.AioRpcError as exc:
                metrics.grpc_client_handled.labels("unary", SERVICE, method, exc.code().name).inc()
                last = translate(exc, what=method)
                if not isinstance(last, ServerUnavailable):
                    raise last from None
                log.info(
                    "%s attempt %d/%d on %s failed: %s",
                    method,
                    attempt + 1,
                    attempts,
                    self.targets[index],
                    exc.code().name,
                )
                continue
            metrics.grpc_client_handled.labels("unary", SERVICE, method, "OK").inc()
            return reply
        raise last
