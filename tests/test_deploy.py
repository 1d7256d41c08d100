"""The deployment files stay true to the code: every flag they pass exists, every Helm
value they read is defined, and the dashboard charts only metrics kiam exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiam.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "deploy" / "manifests").glob("*.yaml"))
HELM = ROOT / "deploy" / "helm" / "kiam"

KIAM_METRICS = {
    "kiam_metadata_handler_latency_seconds",
    "kiam_metadata_credential_fetch_errors_total",
    "kiam_metadata_find_role_errors_total",
    "kiam_metadata_empty_role_total",
    "kiam_metadata_success_total",
    "kiam_metadata_responses_total",
    "kiam_metadata_proxy_requests_blocked_total",
    "kiam_sts_cache_hit_total",
    "kiam_sts_cache_miss_total",
    "kiam_sts_issuing_errors_total",
    "kiam_sts_assumerole_timing_seconds",
    "kiam_sts_assumerole_current",
    "kiam_sts_refusals_remembered",
    "kiam_sts_refusal_hits_total",
    "kiam_sts_backoff_skips_total",
    "kiam_sts_assumerole_calls_total",
    "kiam_sts_budget_rate",
    "kiam_sts_budget_tokens",
    "kiam_sts_budget_waiting",
    "kiam_sts_budget_wait_seconds",
    "kiam_k8s_dropped_pods_total",
    "grpc_server_handled_total",
    "grpc_client_handled_total",
}


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    containers: list[dict[str, Any]] = spec.get("containers", [])
    return containers


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_args_parse(path: Path, tmp_path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        for container in _containers(doc or {}):
            args = container.get("args", [])
            if not args:
                continue
            ns = build_parser().parse_args(args)  # exits (fails the test) on an unknown flag
            assert ns.command in ("agent", "server", "webhook")
            probe = container.get("livenessProbe", {}).get("exec", {}).get("command")
            if probe:
                assert probe[0] == "kiam"
                build_parser().parse_args(probe[1:])


def test_manifests_grant_what_the_server_needs() -> None:
    rules = [
        rule
        for doc in yaml.safe_load_all((ROOT / "deploy/manifests/server-rbac.yaml").read_text())
        if doc["kind"] == "ClusterRole"
        for rule in doc["rules"]
    ]
    granted = {(r, v) for rule in rules for r in rule["resources"] for v in rule["verbs"]}
    for needed in [("pods", "list"), ("pods", "watch"), ("namespaces", "watch"),
                   ("events", "create"), ("events", "patch"), ("tokenreviews", "create")]:
        assert needed in granted


def _lookup(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_helm_templates_read_only_defined_values() -> None:
    values = yaml.safe_load((HELM / "values.yaml").read_text())
    used = set()
    for template in (HELM / "templates").iterdir():
        used.update(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    assert used, "no values found: the pattern is broken"
    missing = sorted(u for u in used if not _lookup(values, u))
    assert not missing, f"templates read undefined values: {missing}"


def test_helm_values_parse_as_flags() -> None:
    values = yaml.safe_load((HELM / "values.yaml").read_text())
    server = values["server"]
    # parse_args exits (failing the test) on a value the flag refuses
    parsed = build_parser().parse_args([
        "server", "--cert", "c", "--key", "k", "--ca", "a",
        f"--session-duration={server['sessionDuration']}",
        f"--session-refresh={server['sessionRefresh']}", f"--sync={server['sync']}",
    ])
    assert parsed.session_duration >= 900 > parsed.session_refresh
    agent = build_parser().parse_args([
        "agent", "--cert", "c", "--key", "k", "--ca", "a",
        f"--imdsv2={values['agent']['imdsv2']}",
    ])
    assert agent.imdsv2 == values["agent"]["imdsv2"]


def test_agent_knows_its_node_name() -> None:
    for doc in yaml.safe_load_all((ROOT / "deploy/manifests/agent.yaml").read_text()):
        for container in _containers(doc or {}):
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    # the Helm template is not YAML before rendering: its env block, as text
    helm = (HELM / "templates/agent.yaml").read_text()
    assert re.search(
        r"- name: NODE_NAME\n\s+valueFrom: \{fieldRef: \{fieldPath: spec.nodeName\}\}", helm
    )


def test_helm_agent_keeps_the_servers_session_refresh() -> None:
    text = (HELM / "templates/agent.yaml").read_text()
    assert "--session-refresh={{ .Values.server.sessionRefresh }}" in text


def test_dashboard_charts_kiam_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/kiam-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    names = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for expr in exprs
        # label names sit in `by (...)` and `{...}`: drop those first
        for name in re.findall(
            r"\b((?:kiam|grpc)_[a-z0-9_]+)", re.sub(r"by \([^)]*\)|\{[^}]*\}", "", expr)
        )
    }
    assert names, "no metric names found: the pattern is broken"
    unknown = names - KIAM_METRICS
    assert not unknown, f"dashboard charts metrics kiam does not export: {unknown}"
