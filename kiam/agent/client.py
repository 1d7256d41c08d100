"""The agent's client of the kiam servers, its only way to reach them.

Targets, channels and what each status means come from :mod:`kiam.wire.client` and
:mod:`kiam.wire.status` (shared with ``kiam health``); this module adds the agent's
retry over several servers and the translation into :mod:`kiam.agent.errors`.

Each call has one deadline (the caller's budget). UNAVAILABLE is retried on the next
channel (with fewer than three channels, round the list again: behind a DNS name
``round_robin`` moves each retry to another address) while the budget lasts; every
other status is final, and PERMISSION_DENIED in particular is never retried. A Go Kiam
server's UNKNOWN refusals are read by their message into the same rows (``forbidden by
policy`` is a 403 at once), and the pod is told the reason the server sent beside the
message, not the fixed message itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from grpc import aio

from kiam.agent import metrics
from kiam.agent.bad_requests import WarnLimiter
from kiam.agent.errors import (
    AgentError,
    AmbiguousPod,
    CredentialsFailed,
    PodNotFound,
    RequestRefused,
    RoleForbidden,
    ServerFailed,
    ServerTimeout,
    ServerUnavailable,
    TokenRefused,
)
from kiam.common.settings import KeepaliveSettings
from kiam.wire import kiam_pb2, kiam_pb2_grpc, status
from kiam.wire.client import SERVICE, TOKEN_SERVICE, describe, secure_channel

log = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S")
# Below this much budget another attempt cannot complete; answer with what we have.
_MIN_ATTEMPT = 0.01

# Each row of the status table, as the agent's exception and its message; the HTTP
# status is the row's (tests/agent/test_errors.py holds every row to it).
_ERRORS: dict[status.Answer, tuple[type[AgentError], str]] = {
    status.POD_NOT_FOUND: (PodNotFound, "no pod found for this IP"),
    status.AMBIGUOUS_POD: (AmbiguousPod, "several pods with different roles claim this IP"),
    status.ROLE_FORBIDDEN: (RoleForbidden, "forbidden"),
    status.TOKEN_REFUSED: (TokenRefused, "the kiam server refused the token"),
    status.CREDENTIALS_FAILED: (CredentialsFailed, "the kiam server could not get credentials"),
    status.UNAVAILABLE: (ServerUnavailable, "no kiam server available"),
    status.DEADLINE_EXCEEDED: (ServerTimeout, "the kiam server did not answer in time"),
    status.INVALID_IP: (RequestRefused, "the kiam server refused the request as malformed"),
    status.OTHER: (ServerFailed, "the kiam server answered {code}"),
}


def translate(error: aio.AioRpcError, *, what: str) -> AgentError:
    """A grpc status -> the agent's exception (docs/architecture.md, status codes)."""
    return refusal_error(
        error.code(), error.details() or "", status.reason(error), what=what
    )


def refusal_error(
    code: grpc.StatusCode, message: str, reason: str, *, what: str
) -> AgentError:
    """A refusal, given as its code, status message and reason (``kiam-reason-bin``; empty:
    the message), -> the agent's exception: the one translation of both the RPC path
    (:func:`translate`) and the node replica's refusals, so both answer the same bytes."""
    answer = status.classify_status(code, message)
    kind, summary = _ERRORS[answer]
    if answer is status.DEADLINE_EXCEEDED:
        return kind(f"{what}: {summary}")
    detail = " ".join((reason or message or code.name).split())
    return kind(f"{what}: {summary.format(code=code.name)} ({detail})")


class KiamClient:
    """The three RPCs of ``kiam.KiamService`` and ``kiam.KiamTokenService``'s one, over one
    or several servers (each server's channel carries both services)."""

    def __init__(
        self,
        *,
        targets: Sequence[str],
        credentials: grpc.ChannelCredentials,
        keepalive: KeepaliveSettings,
    ) -> None:
        self.targets = tuple(targets)
        self._channels = [
            secure_channel(t, credentials=credentials, keepalive=keepalive) for t in targets
        ]
        self._stubs = [kiam_pb2_grpc.KiamServiceStub(c) for c in self._channels]
        self._token_stubs = [kiam_pb2_grpc.KiamTokenServiceStub(c) for c in self._channels]
        self._next = itertools.count()
        self._unreachable = WarnLimiter()
        """One warning a minute per server that cannot be used; its retries are info."""

    @property
    def channels(self) -> tuple[aio.Channel, ...]:
        """One channel per target: the node stream (:mod:`kiam.agent.node_stream`) uses
        them too, so the agent keeps one connection per server."""
        return tuple(self._channels)

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
            "GetPodRole",
            lambda stub, t: stub.GetPodRole(request, timeout=t),
            stubs=self._stubs,
            budget=budget,
        )
        return reply.name

    async def pod_credentials(self, ip: str, role: str, *, budget: float) -> kiam_pb2.Credentials:
        request = kiam_pb2.GetPodCredentialsRequest(ip=ip, role=role)
        return await self._call(
            "GetPodCredentials",
            lambda stub, t: stub.GetPodCredentials(request, timeout=t),
            stubs=self._stubs,
            budget=budget,
        )

    async def token_credentials(self, token: str, *, budget: float) -> kiam_pb2.TokenCredentials:
        """The credentials of the pod ``token`` is bound to (docs/token-credentials.md)."""
        request = kiam_pb2.GetTokenCredentialsRequest(token=token)
        return await self._call(
            "GetTokenCredentials",
            lambda stub, t: stub.GetTokenCredentials(request, timeout=t),
            stubs=self._token_stubs,
            service=TOKEN_SERVICE,
            budget=budget,
        )

    async def health(self, *, budget: float) -> str:
        reply = await self._call(
            "GetHealth",
            lambda stub, t: stub.GetHealth(kiam_pb2.GetHealthRequest(), timeout=t),
            stubs=self._stubs,
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
        call: Callable[[S, float], Awaitable[T]],
        *,
        stubs: Sequence[S],
        service: str = SERVICE,
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
            metrics.grpc_client_started.labels("unary", service, method).inc()
            try:
                reply = await call(stubs[index], remaining)
            except aio.AioRpcError as exc:
                label = status.metric_label(exc.code())
                metrics.grpc_client_handled.labels("unary", service, method, label).inc()
                last = translate(exc, what=method)
                if not status.classify(exc).retried:
                    raise last from None
                target = self.targets[index]
                if exc.code() is grpc.StatusCode.UNAVAILABLE and self._unreachable.should_warn(
                    target, now=loop.time()
                ):
                    # the cause (TLS refused, unreachable, draining) once a minute per server
                    log.warning("kiam server %s", describe(target, exc),
                                extra={"fields": {"rpc": method}})
                log.info(
                    "%s attempt %d/%d on %s failed: %s",
                    method,
                    attempt + 1,
                    attempts,
                    self.targets[index],
                    exc.code().name,
                )
                continue
            label = status.metric_label(grpc.StatusCode.OK)
            metrics.grpc_client_handled.labels("unary", service, method, label).inc()
            return reply
        raise last
