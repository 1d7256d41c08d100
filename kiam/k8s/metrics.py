"""Prometheus metrics of the Kubernetes side (Kiam's names where Kiam has one)."""

from __future__ import annotations

from prometheus_client import Counter

dropped_pods = Counter(
    "kiam_k8s_dropped_pods_total",
    "Pods not announced for credential prefetch because the announcement buffer was full",
)
dropped_events = Counter(
    "kiam_k8s_dropped_events_total",
    "Kubernetes Events not recorded because the recorder's queue was full",
)
event_errors = Counter(
    "kiam_k8s_event_errors_total",
    "Kubernetes Events the API server refused or that could not be sent",
)
