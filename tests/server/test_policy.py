"""Policy decisions as tables: role matching, namespace expressions, keys."""

from __future__ import annotations

import dataclasses

import pytest

from kiam.aws.credentials import CredentialKey
from kiam.k8s.model import PodInfo
from kiam.server.policy import Allowed, Denied, Policy, compile_permitted
from tests.k8s.factories import pod as running_pod

BASE = "arn:aws:iam::123456789012:role/"


def pod(role: str = "app", **changes: object) -> PodInfo:
    info = running_pod("web-1", namespace="team", uid="uid-1", ips=("10.0.0.5",), role=role)
    return dataclasses.replace(info, **changes)  # type: ignore[arg-type]


STRICT = Policy(base_arn=BASE, default_session="kiam", strict=True)
LOOSE = Policy(base_arn=BASE, default_session="kiam", strict=False)


@pytest.mark.parametrize(
    ("annotation", "requested", "permitted", "allowed_arn"),
    [
        # the requested role may be the name, the relative form or the full ARN
        ("app", "app", ".*", BASE + "app"),
        ("app", BASE + "app", ".*", BASE + "app"),
        ("/app", "app", ".*", BASE + "app"),
        ("path/app", "app", ".*", BASE + "path/app"),
        ("path/app", "path/app", ".*", BASE + "path/app"),
        ("path/app", "/path/app", ".*", BASE + "path/app"),
        # a full ARN of another account is kept; the name still matches
        (
            "arn:aws:iam::999999999999:role/other",
            "other",
            "arn:aws:iam::999999999999:role/.*",
            "arn:aws:iam::999999999999:role/other",
        ),
        # the expression is matched against the ARN, anchored
        ("app", "app", BASE + "app", BASE + "app"),
        ("app", "app", BASE + "(app|db)", BASE + "app"),
        ("app", "app", "(?i)ARN:AWS:IAM::123456789012:ROLE/APP", BASE + "app"),
    ],
)
def test_allowed(annotation: str, requested: str, permitted: str, allowed_arn: str) -> None:
    decision = STRICT.decide(pod=pod(annotation), requested_role=requested, permitted=permitted)
    assert decision == Allowed(
        role_arn=allowed_arn,  # type: ignore[arg-type]
        key=CredentialKey(role_arn=allowed_arn, session_name="kiam-kiam"),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("annotation", "requested", "permitted", "reason_part"),
    [
        ("", "app", ".*", "has no iam.amazonaws.com/role annotation"),
        ("   ", "app", ".*", "has no iam.amazonaws.com/role annotation"),
        ("app", "db", ".*", f"annotated with role {BASE}app, not db"),
        ("app", "", ".*", "not (empty)"),
        ("path/app", "other/app", ".*", "not other/app"),
        ("app", "arn:aws:iam::999999999999:role/app", ".*", "annotated with role"),
        (
            "bad name!",
            "bad name!",
            ".*",
            "pod team/web-1: iam.amazonaws.com/role: invalid role 'bad name!': "
            f"'{BASE}bad name!' is not a role ARN",
        ),
        ("app", "app", None, "has no iam.amazonaws.com/permitted annotation"),
        ("app", "app", "", "has no iam.amazonaws.com/permitted annotation"),
        # anchored: a prefix or a name alone does not match the whole ARN
        ("app", "app", "app", "does not permit role"),
        ("app", "app", BASE + "ap", "does not permit role"),
        ("app", "app", BASE + "app.+", "does not permit role"),
        ("app", "app", "([", "invalid iam.amazonaws.com/permitted expression '(['"),
        # an expression that only compiles once wrapped in a group permits nothing
        (
            "admin",
            "admin",
            BASE + "a)|(zzz",
            f"namespace team: invalid iam.amazonaws.com/permitted expression '{BASE}a)|(zzz'",
        ),
        ("zzz", "zzz", BASE + "a)|(zzz", "invalid iam.amazonaws.com/permitted expression"),
        ("a", "a", BASE + "a)|(zzz", "invalid iam.amazonaws.com/permitted expression"),
        ("app-admin", "app-admin", BASE + "app", "does not permit role"),
        ("webx", "webx", BASE + "(app|web)", "does not permit role"),
        # each alternative of full ARNs is anchored, not only the first and the last
        ("app-admin", "app-admin", f"{BASE}app|{BASE}db", "does not permit role"),
        ("x-db", "x-db", f"{BASE}app|{BASE}db", "does not permit role"),
        # "$" before a trailing newline, or (?m) line anchors, do not loosen strict matching
        ("app", "app", f"(?m){BASE}ap$", "does not permit role"),
    ],
)
def test_denied(annotation: str, requested: str, permitted: str | None, reason_part: str) -> None:
    decision = STRICT.decide(pod=pod(annotation), requested_role=requested, permitted=permitted)
    assert isinstance(decision, Denied)
    assert reason_part in decision.reason
    assert "\n" not in decision.reason


