"""Why a pod would or would not get credentials, step by step: pure, no I/O.

``kiam explain`` (:mod:`kiam.server.explain`) reads the pods and the namespace once and
hands them here. No rule is restated: every verdict comes from the code the server runs,

- who owns an IP: :func:`~kiam.k8s.ownership.can_own_ip` and
  :func:`~kiam.k8s.ownership.owner_of_ip` (what the pod cache answers);
- the role: :func:`~kiam.server.policy.pod_role_arn`,
  :func:`~kiam.server.policy.namespace_denial`,
  :func:`~kiam.server.policy.external_id_denial`, and the final word,
  :meth:`Policy.decide_own_role <kiam.server.policy.Policy.decide_own_role>`.

What is ours is the fix printed under a failed step, and the lines the server would log
and post as Events for the same refusal (with the server's own wording, from
:mod:`kiam.server.service`), so an operator who saw one can find the other.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from kiam.aws.arn import RoleArn
from kiam.k8s.errors import AmbiguousPodIP
from kiam.k8s.model import PERMITTED_ANNOTATION, ROLE_ANNOTATION, NamespaceInfo, PodInfo
from kiam.k8s.ownership import can_own_ip, grace_expired, owner_of_ip
from kiam.server.policy import (
    Allowed,
    Decision,
    Denied,
    Policy,
    compile_permitted,
    external_id_denial,
    namespace_denial,
    permits,
    pod_role_arn,
)
from kiam.server.service import (
    AMBIGUOUS_LOG,
    CREDENTIAL_ERROR,
    ROLE_FORBIDDEN,
    ROLE_FORBIDDEN_LOG,
    fetch_error_message,
    no_pod_message,
)

OK = "ok"
FAIL = "fail"
INFO = "info"
ROLE_STEPS = frozenset({"annotation", "role ARN", "namespace", "external ID"})
"""The steps the policy decides (the others: whether the pod can own its IP, and STS)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One check: its ``verdict`` (ok, fail, info), what was found, and the fix on failure."""

    name: str
    verdict: str
    detail: str
    fix: str = ""


@dataclass(frozen=True, kw_only=True)
class Diagnosis:
    subject: str
    """``namespace/name`` or ``IP x``: what was asked about."""
    steps: list[Step] = field(default_factory=list)
    pod: PodInfo | None = None
    decision: Decision | None = None
    """The policy's decision for the pod's own role (None when no pod or no IP to own)."""
    server_says: list[str] = field(default_factory=list)
    """What the server logs and posts for this pod, in its words."""

    @property
    def credentials(self) -> bool:
        """True when the server would hand the pod credentials."""
        return isinstance(self.decision, Allowed) and all(s.verdict != FAIL for s in self.steps)


def claimants(pods: Sequence[PodInfo], ip: str) -> list[PodInfo]:
    """Every pod object whose ``status.podIPs`` names ``ip`` (live or not)."""
    return [pod for pod in pods if ip in pod.ips]


def _why_not_owner(pod: PodInfo, *, now: float) -> str:
    if not pod.is_live:
        return f"{pod.phase}, finished"
    if pod.host_network:
        return "hostNetwork"
    if grace_expired(pod, now=now):
        return "terminating, past its grace period"
    if pod.deletion_timestamp is not None:
        return "terminating"
    return pod.phase


def _others(pods: Sequence[PodInfo], pod: PodInfo | None, *, now: float) -> str:
    rest = [other for other in pods if pod is None or other.uid != pod.uid or other.key != pod.key]
    if not rest:
        return "no other pod claims it"
    listed = ", ".join(f"{o.key} ({_why_not_owner(o, now=now)})" for o in rest)
    return f"also claimed by {listed}"


def by_ip(ip: str, pods: Sequence[PodInfo], *, now: float) -> PodInfo | Diagnosis:
    """The pod the server answers for ``ip`` (what the agent asks), or why there is none."""
    claiming = claimants(pods, ip)
    subject = f"IP {ip}"
    try:
        owner = owner_of_ip(claiming, ip=ip, now=now)
    except AmbiguousPodIP as exc:
        step = Step(name="IP owner", verdict=FAIL, detail=str(exc), fix=_AMBIGUOUS_FIX)
        return Diagnosis(subject=subject, steps=[step], server_says=[
            "log: " + AMBIGUOUS_LOG % exc, f"agent: 409 {exc}"])
    if owner is None:
        detail = no_pod_message(ip)
        if claiming:
            detail += "; " + _others(claiming, None, now=now).replace("also claimed", "claimed")
        step = Step(name="IP owner", verdict=FAIL, detail=detail,
                    fix="check the IP: kubectl get pods -A -o wide; only live pods without "
                    "hostNetwork own an IP")
        return Diagnosis(subject=subject, steps=[step], server_says=[f"agent: 404 {detail}"])
    return owner


def not_found(namespace: str, name: str) -> Diagnosis:
    step = Step(name="pod", verdict=FAIL, detail=f"pod {namespace}/{name} not found",
                fix=f"check the name: kubectl get pods -n {namespace}")
    return Diagnosis(subject=f"{namespace}/{name}", steps=[step])


_AMBIGUOUS_FIX = (
    "the IP is claimed by live pods that would get different credentials; the server refuses "
    "rather than guess until the old pod finishes or is deleted (docs/policy.md); if it lasts, "
    "two pods really share an IP: kubectl get pods -A -o wide"
)


def _pod_steps(pod: PodInfo) -> list[Step]:
    steps = [Step(name="pod", verdict=OK,
                  detail=f"{pod.key} found (node {pod.node_name or '-'}, uid {pod.uid or '-'})")]
    if pod.is_live:
        steps.append(Step(name="phase", verdict=OK, detail=pod.phase))
    else:
        steps.append(Step(
            name="phase", verdict=FAIL,
            detail=f"{pod.phase}: a finished pod never owns an IP (its containers are gone)",
            fix="nothing to fix for this pod; a new pod (the Job's next run, a restarted "
            "Deployment) gets its own credentials"))
    if pod.host_network:
        steps.append(Step(
            name="hostNetwork", verdict=FAIL,
            detail="yes: the pod shares the node's IP, so the agent cannot tell it apart",
            fix="use token credentials for hostNetwork pods (docs/token-credentials.md), or "
            "run the pod without hostNetwork"))
    else:
        steps.append(Step(name="hostNetwork", verdict=OK, detail="no"))
    if pod.ips:
        steps.append(Step(name="IPs", verdict=OK, detail=", ".join(pod.ips)))
    else:
        steps.append(Step(name="IPs", verdict=FAIL, detail="none yet (status.podIPs is empty)",
                          fix="wait for the kubelet to start the pod; kiam answers once the "
                          "pod has an IP"))
    return steps


def _ownership_steps(pod: PodInfo, pods: Sequence[PodInfo], *, now: float) -> list[Step]:
    steps: list[Step] = []
    for ip in pod.ips:
        claiming = claimants(pods, ip)
        if pod not in claiming:
            claiming.append(pod)
        try:
            owner = owner_of_ip(claiming, ip=ip, now=now)
        except AmbiguousPodIP as exc:
            steps.append(Step(name=f"owner of {ip}", verdict=FAIL, detail=str(exc),
                              fix=_AMBIGUOUS_FIX))
            continue
        others = _others(claiming, pod, now=now)
        if owner is not None and owner.key == pod.key and owner.uid == pod.uid:
            steps.append(Step(name=f"owner of {ip}", verdict=OK, detail=f"this pod; {others}"))
        else:
            who = owner.key if owner is not None else "no pod"
            steps.append(Step(
                name=f"owner of {ip}", verdict=FAIL,
                detail=f"requests from {ip} are answered for {who}; {others}",
                fix="check which pod really has the IP: kubectl get pods -A -o wide"))
    return steps


def _role_steps(pod: PodInfo, *, policy: Policy) -> tuple[list[Step], RoleArn | None]:
    if not pod.role.strip():
        return [Step(
            name="annotation", verdict=FAIL, detail=f"no {ROLE_ANNOTATION} annotation",
            fix=f"kubectl annotate pod -n {pod.namespace} {pod.name} {ROLE_ANNOTATION}=ROLE "
            "(a role name resolved against --role-base-arn, or a full role ARN)")], None
    steps = [Step(name="annotation", verdict=OK, detail=f"{ROLE_ANNOTATION}: {pod.role}")]
    resolved = pod_role_arn(pod, base_arn=policy.base_arn)
    if isinstance(resolved, Denied) or resolved is None:
        reason = resolved.reason if isinstance(resolved, Denied) else "no role"
        steps.append(Step(
            name="role ARN", verdict=FAIL, detail=reason,
            fix=f"annotate with a role name (resolved against {policy.base_arn}) or a full "
            "ARN arn:aws:iam::<12-digit account>:role/<name>"))
        return steps, None
    how = "as written" if pod.role.strip().startswith("arn:") else f"with base {policy.base_arn}"
    steps.append(Step(name="role ARN", verdict=OK, detail=f"{resolved} ({how})"))
    return steps, resolved


def _namespace_step(
    pod: PodInfo, role_arn: RoleArn, namespace: NamespaceInfo | None, *, policy: Policy
) -> Step:
    mode = "strict: the whole ARN" if policy.strict else (
        "not strict (--disable-strict-namespace-regexp): anywhere in the ARN")
    expression = _literal(role_arn)
    if namespace is None:
        return Step(name="namespace", verdict=FAIL, detail=f"namespace {pod.namespace} not found",
                    fix="the pod's namespace is gone: the pod is being cleaned up")
    permitted = namespace.permitted
    denial = namespace_denial(namespace=pod.namespace, role_arn=role_arn, permitted=permitted,
                              strict=policy.strict)
    if denial is None:
        return Step(name="namespace", verdict=OK,
                    detail=f"{PERMITTED_ANNOTATION}={permitted!r} matches ({mode})")
    pattern = compile_permitted(permitted) if permitted else None
    partly = policy.strict and isinstance(pattern, re.Pattern) and permits(
        pattern, role_arn, strict=False)
    if partly:
        # matches inside the ARN, and strict matching wants all of it
        expression = f".*(?:{permitted}).*"
    fix = (f"kubectl annotate namespace {pod.namespace} --overwrite "
           f"{PERMITTED_ANNOTATION}={shlex.quote(expression)} (or any expression matching "
           "the whole ARN)")
    if partly:
        fix = ("the expression matches only part of the ARN, and matching is strict (the "
               f"whole ARN): {fix}")
    return Step(name="namespace", verdict=FAIL, detail=f"{denial.reason} ({mode})", fix=fix)


def _literal(role_arn: str) -> str:
    """The ARN as an expression that matches exactly it."""
    return role_arn.replace(".", "\\.").replace("+", "\\+")


def explain(
    pod: PodInfo,
    *,
    pods: Sequence[PodInfo],
    namespace: NamespaceInfo | None,
    policy: Policy,
    now: float,
) -> Diagnosis:
    """Every step for ``pod`` among all ``pods`` (for the IP claims), in its ``namespace``."""
    steps = _pod_steps(pod)
    server_says: list[str] = []
    if can_own_ip(pod) and pod.ips:
        steps += _ownership_steps(pod, pods, now=now)
    elif pod.ips:
        server_says.append(f"agent: 404 {no_pod_message(pod.ips[0])}")
    role_steps, role_arn = _role_steps(pod, policy=policy)
    steps += role_steps
    permitted = namespace.permitted if namespace is not None else None
    decision = policy.decide_own_role(pod=pod, permitted=permitted)
    if role_arn is not None:
        steps.append(_namespace_step(pod, role_arn, namespace, policy=policy))
        external = external_id_denial(pod)
        if external is not None:
            steps.append(Step(name="external ID", verdict=FAIL, detail=external.reason,
                              fix="2-1224 characters of letters, digits and +=,.@:/-"))
    if isinstance(decision, Allowed):
        key = decision.key
        steps.append(Step(name="session name", verdict=INFO, detail=key.session_name))
        steps.append(Step(name="external ID", verdict=INFO, detail=key.external_id or "(none)"))
    elif can_own_ip(pod) and pod.ips:
        server_says += [
            "log: " + ROLE_FORBIDDEN_LOG % decision.reason,
            f"event: Warning {ROLE_FORBIDDEN} on pod {pod.key}: {decision.reason}",
        ]
    return Diagnosis(subject=pod.key, steps=steps, pod=pod, decision=decision,
                     server_says=server_says)


def assume_failed(diagnosis: Diagnosis, role_arn: str, error: Exception, *,
                  denied: bool) -> Diagnosis:
    """The diagnosis with the AssumeRole that STS refused (``denied``) or failed."""
    message = fetch_error_message(role_arn, error)
    fix = TRUST_FIX.format(role_arn=role_arn) if denied else (
        "STS did not answer; the server retries, and reports it the same way")
    steps = [*diagnosis.steps, Step(name="AssumeRole", verdict=FAIL, detail=str(error), fix=fix)]
    pod = diagnosis.pod.key if diagnosis.pod is not None else diagnosis.subject
    says = [*diagnosis.server_says, f"log: {message}",
            f"event: Warning {CREDENTIAL_ERROR} on pod {pod}: {message}"]
    return Diagnosis(subject=diagnosis.subject, steps=steps, pod=diagnosis.pod,
                     decision=diagnosis.decision, server_says=says)


TRUST_FIX = (
    "the server's role may not assume {role_arn} (docs/IAM.md): the server's role needs "
    '{{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "{role_arn}"}}, and '
    "{role_arn} must trust it: "
    '{{"Effect": "Allow", "Principal": {{"AWS": "<the server\'s role ARN>"}}, '
    '"Action": "sts:AssumeRole"}}, with a condition on sts:ExternalId when the pod '
    "sets iam.amazonaws.com/external-id"
)
