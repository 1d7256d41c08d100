"""gRPC server counters, named and labelled as go-grpc-prometheus does, and the node
replica's metrics.

``grpc_server_started_total{grpc_method,grpc_service,grpc_type}`` and
``grpc_server_handled_total{grpc_code,grpc_method,grpc_service,grpc_type}``, so Kiam's
dashboards and alerts keep working. Codes are labelled as Go spells them (``NotFound``),
by :func:`kiam.wire.status.metric_label`. ``grpc_type`` is ``unary`` or
``server_stream`` (``WatchNode``, counted when the stream ends).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from grpc import aio
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from kiam.wire.status import metric_label

NODE_STREAMS = Gauge("kiam_node_streams", "WatchNode streams open")
NODE_PUSH_LATENCY = Histogram(
    "kiam_node_push_latency_seconds",
    "Time from the change the server observed (pod, namespace, credentials) to the "
    "node update written to the stream",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
NODE_ENTRIES_SENT = Counter(
    "kiam_node_entries_sent", "Node entries written to WatchNode streams, snapshots included"
)
NODE_STREAMS_CUT_OFF = Counter(
    "kiam_node_streams_cut_off",
    "WatchNode streams ended because they fell --node-stream-buffer updates behind",
)


def split_method(full_method: str) -> tuple[str, str]:
    """``/kiam.KiamService/GetPodRole`` -> (``kiam.KiamService``, ``GetPodRole``)."""
    _, _, rest = full_method.partition("/")
    service, _, method = rest.rpartition("/")
    return service or "unknown", method or "unknown"


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # not subscriptable at run time
Behaviour = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]


class ServerMetrics(aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts unary and server-streaming RPCs started and handled; others pass untouched."""

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
        if handler is None:
            return handler
        service, method = split_method(handler_call_details.method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(cast(Behaviour, handler.unary_unary), "unary", service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None and inspect.iscoroutinefunction(
            handler.unary_stream
        ):
            # a handler that writes with context.write (ours, grpc.health.v1's Watch)
            return grpc.unary_stream_rpc_method_handler(
                self._wrap(cast(Behaviour, handler.unary_stream), "server_stream", service,
                           method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap(self, behaviour: Behaviour, kind: str, service: str, method: str) -> Behaviour:
        started = self.started.labels(kind, service, method)
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
                handled.labels(kind, service, method, metric_label(code)).inc()

        return counted
