"""Which pod may have which role: pure decisions, no I/O.

Rules (docs/policy.md):

- the pod must carry an ``iam.amazonaws.com/role`` annotation that resolves (against the
  base ARN) to a valid role ARN;
- the requested role must resolve to that same ARN, or equal its name (the last path
  segment, which is what ``GetPodRole`` answers and IMDS lists);
- the namespace's ``iam.amazonaws.com/permitted`` expression must match the resolved ARN:
  the whole ARN (``fullmatch``) by default, anywhere in it (``search``) with
  ``--disable-strict-namespace-regexp``. A missing or empty expression permits nothing;
  an expression that does not compile on its own permits nothing and the reason names it.

- an ``iam.amazonaws.com/external-id``, when set, must be one STS accepts (2-1224
  characters of ``[\\w+=,.@:/-]``); otherwise every AssumeRole would fail, so the pod is
  refused up front with the reason, without an STS call.

The credentials are always issued for the pod's own annotated role, keyed by
(role ARN, ``kiam-<session name>``, external id).
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass

from kiam.aws.arn import InvalidRoleArn, RoleArn, resolve_role_arn, role_name
from kiam.aws.credentials import CredentialKey
from kiam.aws.session_names import external_id_problem, sts_session_name
from kiam.k8s.model import (
    EXTERNAL_ID_ANNOTATION,
    PERMITTED_ANNOTATION,
    ROLE_ANNOTATION,
    PodInfo,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Allowed:
    """The pod may have its role: these are the credentials to hand out."""

    role_arn: RoleArn
    key: CredentialKey


@dataclass(frozen=True, slots=True, kw_only=True)
class Denied:
    """The request is refused; ``reason`` is one line an operator can act on."""

    reason: str


Decision = Allowed | Denied

@functools.lru_cache(maxsize=256)
def compile_permitted(expression: str) -> re.Pattern[str] | str:
    """The compiled namespace expression, or the reason it does not compile.

    The expression is compiled exactly as the operator wrote it, never wrapped or joined
    into a larger pattern: wrapping can make text that is not an expression compile (see
    docs/policy.md, "the escape"). Strict matching is ``fullmatch`` on this pattern, so
    the anchors cannot be escaped by an unbalanced group and leading flags such as
    ``(?i)`` stay legal. Cached: there are few namespaces, and every request consults one.
    """
    try:
        with warnings.catch_warnings():
            # re warns (FutureWarning) about sets such as "[[" whose meaning may change in
            # a later Python; today's meaning is the one we apply, and the operator's text
            # must not turn into a warning on every server's stderr.
            warnings.simplefilter("ignore")
            return re.compile(expression)
    except re.error as exc:
        return f"invalid {PERMITTED_ANNOTATION} expression {expression!r}: {exc}"


def permits(pattern: re.Pattern[str], role_arn: str, *, strict: bool) -> bool:
    """Strict: the whole ARN matches. Loose: the expression matches anywhere in it."""
    if strict:
        return pattern.fullmatch(role_arn) is not None
    return pattern.search(role_arn) is not None


def namespace_denial(
    *, namespace: str, role_arn: str, permitted: str | None, strict: bool
) -> Denied | None:
    """Why ``namespace`` does not permit ``role_arn``, or None when it does."""
    if not permitted:
        return Denied(
            reason=f"namespace {namespace} has no {PERMITTED_ANNOTATION} annotation, "
            f"so it permits no role (wanted {role_arn})"
        )
    pattern = compile_permitted(permitted)
    if isinstance(pattern, str):
        return Denied(reason=f"namespace {namespace}: {pattern}")
    if not permits(pattern, role_arn, strict=strict):
        return Denied(
            reason=f"namespace {namespace} does not permit role {role_arn} "
            f"({PERMITTED_ANNOTATION}={permitted!r})"
        )
    return None


def pod_role_arn(pod: PodInfo, *, base_arn: str) -> RoleArn | Denied | None:
    """The pod's resolved role ARN; None without a role annotation; Denied when invalid."""
    if not pod.role.strip():
        return None
    try:
        return resolve_role_arn(pod.role, base_arn)
    except InvalidRoleArn as exc:
        return Denied(reason=f"pod {pod.namespace}/{pod.name}: {ROLE_ANNOTATION}: {exc}")


