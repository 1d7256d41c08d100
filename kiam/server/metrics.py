"""gRPC server counters, named and labelled as go-grpc-prometheus does.

``grpc_server_started_total{grpc_method,grpc_service,grpc_type}`` and
``grpc_server_handled_total{grpc_code,grpc_method,grpc_service,grpc_type}``, so Kiam's
dashboards and alerts keep working. Codes are labelled as Go spells them (``NotFound``),
by :func:`kiam.wire.status.metric_label`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from grpc import aio
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from kiam.wire.status import metric_label


def split_method(full_method: str) -> tuple[str, str]:
    """``/kiam.KiamService/GetPodRole`` -> (``kiam.KiamService``, ``GetPodRole``)."""
    _, _, rest = full_method.partition("/")
    service, _, method = rest.rpartition("/")
    return service or "unknown", method or "unknown"


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # not subscriptable at run time
Behaviour = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]


class ServerMetrics(aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts unary RPCs started and handled; streaming RPCs are passed through untouched."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.started = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            ("grpc_type", "grpc_service", "grpc_method"),
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            ("grpc_type", "grpc_service", "grpc_method", "grpc_code"),
            registry=registry,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, method = split_method(handler_call_details.method)
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(cast(Behaviour, handler.unary_unary), service=service, method=method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, behaviour: Behaviour, *, service: str, method: str) -> Behaviour:
        started = self.started.labels("unary", service, method)
        handled = self.handled

        async def counted(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            started.inc()
            code: grpc.StatusCode | None = grpc.StatusCode.UNKNOWN
            try:
                response = await behaviour(request, context)
                code = context.code()
                return response
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                # context.abort() raises after setting the code; anything else is UNKNOWN
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                handled.labels("unary", service, method, metric_label(code)).inc()

        return counted
