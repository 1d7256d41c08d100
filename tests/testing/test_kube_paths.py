"""Request paths to resources, as the apiserver routes them (pure)."""

from __future__ import annotations

import pytest

from kiam_testbed.kube import EVENTS, EVENTS_V1, NAMESPACES, PODS
from kiam_testbed.kube.app import Target, parse_path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/pods", Target(PODS, None)),
        ("/api/v1/namespaces/ns/pods", Target(PODS, "ns")),
        ("/api/v1/namespaces/ns/pods/web", Target(PODS, "ns", "web")),
        ("/api/v1/namespaces/ns/pods/web/status", Target(PODS, "ns", "web", "status")),
        ("/api/v1/namespaces", Target(NAMESPACES, None)),
        ("/api/v1/namespaces/ns", Target(NAMESPACES, None, "ns")),
        ("/api/v1/namespaces/pods", Target(NAMESPACES, None, "pods")),
        ("/api/v1/events", Target(EVENTS, None)),
        ("/api/v1/namespaces/ns/events/e", Target(EVENTS, "ns", "e")),
        ("/apis/events.k8s.io/v1/namespaces/ns/events", Target(EVENTS_V1, "ns")),
        ("/api/v1/watch/pods", Target(PODS, None, legacy_watch=True)),
        ("/api/v1/watch/namespaces/ns/pods/web",
         Target(PODS, "ns", "web", legacy_watch=True)),
    ],
)
def test_known_paths(path: str, expected: Target) -> None:
    assert parse_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api",
        "/api/v2/pods",
        "/api/v1/services",
        "/api/v1/namespaces/ns/pods/web/log",
        "/api/v1/namespaces/ns/status",
        "/api/v1/namespaces/ns/events/e/status",
        "/apis/events.k8s.io/v1beta1/events",
        "/apis/apps/v1/namespaces/ns/deployments",
    ],
)
def test_unknown_paths(path: str) -> None:
    assert parse_path(path) is None
