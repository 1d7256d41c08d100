"""The agent's Prometheus metrics, with Kiam's names (docs/metrics.md).

They live in a registry of their own so the agent and the server (or the health probe)
can be imported into one test process without clashing names; ``/metrics`` serves
this registry plus the usual process and platform collectors.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

handler_latency = Histogram(
    "kiam_metadata_handler_latency_seconds",
    "Latency of the metadata handlers",
    ["handler"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
bad_requests = Counter(
    "kiam_metadata_bad_requests",
    "Requests the HTTP parser refused (400): bad request targets, over-long lines",
    registry=REGISTRY,
)
throttled = Counter(
    "kiam_metadata_throttled",
    "Requests refused (429) because their pod was over its limit, by limit",
    ["limit"],
    registry=REGISTRY,
)
credential_fetch_errors = Counter(
    "kiam_metadata_credential_fetch_errors_total",
    "Credential requests that failed",
    registry=REGISTRY,
)
find_role_errors = Counter(
    "kiam_metadata_find_role_errors_total",
    "Role lookups that failed",
    registry=REGISTRY,
)
empty_role = Counter(
    "kiam_metadata_empty_role_total",
    "Role lookups for pods without a role annotation",
    registry=REGISTRY,
)
success = Counter(
    "kiam_metadata_success_total",
    "Requests answered successfully, by handler",
    ["handler"],
    registry=REGISTRY,
)
responses = Counter(
    "kiam_metadata_responses_total",
    "Responses by handler and HTTP status code",
    ["handler", "code"],
    registry=REGISTRY,
)
proxy_blocked = Counter(
    "kiam_metadata_proxy_requests_blocked_total",
    "Requests for metadata paths the allow-list blocks",
    registry=REGISTRY,
)
# the node replica (docs/architecture.md, "The node replica")
replica_hits = Counter(
    "kiam_agent_replica_hits_total",
    "Requests answered from the node replica, by handler",
    ["handler"],
    registry=REGISTRY,
)
replica_fallbacks = Counter(
    "kiam_agent_replica_fallbacks_total",
    "Requests the node replica could not answer, so asked of a server, by handler and reason",
    ["handler", "reason"],
    registry=REGISTRY,
)
replica_entries = Gauge(
    "kiam_agent_replica_entries",
    "Pod IPs in the node replica",
    registry=REGISTRY,
)
replica_serving = Gauge(
    "kiam_agent_replica_serving",
    "1 while the node replica answers (stream open, snapshot complete, fresh), else 0",
    registry=REGISTRY,
)
node_streams = Counter(
    "kiam_agent_node_streams_total",
    "WatchNode streams, by what happened: opened, complete (snapshot), broken, stale, "
    "unimplemented",
    ["result"],
    registry=REGISTRY,
)
credentials_served = Counter(
    "kiam_agent_credentials_served_total",
    "Credentials answered, by whether the pod got that access key for the first time "
    "(new: logged) or again (seen)",
    ["access_key"],
    registry=REGISTRY,
)
# go-grpc-prometheus names, as Kiam's agent exported them
grpc_client_started = Counter(
    "grpc_client_started_total",
    "RPCs started by the agent",
    ["grpc_type", "grpc_service", "grpc_method"],
    registry=REGISTRY,
)
grpc_client_handled = Counter(
    "grpc_client_handled_total",
    "RPCs completed by the agent, by status code",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
    registry=REGISTRY,
)
