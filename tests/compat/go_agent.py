"""A Go-shaped kiam agent: the client half of Go Kiam's agent, answering as it would.

What it copies from Go Kiam (read, not ported):

* ``pkg/server/gateway.go``: GetCredentials turns a status into Go Kiam's own error by
  its **message** only: exactly ``forbidden by policy`` -> ErrPolicyForbidden, exactly
  ``no pod found`` -> ErrPodNotFound; any other status stays a gRPC error, whose text is
  ``rpc error: code = <Go code name> desc = <message>``. GetRole converts nothing.
* ``pkg/aws/metadata/handler_credentials.go``, ``handler_role_name.go``: every call
  is retried with cenkalti/backoff's exponential back-off (first interval 5 ms,
  multiplier 1.5, randomisation 0.5) for as long as the request's context lasts;
  the one error made permanent is ErrPolicyForbidden, on the credentials route.
  An error is answered 500 (credentials: ``error fetching credentials: <error>``); an
  empty role is 404 ``empty role``.
* ``pkg/aws/metadata/handlers.go``: that context ends 5 s after the request arrived,
  and each RPC carries it as its deadline.

:attr:`GoShapedAgent.calls` records every RPC it made, so a test sees a retry storm, and
:attr:`GoShapedAgent.errors` what each failed one became.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
from grpc import aio

from kiam.wire import kiam_pb2, kiam_pb2_grpc, status

T = TypeVar("T")

HANDLER_MAX_DURATION = 5.0
INITIAL_INTERVAL = 0.005
MULTIPLIER = 1.5
RANDOMIZATION = 0.5
MAX_INTERVAL = 60.0

ERR_POLICY_FORBIDDEN = "forbidden by policy"
ERR_POD_NOT_FOUND = "no pod found"


class GoError(Exception):
    """An error value of Go's agent; ``permanent`` stops the back-off."""

    def __init__(self, text: str, *, permanent: bool = False) -> None:
        super().__init__(text)
        self.permanent = permanent


def rpc_error_text(error: aio.AioRpcError) -> str:
    """What Go's ``status.Error(...).Error()`` prints."""
    return f"rpc error: code = {status.metric_label(error.code())} desc = {error.details() or ''}"


@dataclass(frozen=True)
class GoAnswer:
    status: int
    body: str


@dataclass
class GoShapedAgent:
    stub: kiam_pb2_grpc.KiamServiceAsyncStub
    patience: float = HANDLER_MAX_DURATION
    """The request context's lifetime (Go: 5 s)."""
    calls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    """The error each failed RPC became, in order."""
    rng: random.Random = field(default_factory=lambda: random.Random(17))

    async def role_name(self, ip: str) -> GoAnswer:
        """``GET /latest/meta-data/iam/security-credentials/`` from the pod at ``ip``."""

        async def get_role(timeout: float) -> str:  # noqa: ASYNC109
            self.calls.append("GetPodRole")
            request = kiam_pb2.GetPodRoleRequest(ip=ip)
            try:
                reply = await self.stub.GetPodRole(request, timeout=timeout)
            except aio.AioRpcError as exc:
                raise GoError(rpc_error_text(exc)) from None
            return reply.name

        try:
            role = await self._retry(get_role)
        except GoError as exc:
            return GoAnswer(500, str(exc))
        if not role:
            return GoAnswer(404, "empty role")
        return GoAnswer(200, role)

    async def credentials(self, ip: str, role: str) -> GoAnswer:
        """``GET /latest/meta-data/iam/security-credentials/<role>`` from the pod at ``ip``."""

        async def get_credentials(timeout: float) -> kiam_pb2.Credentials:  # noqa: ASYNC109
            self.calls.append("GetPodCredentials")
            request = kiam_pb2.GetPodCredentialsRequest(ip=ip, role=role)
            try:
                return await self.stub.GetPodCredentials(request, timeout=timeout)
            except aio.AioRpcError as exc:
                message = exc.details() or ""
                if message == ERR_POLICY_FORBIDDEN:
                    raise GoError(ERR_POLICY_FORBIDDEN, permanent=True) from None
                if message == ERR_POD_NOT_FOUND:
                    raise GoError(ERR_POD_NOT_FOUND) from None
                raise GoError(rpc_error_text(exc)) from None

        try:
            reply = await self._retry(get_credentials)
        except GoError as exc:
            return GoAnswer(500, f"error fetching credentials: {exc}")
        document = {
            "Code": reply.code,
            "Type": reply.type,
            "AccessKeyId": reply.access_key_id,
            "SecretAccessKey": reply.secret_access_key,
            "Token": reply.token,
            "Expiration": reply.expiration,
            "LastUpdated": reply.last_updated,
        }
        return GoAnswer(200, orjson.dumps(document).decode())

    async def _retry(self, operation: Callable[[float], Awaitable[T]]) -> T:
        """cenkalti/backoff's Retry with an exponential back-off bound to the context."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.patience
        interval = INITIAL_INTERVAL
        while True:
            try:
                return await operation(max(deadline - loop.time(), 0.0))
            except GoError as exc:
                self.errors.append(str(exc))
                if exc.permanent:
                    raise
                last = exc
            delta = RANDOMIZATION * interval
            wait = interval - delta + self.rng.random() * 2 * delta
            interval = min(interval * MULTIPLIER, MAX_INTERVAL)
            if loop.time() + wait >= deadline:
                raise last  # the context ended: Retry returns the last error
            await asyncio.sleep(wait)