def test_empty_alternative_does_not_escape_the_anchor() -> None:
    # "x|" must not become "^x|$" (which would match "" anywhere): it is ^(?:x|)$
    decision = STRICT.decide(pod=pod("app"), requested_role="app", permitted="nothing|")
    assert isinstance(decision, Denied)


@pytest.mark.parametrize(
    ("permitted", "strict_allowed", "loose_allowed"),
    [
        ("app", False, True),
        ("role/", False, True),
        ("^arn:aws:iam::123456789012:role/app$", True, True),
        ("db", False, False),
    ],
)
def test_disable_strict_namespace_regexp_searches(
    permitted: str, strict_allowed: bool, loose_allowed: bool
) -> None:
    for policy, expected in ((STRICT, strict_allowed), (LOOSE, loose_allowed)):
        decision = policy.decide(pod=pod("app"), requested_role="app", permitted=permitted)
        assert isinstance(decision, Allowed) is expected, (policy.strict, permitted)


def test_key_carries_session_name_and_external_id() -> None:
    subject = pod("app", session_name="my session/1", external_id="ext-42")
    decision = STRICT.decide(pod=subject, requested_role="app", permitted=".*")
    assert isinstance(decision, Allowed)
    assert decision.key == CredentialKey(
        role_arn=BASE + "app",  # type: ignore[arg-type]
        session_name="kiam-my-session-1",
        external_id="ext-42",
    )


def test_default_session_name_from_settings() -> None:
    policy = Policy(base_arn=BASE, default_session="cluster-a", strict=True)
    decision = policy.decide(pod=pod("app"), requested_role="app", permitted=".*")
    assert isinstance(decision, Allowed)
    assert decision.key.session_name == "kiam-cluster-a"


def test_key_for_follows_the_same_rules() -> None:
    assert STRICT.key_for(pod=pod("app"), permitted=".*") == CredentialKey(
        role_arn=BASE + "app",  # type: ignore[arg-type]
        session_name="kiam-kiam",
    )
    assert STRICT.key_for(pod=pod(""), permitted=".*") is None
    assert STRICT.key_for(pod=pod("app"), permitted=None) is None
    assert STRICT.key_for(pod=pod("app"), permitted="db") is None
    assert STRICT.key_for(pod=pod("bad name!"), permitted=".*") is None


def test_the_own_role_decision_gives_the_reason() -> None:
    allowed = STRICT.decide_own_role(pod=pod("app"), permitted=".*")
    assert allowed == Allowed(role_arn=BASE + "app",  # type: ignore[arg-type]
                              key=CredentialKey(role_arn=BASE + "app",  # type: ignore[arg-type]
                                                session_name="kiam-kiam"))
    for annotation, permitted, reason in [
        ("", ".*", "has no iam.amazonaws.com/role annotation"),
        ("app", None, "has no iam.amazonaws.com/permitted annotation"),
        ("app", "db", "does not permit role"),
        ("bad name!", ".*", "iam.amazonaws.com/role"),
    ]:
        denied = STRICT.decide_own_role(pod=pod(annotation), permitted=permitted)
        assert isinstance(denied, Denied), annotation
        assert reason in denied.reason


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        ("app", "app"),
        ("path/app", "app"),
        ("arn:aws:iam::999999999999:role/x/other", "other"),
        ("", ""),
        ("bad name!", ""),
    ],
)
def test_role_name_of(annotation: str, name: str) -> None:
    assert STRICT.role_name_of(pod(annotation)) == name