def external_id_denial(pod: PodInfo) -> Denied | None:
    """Why STS would refuse the pod's external ID, or None (the ID itself is never shown)."""
    problem = external_id_problem(pod.external_id)
    if problem is None:
        return None
    return Denied(reason=f"pod {pod.namespace}/{pod.name}: {EXTERNAL_ID_ANNOTATION} {problem}")


def credential_key(pod: PodInfo, role_arn: RoleArn, *, default_session: str) -> CredentialKey:
    """The cache/STS key for ``pod`` assuming ``role_arn``."""
    return CredentialKey(
        role_arn=role_arn,
        session_name=sts_session_name(pod.session_name, default_session),
        external_id=pod.external_id,
    )


def _requested_matches(requested: str, role_arn: RoleArn, *, base_arn: str) -> bool:
    if requested == role_arn or requested == role_name(role_arn):
        return True
    try:
        return resolve_role_arn(requested, base_arn) == role_arn
    except InvalidRoleArn:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The server's settings that decisions depend on."""

    base_arn: str
    """``--role-base-arn`` (or the detected one)."""
    default_session: str = "kiam"
    """``--session``: the session name for pods without the annotation."""
    strict: bool = True
    """False with ``--disable-strict-namespace-regexp``."""

    def decide(self, *, pod: PodInfo, requested_role: str, permitted: str | None) -> Decision:
        """May ``pod`` have ``requested_role`` in a namespace whose expression is ``permitted``?"""
        resolved = self._resolved(pod)
        if isinstance(resolved, Denied):
            return resolved
        requested = requested_role.strip()
        if not _requested_matches(requested, resolved, base_arn=self.base_arn):
            return Denied(
                reason=f"pod {pod.namespace}/{pod.name} is annotated with role {resolved}, "
                f"not {requested or '(empty)'}"
            )
        return self._permit(pod, resolved, permitted)

    def decide_own_role(self, *, pod: PodInfo, permitted: str | None) -> Decision:
        """May ``pod`` have its own annotated role? :meth:`decide` with no requested role
        to compare: token credentials (docs/token-credentials.md), where the token, not
        a path, names the pod, and the pod asks for whatever role it carries."""
        resolved = self._resolved(pod)
        if isinstance(resolved, Denied):
            return resolved
        return self._permit(pod, resolved, permitted)

    def key_for(self, *, pod: PodInfo, permitted: str | None) -> CredentialKey | None:
        """The key ``pod`` would be served under, or None when it would get nothing.

        Used by prefetch and by the credential cache's ``keys_in_use``: the same rules as
        :meth:`decide` for the pod's own role, so nothing is fetched that would be refused.
        """
        decision = self.decide_own_role(pod=pod, permitted=permitted)
        return decision.key if isinstance(decision, Allowed) else None

    def _resolved(self, pod: PodInfo) -> RoleArn | Denied:
        resolved = pod_role_arn(pod, base_arn=self.base_arn)
        if resolved is None:
            return Denied(
                reason=f"pod {pod.namespace}/{pod.name} has no {ROLE_ANNOTATION} annotation"
            )
        return resolved

    def _permit(self, pod: PodInfo, role_arn: RoleArn, permitted: str | None) -> Decision:
        """The namespace and external-ID rules for the pod's own resolved role."""
        denial = namespace_denial(
            namespace=pod.namespace, role_arn=role_arn, permitted=permitted, strict=self.strict
        ) or external_id_denial(pod)
        if denial is not None:
            return denial
        return Allowed(
            role_arn=role_arn,
            key=credential_key(pod, role_arn, default_session=self.default_session),
        )

    def role_name_of(self, pod: PodInfo) -> str:
        """What ``GetPodRole`` answers: the resolved ARN's name; "" without a valid role."""
        resolved = self._resolved(pod)
        return "" if isinstance(resolved, Denied) else role_name(resolved)
