"""The Helm chart and the manifests, rendered and read as the API server would get them:
real ``helm template`` (v4, :mod:`kiam_testbed.helm`), then checks of what it produces,
token credentials above all (docs/token-credentials.md, "Deploying")."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiam.cli import build_parser
from kiam.common.settings import DEFAULT_WEBHOOK_NAMES
from kiam_testbed.helm import ToolUnavailable, ensure_helm

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "kiam"
MANIFESTS = ROOT / "deploy" / "manifests"
NAMESPACE = "kube-system"
CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return ensure_helm()
    except ToolUnavailable as exc:
        pytest.skip(f"no helm to render the chart with: {exc}")


def _render(helm: Path, *sets: str) -> list[dict[str, Any]]:
    argv = [str(helm), "template", "kiam", str(CHART), "--namespace", NAMESPACE]
    for item in sets:
        argv += ["--set", item]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _refused(helm: Path, *sets: str) -> str:
    argv = [str(helm), "template", "kiam", str(CHART), "--namespace", NAMESPACE]
    for item in sets:
        argv += ["--set", item]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0, "helm rendered what it should refuse"
    return done.stderr


def _kinds(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs)


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, _kinds(docs))
    return found[0]


def _args(workload: dict[str, Any]) -> list[str]:
    args: list[str] = workload["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def _flag(args: list[str], name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return values[-1] if values else None


ENABLED = ("tokenCredentials.enabled=true", f"tokenCredentials.caBundle={CA}")


def test_by_default_there_is_no_webhook_and_no_endpoint(helm: Path) -> None:
    docs = _render(helm)
    kinds = {kind for kind, _ in _kinds(docs)}
    assert "MutatingWebhookConfiguration" not in kinds
    assert [name for kind, name in _kinds(docs) if kind == "Deployment"] == ["kiam-server"]
    assert "--token-credentials" not in _args(_one(docs, "DaemonSet"))
    assert _flag(_args(_one(docs, "Deployment", "kiam-server")), "token-audience") == "kiam"


def test_token_credentials_deploy_the_webhook_and_the_endpoint(helm: Path) -> None:
    docs = _render(helm, *ENABLED)
    names = _kinds(docs)
    for kind in ("ServiceAccount", "Deployment", "Service", "MutatingWebhookConfiguration"):
        assert (kind, "kiam-webhook") in names, names
    assert "--token-credentials" in _args(_one(docs, "DaemonSet"))
    config = _one(docs, "MutatingWebhookConfiguration")["webhooks"][0]
    assert (config["failurePolicy"], config["sideEffects"]) == ("Ignore", "None")
    assert config["admissionReviewVersions"] == ["v1"]
    assert config["rules"] == [{"operations": ["CREATE"], "apiGroups": [""],
                                "apiVersions": ["v1"], "resources": ["pods"],
                                "scope": "Namespaced"}]
    assert config["clientConfig"]["caBundle"] == CA
    service = config["clientConfig"]["service"]
    assert service["path"] == "/mutate"
    assert (service["name"], service["namespace"]) == ("kiam-webhook", NAMESPACE)
    # the name the API server dials is one `kiam certs` puts in webhook.pem by default
    assert f"{service['name']}.{service['namespace']}.svc" in DEFAULT_WEBHOOK_NAMES
    svc = _one(docs, "Service", "kiam-webhook")
    assert svc["spec"]["ports"][0]["port"] == service["port"] == 443
    webhook = _one(docs, "Deployment", "kiam-webhook")
    pod = webhook["spec"]["template"]["spec"]
    assert svc["spec"]["selector"].items() <= webhook["spec"]["template"]["metadata"][
        "labels"].items()
    container = pod["containers"][0]
    assert svc["spec"]["ports"][0]["targetPort"] == container["ports"][0]["containerPort"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["volumes"][0]["secret"]["secretName"] == "kiam-webhook-tls"
    # kiam's own pods are never sent to the webhook
    selector = config["objectSelector"]["matchExpressions"][0]
    labels = webhook["spec"]["template"]["metadata"]["labels"]
    assert selector["operator"] == "NotIn" and labels[selector["key"]] in selector["values"]


def test_the_webhook_replicas_are_spread_and_drained_one_at_a_time(helm: Path) -> None:
    docs = _render(helm, *ENABLED)
    webhook = _one(docs, "Deployment", "kiam-webhook")
    labels = webhook["spec"]["template"]["metadata"]["labels"]
    budget = _one(docs, "PodDisruptionBudget", "kiam-webhook")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    spread = webhook["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"].items() <= labels.items()
    # one replica: no budget, which would promise nothing
    single = _render(helm, *ENABLED, "webhook.replicas=1")
    assert "PodDisruptionBudget" not in {kind for kind, _ in _kinds(single)}


def test_the_server_and_the_webhook_share_one_audience(helm: Path) -> None:
    docs = _render(helm, *ENABLED, "tokenCredentials.audience=kiam-prod",
                   "tokenCredentials.expiration=30m")
    webhook = _args(_one(docs, "Deployment", "kiam-webhook"))
    server = _args(_one(docs, "Deployment", "kiam-server"))
    assert _flag(webhook, "token-audience") == _flag(server, "token-audience") == "kiam-prod"
    assert _flag(webhook, "token-expiration") == "30m"


def test_every_rendered_command_line_parses(helm: Path) -> None:
    docs = _render(helm, *ENABLED)
    commands = set()
    for doc in docs:
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get(
                "containers", []):
            parsed = build_parser().parse_args(container["args"])  # exits on a bad flag
            commands.add(parsed.command)
    assert commands == {"agent", "server", "webhook"}


def test_the_webhook_needs_its_ca_bundle(helm: Path) -> None:
    assert "tokenCredentials.caBundle" in _refused(helm, "tokenCredentials.enabled=true")


def test_with_tls_create_the_webhook_secret_and_bundle_come_from_the_values(helm: Path) -> None:
    docs = _render(helm, "tokenCredentials.enabled=true", "tls.create=true", "tls.ca=CA",
                   "tls.webhookCert=CERT", "tls.webhookKey=KEY")
    secret = _one(docs, "Secret", "kiam-webhook-tls")
    assert sorted(secret["data"]) == ["webhook-key.pem", "webhook.pem"]
    assert base64.b64decode(secret["data"]["webhook.pem"]) == b"CERT"
    config = _one(docs, "MutatingWebhookConfiguration")["webhooks"][0]
    assert base64.b64decode(config["clientConfig"]["caBundle"]) == b"CA"
    assert "tls.webhookCert" in _refused(helm, "tokenCredentials.enabled=true",
                                         "tls.create=true", "tls.ca=CA")


def test_the_manifests_webhook_matches_its_certificate_and_the_server() -> None:
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "webhook.yaml").read_text()) if d]
    budget = _one(docs, "PodDisruptionBudget", "kiam-webhook")
    labels = _one(docs, "Deployment", "kiam-webhook")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    config = _one(docs, "MutatingWebhookConfiguration")["webhooks"][0]
    assert config["failurePolicy"] == "Ignore"
    service = config["clientConfig"]["service"]
    assert f"{service['name']}.{service['namespace']}.svc" in DEFAULT_WEBHOOK_NAMES
    assert (service["name"], "Service") in {(d["metadata"]["name"], d["kind"]) for d in docs}
    webhook = _args(_one(docs, "Deployment"))
    assert build_parser().parse_args(webhook).command == "webhook"
    servers = [d for d in yaml.safe_load_all((MANIFESTS / "server.yaml").read_text())
               if d and d["kind"] == "Deployment"]
    assert _flag(webhook, "token-audience") == _flag(_args(servers[0]), "token-audience")
    selector = config["objectSelector"]["matchExpressions"][0]
    labels = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels[selector["key"]] in selector["values"]
