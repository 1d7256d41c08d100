"""docs/metrics.md lists every metric the daemons export, with its type and labels."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from kiam.server.metrics import ServerMetrics

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
MODULES = ("kiam.agent.metrics", "kiam.aws.metrics", "kiam.k8s.metrics", "kiam.server.metrics")


def _exported() -> dict[str, tuple[str, tuple[str, ...]]]:
    metrics: list[MetricWrapperBase] = []
    for name in MODULES:
        module = importlib.import_module(name)
        metrics += [v for v in vars(module).values() if isinstance(v, MetricWrapperBase)]
    server = ServerMetrics(registry=CollectorRegistry())
    metrics += [server.started, server.handled]
    found = {}
    for metric in metrics:
        for family in metric.describe():
            exported = family.name + ("_total" if family.type == "counter" else "")
            found[exported] = (family.type, tuple(metric._labelnames))
    return found


def _documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (\w+) \| ([^|]*) \|", DOC.read_text(), re.M)
    return {
        name: (kind, tuple(re.findall(r"`(\w+)`", labels)))
        for name, kind, labels in rows
    }


def test_every_exported_metric_is_documented_with_its_type_and_labels() -> None:
    assert _documented() == _exported()
