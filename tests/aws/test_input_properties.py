"""Fuzzing the pure AWS-side input handling (hypothesis): any annotation a pod or a
namespace can carry gives a value or a clear refusal, never another exception, and
what comes out is what STS and IAM accept."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kiam.aws.arn import InvalidRoleArn, is_role_arn, resolve_role_arn, role_name
from kiam.aws.session_names import MAX_LENGTH, sts_session_name
from tests.fuzzing import fuzz

pytestmark = pytest.mark.fuzz

FUZZ = fuzz(500)
BASE = "arn:aws:iam::123456789012:role/"
STS_SESSION = re.compile(r"[A-Za-z0-9_+=,.@-]{2,64}")

annotations = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.sampled_from(["arn:", "aws", ":iam::", "123456789012", ":role/", "/", "a", "é",
                         "\u0661", " ", "\n", "path", "*", "..", "x" * 70]),
        max_size=8,
    ).map("".join),
)


@FUZZ
@given(annotation=annotations)
@example(annotation="arn:aws:iam::123456789012:role/r\u00f4le")
@example(annotation="x" * 65)
def test_a_role_annotation_resolves_to_a_valid_arn_or_is_refused(annotation: str) -> None:
    try:
        arn = resolve_role_arn(annotation, BASE)
    except InvalidRoleArn as exc:
        assert str(exc) and "\n" not in str(exc)  # one line, the input shown by repr()
        return
    assert is_role_arn(arn)
    assert arn.isascii()
    assert 1 <= len(role_name(arn)) <= 64
    # resolving is stable: the ARN resolves to itself
    assert resolve_role_arn(arn, BASE) == arn


@FUZZ
@given(annotation=st.text(max_size=100), default=st.sampled_from(["kiam", "cluster-a", ""]))
@example(annotation="my session/1", default="kiam")
@example(annotation="\u00e9" * 80, default="kiam")
def test_a_session_name_is_always_one_sts_accepts(annotation: str, default: str) -> None:
    name = sts_session_name(annotation, default)
    assert STS_SESSION.fullmatch(name), name
    assert name.startswith("kiam-") and len(name) <= MAX_LENGTH
