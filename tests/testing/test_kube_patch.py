"""Merge patch (RFC 7386) and JSON patch (RFC 6902) as the emulator applies them (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from kiam_testbed.kube.patch import PatchError, json_patch, merge_patch


def test_merge_patch_merges_objects_and_deletes_nulls_without_touching_inputs() -> None:
    target = {"metadata": {"labels": {"a": "1", "b": "2"}}, "count": 1, "list": [1, 2]}
    patch: dict[str, Any] = {"metadata": {"labels": {"a": None, "c": "3"}}, "count": 2,
                             "list": [3]}
    assert merge_patch(target, patch) == {
        "metadata": {"labels": {"b": "2", "c": "3"}},
        "count": 2,
        "list": [3],
    }
    assert target["metadata"] == {"labels": {"a": "1", "b": "2"}}


def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2]}, "c": "x"}
    ops = [
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "replace", "path": "/c", "value": "y"},
        {"op": "add", "path": "/d~1e", "value": {}},
        {"op": "copy", "from": "/c", "path": "/f"},
        {"op": "move", "from": "/f", "path": "/g"},
        {"op": "remove", "path": "/a/b/0"},
        {"op": "test", "path": "/g", "value": "y"},
    ]
    assert json_patch(doc, ops) == {"a": {"b": [2, 3]}, "c": "y", "d/e": {}, "g": "y"}
    assert doc == {"a": {"b": [1, 2]}, "c": "x"}


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/c", "value": "no"}],
        [{"op": "replace", "path": "/missing", "value": 1}],
        [{"op": "remove", "path": "/a/b/9"}],
        [{"op": "frobnicate", "path": "/c"}],
        {"op": "add"},
    ],
)
def test_json_patch_refuses_what_does_not_apply(ops: Any) -> None:
    with pytest.raises(PatchError):
        json_patch({"a": {"b": [1]}, "c": "x"}, ops)