def test_compiled_expressions_are_cached() -> None:
    first = compile_permitted("cached-.*")
    assert compile_permitted("cached-.*") is first
    assert compile_permitted("cached-.+") is not first


def test_strict_is_the_default() -> None:
    # --disable-strict-namespace-regexp is opt-in: a bare Policy anchors the expression
    policy = Policy(base_arn=BASE)
    assert policy.strict is True
    assert isinstance(policy.decide(pod=pod("app"), requested_role="app", permitted="app"), Denied)
    assert policy.key_for(pod=pod("app"), permitted="app") is None


@pytest.mark.parametrize(
    ("annotation", "permitted"),
    [
        # each matches only part of the pod's ARN: strict key_for must not prefetch it
        ("app", "app"),
        ("app-admin", BASE + "app"),
        ("app", "role/app"),
        ("admin", BASE + "a)|(zzz"),
    ],
)
def test_strict_key_for_refuses_a_partial_match(annotation: str, permitted: str) -> None:
    assert STRICT.key_for(pod=pod(annotation), permitted=permitted) is None


def test_loose_key_for_accepts_a_partial_match() -> None:
    assert LOOSE.key_for(pod=pod("app"), permitted="role/app") == CredentialKey(
        role_arn=BASE + "app",  # type: ignore[arg-type]
        session_name="kiam-kiam",
    )


@pytest.mark.parametrize(
    ("annotation", "permitted"),
    [
        ("web", BASE + "(app|web)"),
        ("app", f"{BASE}app|{BASE}db"),
        ("db", f"{BASE}app|{BASE}db"),
        ("app", f"(?i){BASE.upper()}APP"),
        ("app", "(?i)arn:aws:iam::123456789012:ROLE/.*"),
    ],
)
def test_strict_allows_a_whole_match(annotation: str, permitted: str) -> None:
    decision = STRICT.decide(pod=pod(annotation), requested_role=annotation, permitted=permitted)
    assert isinstance(decision, Allowed)
    assert decision.role_arn == BASE + annotation


def test_an_expression_python_warns_about_is_applied_without_a_warning() -> None:
    # re raises FutureWarning for "[[" (pytest turns warnings into errors here)
    assert not isinstance(compile_permitted(BASE + "[[a]"), str)
    decision = STRICT.decide(pod=pod("a"), requested_role="a", permitted=BASE + "[[a]")
    assert isinstance(decision, Allowed)


@pytest.mark.parametrize(
    ("external_id", "problem"),
    [
        ("Q", "is 1 characters long; STS accepts 2 to 1224"),
        ("Q" * 1225, "is 1225 characters long; STS accepts 2 to 1224"),
        ("with space", "holds characters STS does not accept"),
        ("caf\u00e9-id", "holds characters STS does not accept"),
        ("line\nbreak", "holds characters STS does not accept"),
    ],
)
def test_an_external_id_sts_would_refuse_is_refused_without_showing_it(
    external_id: str, problem: str
) -> None:
    subject = pod("app", external_id=external_id)
    decision = STRICT.decide(pod=subject, requested_role="app", permitted=".*")
    assert isinstance(decision, Denied)
    assert decision.reason.startswith(
        f"pod team/web-1: iam.amazonaws.com/external-id {problem}"
    )
    assert external_id not in decision.reason
    assert STRICT.key_for(pod=subject, permitted=".*") is None


@pytest.mark.parametrize("external_id", ["", "ab", "x" * 1224, "a+b=c,d.e@f:g/h-i_j"])
def test_an_external_id_sts_accepts_is_sent(external_id: str) -> None:
    subject = pod("app", external_id=external_id)
    decision = STRICT.decide(pod=subject, requested_role="app", permitted=".*")
    assert isinstance(decision, Allowed)
    assert decision.key.external_id == external_id
    assert STRICT.key_for(pod=subject, permitted=".*") == decision.key
