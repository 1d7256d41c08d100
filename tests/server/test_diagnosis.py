"""The diagnosis is the server's decision, step by step (pure: no sockets): whatever the
pods and the namespace, ``kiam explain`` says "credentials" exactly when the server's
own rules (the IP's owner, then the policy for the pod's own role) would hand them out."""

from __future__ import annotations

import itertools

import pytest

from kiam.k8s.errors import AmbiguousPodIP
from kiam.k8s.model import NamespaceInfo, PodInfo
from kiam.k8s.ownership import owner_of_ip
from kiam.server.diagnosis import FAIL, explain
from kiam.server.policy import Allowed, Policy
from tests.k8s.factories import pod

BASE = "arn:aws:iam::123456789012:role/"
NOW = 1_800_000_000.0


def _server_serves(target: PodInfo, pods: list[PodInfo], permitted: str | None,
                   policy: Policy) -> bool:
    """What the server does for a request from each of the pod's IPs."""
    if not target.ips:
        return False
    for ip in target.ips:
        try:
            owner = owner_of_ip([p for p in pods if ip in p.ips], ip=ip, now=NOW)
        except AmbiguousPodIP:
            return False
        if owner is None or owner.uid != target.uid:
            return False
    return isinstance(policy.decide_own_role(pod=target, permitted=permitted), Allowed)


ROLES = ["", "team-web", "admin", "arn:aws:iam::1:role/x"]
PERMITTED = [None, "", BASE + "team-.*", "team-web", "("]
SHAPES = [
    {},
    {"phase": "Succeeded"},
    {"host_network": True},
    {"ips": ()},
]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(("role", "permitted", "shape"),
                         list(itertools.product(ROLES, PERMITTED, SHAPES)))
def test_explain_says_credentials_exactly_when_the_server_would(
    role: str, permitted: str | None, shape: dict[str, object], strict: bool
) -> None:
    policy = Policy(base_arn=BASE, default_session="kiam", strict=strict)
    target = pod("web", namespace="team", uid="u-web", role=role, **shape)  # type: ignore[arg-type]
    other = pod("old", namespace="team", uid="u-old", role="team-other")
    for pods in ([target], [target, other]):
        namespace = None if permitted is None else NamespaceInfo(name="team", permitted=permitted)
        diagnosis = explain(target, pods=pods, namespace=namespace, policy=policy, now=NOW)
        expected = _server_serves(target, pods, namespace.permitted if namespace else None,
                                  policy)
        assert diagnosis.credentials is expected, diagnosis.steps
        if not expected:
            assert any(step.verdict == FAIL for step in diagnosis.steps) or not isinstance(
                diagnosis.decision, Allowed)
