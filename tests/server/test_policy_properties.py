"""Property tests of the namespace rule (docs/policy.md), over generated role names and
expressions built from the pieces operators write (names, ``.*``, groups, ``|``) and
the pieces that break wrapping (unbalanced parentheses, a trailing backslash)."""

from __future__ import annotations

import re
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiam.server.policy import Allowed, Denied, Policy
from tests.fuzzing import fuzz
from tests.server.test_policy import BASE, pod

pytestmark = pytest.mark.fuzz

STRICT = Policy(base_arn=BASE, strict=True)
LOOSE = Policy(base_arn=BASE, strict=False)

role_names = st.text(alphabet="abcxyz-_.@=", min_size=1, max_size=12)
fragments = st.one_of(
    role_names,
    st.sampled_from(
        [BASE, "arn:aws:iam::", "role/", ".*", ".+", "(", ")", "|", ")|(", "\\", "[", "]",
         "(?i)", "^", "$", "a)|(", "?"]
    ),
)
expressions = st.lists(fragments, min_size=0, max_size=6).map("".join)


def _compiles(expression: str) -> re.Pattern[str] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "[[" and such: see kiam/server/policy.py
            return re.compile(expression)
    except re.error:
        return None


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "loose"])
@fuzz(300)
@given(name=role_names, expression=expressions)
def test_permitted_exactly_when_the_bare_expression_compiles_and_matches(
    strict: bool, name: str, expression: str
) -> None:
    # strict: fullmatch of the whole ARN; loose: found anywhere in it
    arn = BASE + name
    policy = STRICT if strict else LOOSE
    decision = policy.decide(pod=pod(name), requested_role=name, permitted=expression)
    bare = _compiles(expression)
    matched = bare is not None and (
        bare.fullmatch(arn) if strict else bare.search(arn)
    ) is not None
    assert isinstance(decision, Allowed) is (bool(expression) and matched), (arn, expression)
    if isinstance(decision, Denied) and expression and bare is None:
        assert "invalid iam.amazonaws.com/permitted expression" in decision.reason


@fuzz(300)
@given(name=role_names, expression=expressions)
def test_strict_never_permits_more_than_loose(name: str, expression: str) -> None:
    strict = STRICT.decide(pod=pod(name), requested_role=name, permitted=expression)
    loose = LOOSE.decide(pod=pod(name), requested_role=name, permitted=expression)
    if isinstance(strict, Allowed):
        assert loose == strict


@fuzz(200)
@given(name=role_names, missing=st.sampled_from([None, ""]), strict=st.booleans())
def test_a_namespace_without_the_annotation_permits_nothing(
    name: str, missing: str | None, strict: bool
) -> None:
    policy = STRICT if strict else LOOSE
    decision = policy.decide(pod=pod(name), requested_role=name, permitted=missing)
    assert isinstance(decision, Denied)
    assert "has no iam.amazonaws.com/permitted annotation" in decision.reason
    assert policy.key_for(pod=pod(name), permitted=missing) is None


@fuzz(200)
@given(name=role_names, other=role_names)
def test_an_exact_arn_permits_only_that_role(name: str, other: str) -> None:
    expression = re.escape(BASE + name)
    decision = STRICT.decide(pod=pod(other), requested_role=other, permitted=expression)
    assert isinstance(decision, Allowed) is (other == name)
