"""A Go-shaped kiam server: a scripted ``kiam.KiamService`` answering as Go Kiam's does.

What it copies from Go Kiam's ``pkg/server/server.go`` (read, not ported):

* every refusal is a plain Go error, so gRPC sends it as **UNKNOWN** with the error's
  text as the message: ``pod not found`` from GetPodRole for an unknown IP (its pod
  cache's error, passed through), ``no pod found`` from GetPodCredentials, and
  ``forbidden by policy`` when the requested role is not the pod's annotated role or
  the namespace's ``iam.amazonaws.com/permitted`` expression does not match it;
* GetPodRole answers the **raw annotation** (``kiam/pathrole``, ``/name``, a full ARN),
  not the last segment of the ARN;
* it looks the IP up once and answers at once: it never waits for a pod to appear.

It listens on 127.0.0.1 with the project's mTLS certificates, as our agent requires,
and records every call so a test can count the RPCs a peer made.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from grpc import aio

from kiam.certs import CertPaths
from kiam.common.settings import TLSSettings
from kiam.common.tls import server_credentials
from kiam.wire import kiam_pb2, kiam_pb2_grpc

BASE_ARN = "arn:aws:iam::123456789012:role/"
EXPIRATION = "2030-01-01T01:00:00Z"
LAST_UPDATED = "2030-01-01T00:00:00Z"


@dataclass(frozen=True)
class GoPod:
    role: str
    """The pod's ``iam.amazonaws.com/role`` annotation, as written."""
    permitted: str = ".*"
    """Its namespace's ``iam.amazonaws.com/permitted`` expression (Go's strict mode:
    the whole ARN must match)."""


def resolve(role: str) -> str:
    """A role as Go's ARN resolver reads it: a full ARN as is, else under the base ARN."""
    if role.startswith("arn:"):
        return role
    return BASE_ARN + role.lstrip("/")


async def go_error(context: aio.ServicerContext[Any, Any], text: str) -> NoReturn:
    """What grpc-go sends when a handler returns a plain error: UNKNOWN, its text."""
    await context.abort(grpc.StatusCode.UNKNOWN, text)
    raise AssertionError("context.abort returned")


@dataclass(frozen=True)
class Call:
    method: str
    ip: str
    role: str = ""


@dataclass
class GoShapedServicer(kiam_pb2_grpc.KiamServiceServicer):
    pods: Mapping[str, GoPod]
    calls: list[Call] = field(default_factory=list)

    def calls_from(self, ip: str, method: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.ip == ip and method in (None, c.method)]

    async def GetPodRole(
        self, request: kiam_pb2.GetPodRoleRequest, context: aio.ServicerContext[Any, Any]
    ) -> kiam_pb2.Role:
        self.calls.append(Call("GetPodRole", request.ip))
        pod = self.pods.get(request.ip)
        if pod is None:
            await go_error(context, "pod not found")
        return kiam_pb2.Role(name=pod.role)

    async def GetPodCredentials(
        self,
        request: kiam_pb2.GetPodCredentialsRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> kiam_pb2.Credentials:
        self.calls.append(Call("GetPodCredentials", request.ip, request.role))
        pod = self.pods.get(request.ip)
        if pod is None:
            await go_error(context, "no pod found")
        requested = resolve(request.role)
        if requested != resolve(pod.role) or not re.fullmatch(pod.permitted, requested):
            await go_error(context, "forbidden by policy")
        name = requested.rsplit("/", 1)[1]
        return kiam_pb2.Credentials(
            code="Success",
            type="AWS-HMAC",
            access_key_id="ASIAGO" + re.sub(r"[^A-Z0-9]", "", name.upper()),
            secret_access_key="go-secret",
            token="go-token",
            expiration=EXPIRATION,
            last_updated=LAST_UPDATED,
        )

    async def GetHealth(
        self, request: kiam_pb2.GetHealthRequest, context: aio.ServicerContext[Any, Any]
    ) -> kiam_pb2.HealthStatus:
        self.calls.append(Call("GetHealth", ""))
        return kiam_pb2.HealthStatus(message="ok")


@dataclass(frozen=True)
class RunningGoServer:
    servicer: GoShapedServicer
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def go_shaped_server(
    certs: CertPaths, pods: Mapping[str, GoPod]
) -> AsyncIterator[RunningGoServer]:
    servicer = GoShapedServicer(pods=pods)
    server = aio.server()
    kiam_pb2_grpc.add_KiamServiceServicer_to_server(servicer, server)
    tls = TLSSettings(cert=str(certs.server_cert), key=str(certs.server_key), ca=str(certs.ca))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls))
    await server.start()
    try:
        yield RunningGoServer(servicer, port)
    finally:
        await asyncio.shield(server.stop(None))
