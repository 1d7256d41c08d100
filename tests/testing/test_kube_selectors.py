"""Field and label selectors: grammar, semantics and the apiserver's refusals (pure)."""

from __future__ import annotations

import pytest

from kiam_testbed.kube import PODS, KubeApiError
from kiam_testbed.kube.resources import field_value
from kiam_testbed.kube.selectors import parse_field_selector, parse_label_selector

POD = {
    "metadata": {"name": "web", "namespace": "team", "labels": {"app": "web", "tier": "3"}},
    "spec": {"nodeName": "node-1", "hostNetwork": True},
    "status": {"phase": "Running", "podIP": "10.0.0.1"},
}


def _fields(text: str) -> bool:
    selector = parse_field_selector(text, supported=PODS.fields)
    return selector.matches(lambda f: field_value(POD, f))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("metadata.name=web", True),
        ("metadata.name==web", True),
        ("metadata.name!=web", False),
        ("metadata.namespace=team,status.phase=Running", True),
        ("metadata.namespace=team,status.phase!=Running", False),
        ("spec.nodeName=node-1", True),
        ("status.podIP=10.0.0.1", True),
        ("status.podIP=10.0.0.2", False),
        ("spec.hostNetwork=true", True),
        ("status.nominatedNodeName=", True),  # a missing field compares as ""
    ],
)
def test_field_selector_semantics(text: str, expected: bool) -> None:
    assert _fields(text) is expected


def test_unsupported_field_is_refused_with_the_apiserver_message() -> None:
    with pytest.raises(KubeApiError) as caught:
        parse_field_selector("spec.foo=bar", supported=PODS.fields)
    assert caught.value.code == 400
    assert caught.value.reason == "BadRequest"
    assert caught.value.status["message"] == "field label not supported: spec.foo"


def test_field_selector_without_operator_is_refused() -> None:
    with pytest.raises(KubeApiError) as caught:
        parse_field_selector("metadata.name", supported=PODS.fields)
    assert caught.value.code == 400


def test_exact_value_of_a_pinned_field() -> None:
    selector = parse_field_selector("metadata.name=a,status.phase!=b", supported=PODS.fields)
    assert selector.exact("metadata.name") == "a"
    assert selector.exact("status.phase") is None


LABELS = {"app": "web", "tier": "3", "example.com/team": "blue"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("missing!=x", True),  # != holds when the label is absent
        ("app in (web,api)", True),
        ("app in (api, db)", False),
        ("app notin (api,db)", True),
        ("missing notin (a)", True),
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("tier>2", True),
        ("tier<2", False),
        ("example.com/team=blue,app in (web),!missing", True),
        ("example.com/team=blue,app=api", False),
    ],
)
def test_label_selector_semantics(text: str, expected: bool) -> None:
    assert parse_label_selector(text).matches(LABELS) is expected


@pytest.mark.parametrize("text", ["app in ()", "a=b=c", "Bad Key=x", "tier>x", "a,,b", "!"])
def test_bad_label_selectors_are_400(text: str) -> None:
    with pytest.raises(KubeApiError) as caught:
        parse_label_selector(text)
    assert caught.value.code == 400
    assert caught.value.status["kind"] == "Status"
