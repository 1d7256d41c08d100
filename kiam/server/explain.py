"""``kiam explain NAMESPACE/POD`` (or ``--ip IP``): why a pod would or would not get
credentials, read-only.

With the server's flags (and, in-cluster, the server's service account), it reads the
pods and the pod's namespace once (GET, never a watch), decides through the server's own
rules (:mod:`kiam.server.diagnosis`) and prints each step with its verdict and the fix.
``--assume`` also makes the AssumeRole the server would make, with the server's STS
settings. Secret keys and session tokens are never printed.

Exit codes: 0 the pod would get credentials, 1 it would not, 2 usage or connection
errors (the API server or STS cannot be reached, a bad kubeconfig).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, TextIO

import orjson

from kiam.aws.errors import AwsError, StsAccessDenied, StsUnavailable
from kiam.common import logs
from kiam.k8s.client import KubeClient
from kiam.k8s.errors import KubeError, KubeNotFound
from kiam.k8s.model import NamespaceInfo, PodInfo, namespace_info_from_json, pod_info_from_json
from kiam.server.diagnosis import (
    FAIL,
    OK,
    ROLE_STEPS,
    Diagnosis,
    Step,
    assume_failed,
    by_ip,
    explain,
    not_found,
)
from kiam.server.main import StartupError, kube_client, resolve_base_arn, sts_gateway
from kiam.server.policy import Allowed, Denied, Policy
from kiam.server.settings import ExplainSettings

PODS_PATH = "/api/v1/pods"


class Unreachable(Exception):
    """The API server or STS cannot be asked: exit 2, with this line."""


def run_explain(settings: ExplainSettings) -> int:
    """Entry point of ``kiam explain`` (from :mod:`kiam.cli`); the exit code."""
    # the report is the output; the clients' own info lines would only interleave with it
    level = "debug" if settings.server.log.level == "debug" else "warn"
    logs.configure(json_log=settings.server.log.json_log, level=level)
    try:
        diagnosis = asyncio.run(diagnose(settings))
    except (Unreachable, StartupError) as exc:
        print(f"kiam explain: {exc}", file=sys.stderr)
        return 2
    if settings.output == "json":
        print(json.dumps(as_json(diagnosis), indent=2))
    else:
        print_text(diagnosis, sys.stdout)
    return 0 if diagnosis.credentials else 1


async def diagnose(settings: ExplainSettings) -> Diagnosis:
    server = settings.server
    policy = Policy(
        base_arn=await resolve_base_arn(server),
        default_session=server.session,
        strict=not server.disable_strict_namespace_regexp,
    )
    kube = await kube_client(server)
    try:
        pods = await _pods(kube)
        now = time.time()
        if settings.ip:
            found = by_ip(settings.ip, pods, now=now)
            if isinstance(found, Diagnosis):
                return found
            pod = found
        else:
            namespace, _, name = settings.pod.partition("/")
            match = [p for p in pods if p.namespace == namespace and p.name == name]
            if not match:
                return not_found(namespace, name)
            pod = match[0]
        info = await _namespace(kube, pod.namespace)
    finally:
        await kube.close()
    diagnosis = explain(pod, pods=pods, namespace=info, policy=policy, now=now)
    if settings.assume and diagnosis.credentials:
        return await _assume(settings, diagnosis)
    return diagnosis


async def _pods(kube: KubeClient) -> list[PodInfo]:
    try:
        body = orjson.loads(await kube.list_raw(PODS_PATH))
    except KubeError as exc:
        raise Unreachable(f"cannot list pods ({kube.host}): {exc}") from None
    pods: list[PodInfo] = []
    for item in body.get("items") or []:
        try:
            pods.append(pod_info_from_json(item))
        except ValueError:
            continue
    return pods


async def _namespace(kube: KubeClient, name: str) -> NamespaceInfo | None:
    try:
        return namespace_info_from_json(await kube.get_json(f"/api/v1/namespaces/{name}"))
    except KubeNotFound:
        return None
    except KubeError as exc:
        raise Unreachable(f"cannot read namespace {name} ({kube.host}): {exc}") from None


async def _assume(settings: ExplainSettings, diagnosis: Diagnosis) -> Diagnosis:
    decision = diagnosis.decision
    assert isinstance(decision, Allowed)
    server = settings.server
    gateway = await sts_gateway(server)
    try:
        issued = await gateway.assume_role(decision.key, duration=server.session_duration)
    except StsAccessDenied as exc:
        return assume_failed(diagnosis, decision.role_arn, exc, denied=True)
    except StsUnavailable as exc:
        raise Unreachable(str(exc)) from None
    except AwsError as exc:
        return assume_failed(diagnosis, decision.role_arn, exc, denied=False)
    finally:
        await gateway.close()
    step = Step(
        name="AssumeRole",
        verdict=OK,
        detail=f"issued access key {issued.access_key_id}, expires "
        f"{issued.expiration.isoformat()} (secret key and session token not shown)",
    )
    return Diagnosis(
        subject=diagnosis.subject,
        steps=[*diagnosis.steps, step],
        pod=diagnosis.pod,
        decision=decision,
        server_says=diagnosis.server_says,
    )


# ---------------------------------------------------------------- output


def _outcome(diagnosis: Diagnosis) -> tuple[str, str]:
    decision = diagnosis.decision
    if diagnosis.credentials and isinstance(decision, Allowed):
        return decision.role_arn, ""
    failed = [s for s in diagnosis.steps if s.verdict == FAIL]
    first = failed[0] if failed else None
    # a refused role reads as the server's reason, the one in its log and Events
    if isinstance(decision, Denied) and (first is None or first.name in ROLE_STEPS):
        return "", decision.reason
    return "", first.detail if first is not None else "no pod"


def as_json(diagnosis: Diagnosis) -> dict[str, Any]:
    role_arn, reason = _outcome(diagnosis)
    return {
        "subject": diagnosis.subject,
        "pod": diagnosis.pod.key if diagnosis.pod is not None else None,
        "credentials": diagnosis.credentials,
        "role_arn": role_arn or None,
        "reason": reason or None,
        "steps": [
            {"step": s.name, "verdict": s.verdict, "detail": s.detail, "fix": s.fix or None}
            for s in diagnosis.steps
        ],
        "server_says": diagnosis.server_says,
    }


def print_text(diagnosis: Diagnosis, out: TextIO) -> None:
    print(f"kiam explain {diagnosis.subject}", file=out)
    width = max(len(s.name) for s in diagnosis.steps) + 2
    for step in diagnosis.steps:
        print(f"  {step.verdict.upper():<5} {step.name:<{width}} {step.detail}", file=out)
        if step.fix:
            print(f"  {'':<5} {'':<{width}} fix: {step.fix}", file=out)
    role_arn, reason = _outcome(diagnosis)
    if diagnosis.credentials:
        print(f"verdict: {diagnosis.subject} would get credentials for {role_arn}", file=out)
    else:
        print(f"verdict: {diagnosis.subject} would get no credentials: {reason}", file=out)
    if diagnosis.server_says:
        print("the server says, in its log, its Events and to the agent:", file=out)
        for line in diagnosis.server_says:
            print(f"  {line}", file=out)
