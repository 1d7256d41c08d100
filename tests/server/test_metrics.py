"""The gRPC server counters, through a real grpc.aio server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio
from prometheus_client import CollectorRegistry

from kiam.server.metrics import ServerMetrics, split_method
from kiam.wire import kiam_pb2, kiam_pb2_grpc


class Servicer(kiam_pb2_grpc.KiamServiceServicer):
    async def GetHealth(self, request: Any, context: Any) -> kiam_pb2.HealthStatus:
        return kiam_pb2.HealthStatus(message="ok")

    async def GetPodRole(self, request: Any, context: Any) -> kiam_pb2.Role:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no pod")
        raise AssertionError

    async def GetPodCredentials(self, request: Any, context: Any) -> kiam_pb2.Credentials:
        raise RuntimeError("boom")


@pytest.fixture
async def served() -> AsyncIterator[tuple[CollectorRegistry, kiam_pb2_grpc.KiamServiceAsyncStub]]:
    registry = CollectorRegistry()
    server = aio.server(interceptors=[ServerMetrics(registry)])
    kiam_pb2_grpc.add_KiamServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield registry, kiam_pb2_grpc.KiamServiceStub(channel)
    finally:
        await server.stop(None)


def handled(registry: CollectorRegistry, method: str, code: str) -> float | None:
    return registry.get_sample_value(
        "grpc_server_handled_total",
        {
            "grpc_type": "unary",
            "grpc_service": "kiam.KiamService",
            "grpc_method": method,
            "grpc_code": code,
        },
    )


async def test_counts_started_and_handled_with_go_code_names(
    served: tuple[CollectorRegistry, kiam_pb2_grpc.KiamServiceAsyncStub],
) -> None:
    registry, stub = served
    await stub.GetHealth(kiam_pb2.GetHealthRequest())
    await stub.GetHealth(kiam_pb2.GetHealthRequest())
    with pytest.raises(aio.AioRpcError):
        await stub.GetPodRole(kiam_pb2.GetPodRoleRequest(ip="10.0.0.1"))
    with pytest.raises(aio.AioRpcError):
        await stub.GetPodCredentials(kiam_pb2.GetPodCredentialsRequest(ip="10.0.0.1"))

    # grpc.aio's abort() sends the status before the handler's frame unwinds: give the
    # server's side of the last calls a few loop turns to finish counting
    for _ in range(200):
        if handled(registry, "GetPodCredentials", "Unknown") and handled(
            registry, "GetPodRole", "NotFound"
        ):
            break
        await asyncio.sleep(0.01)
    started = registry.get_sample_value(
        "grpc_server_started_total",
        {"grpc_type": "unary", "grpc_service": "kiam.KiamService", "grpc_method": "GetHealth"},
    )
    assert started == 2
    assert handled(registry, "GetHealth", "OK") == 2
    assert handled(registry, "GetPodRole", "NotFound") == 1
    assert handled(registry, "GetPodCredentials", "Unknown") == 1


def test_split_method() -> None:
    assert split_method("/kiam.KiamService/GetPodRole") == ("kiam.KiamService", "GetPodRole")
    assert split_method("/grpc.health.v1.Health/Check") == ("grpc.health.v1.Health", "Check")
