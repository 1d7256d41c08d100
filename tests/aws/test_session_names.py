from __future__ import annotations

import re

import pytest

from kiam.aws.session_names import external_id_problem, sts_session_name


@pytest.mark.parametrize(
    ("annotation", "default", "expected"),
    [
        ("", "kiam", "kiam-kiam"),
        ("  ", "kiam", "kiam-kiam"),
        ("web", "kiam", "kiam-web"),
        ("a+b=c,d.e@f-g_h", "kiam", "kiam-a+b=c,d.e@f-g_h"),
        ("has space", "kiam", "kiam-has-space"),
        ("slash/colon:star*", "kiam", "kiam-slash-colon-star-"),
        ("ünïcode", "kiam", "kiam--n-code"),
        ("", "bad default!", "kiam-bad-default-"),
        ("x" * 100, "kiam", "kiam-" + "x" * 59),
    ],
)
def test_session_names(annotation: str, default: str, expected: str) -> None:
    assert sts_session_name(annotation, default) == expected


@pytest.mark.parametrize("annotation", ["", "a" * 64, "a" * 59, "a" * 60, "日本語" * 30])
def test_always_valid_for_sts(annotation: str) -> None:
    name = sts_session_name(annotation, "kiam")
    assert 2 <= len(name) <= 64
    assert re.fullmatch(r"[\w+=,.@-]+", name, re.ASCII)
    assert name.startswith("kiam-")


BAD_CHARACTERS = "holds characters STS does not accept (only letters, digits and +=,.@:/-_)"


@pytest.mark.parametrize(
    ("external_id", "problem"),
    [
        ("", None),
        ("ab", None),
        ("x" * 1224, None),
        ("a+b=c,d.e@f:g/h-i_j", None),
        ("x", "is 1 characters long; STS accepts 2 to 1224"),
        ("x" * 1225, "is 1225 characters long; STS accepts 2 to 1224"),
        ("a b", BAD_CHARACTERS),
        ("\u00e9\u00e9", BAD_CHARACTERS),
        ("ab\n", BAD_CHARACTERS),
    ],
)
def test_external_id_problem(external_id: str, problem: str | None) -> None:
    assert external_id_problem(external_id) == problem
