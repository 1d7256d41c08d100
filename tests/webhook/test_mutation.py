"""The webhook's decision and patch (kiam/webhook/mutation.py), applied with a JSON-patch
library as the API server applies it."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiam.webhook.mutation import (
    OPT_IN_ANNOTATION,
    ROLE_ANNOTATION,
    TOKEN_DIRECTORY,
    TOKEN_FILE_VARIABLE,
    URI_VARIABLE,
    VOLUME_NAME,
    Declined,
    Patch,
    TokenSettings,
    mutate,
)
from tests.fuzzing import fuzz

pytestmark = pytest.mark.fuzz

SETTINGS = TokenSettings(audience="kiam", expiration_seconds=3600)


def pod(*, role: str | None = "reader", host_network: bool = False, opt_in: str | None = None,
        containers: int = 1, init_containers: int = 0, **spec: Any) -> dict[str, Any]:
    annotations = {}
    if role is not None:
        annotations[ROLE_ANNOTATION] = role
    if opt_in is not None:
        annotations[OPT_IN_ANNOTATION] = opt_in
    body: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "image": "app"} for i in range(containers)],
        **spec,
    }
    if host_network:
        body["hostNetwork"] = True
    if init_containers:
        body["initContainers"] = [{"name": f"i{i}", "image": "init"}
                                  for i in range(init_containers)]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "team", "annotations": annotations},
            "spec": body}


def applied(obj: dict[str, Any]) -> dict[str, Any]:
    result = mutate(obj, SETTINGS)
    assert isinstance(result, Patch), result
    return jsonpatch.apply_patch(obj, result.operations)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (pod(role=None, host_network=True), ROLE_ANNOTATION),
        (pod(role="  ", host_network=True), ROLE_ANNOTATION),
        (pod(), "neither hostNetwork"),
        (pod(opt_in="yes"), "neither hostNetwork"),
        ({"kind": "Pod"}, "not a pod"),
    ],
    ids=["no-role", "blank-role", "not-opted-in", "opt-in-not-true", "no-spec"],
)
def test_pods_left_alone_say_why(obj: dict[str, Any], reason: str) -> None:
    result = mutate(obj, SETTINGS)
    assert isinstance(result, Declined)
    assert reason in result.reason


@pytest.mark.parametrize("obj", [pod(host_network=True, init_containers=2, containers=3),
                                 pod(opt_in="true")], ids=["hostNetwork", "opted-in"])
def test_every_container_gets_the_variables_and_the_token(obj: dict[str, Any]) -> None:
    patched = applied(obj)
    spec = patched["spec"]
    [volume] = [v for v in spec["volumes"] if v["name"] == VOLUME_NAME]
    token = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"audience": "kiam", "expirationSeconds": 3600, "path": "token"}
    for container in spec.get("initContainers", []) + spec["containers"]:
        assert _env(container) == {
            URI_VARIABLE: "http://169.254.170.23/v1/credentials",
            TOKEN_FILE_VARIABLE: f"{TOKEN_DIRECTORY}/token",
        }
        assert container["volumeMounts"] == [
            {"name": VOLUME_NAME, "mountPath": TOKEN_DIRECTORY, "readOnly": True}
        ]
    # nothing else changed
    assert patched["metadata"] == obj["metadata"]
    images = [c["image"] for c in obj["spec"]["containers"]]
    assert [c["image"] for c in spec["containers"]] == images


def test_a_second_pass_changes_nothing() -> None:
    once = applied(pod(host_network=True, init_containers=1, containers=2))
    assert mutate(once, SETTINGS) == Patch([])


def test_what_the_author_set_is_kept_and_appended_to() -> None:
    obj = pod(host_network=True, volumes=[{"name": "data", "emptyDir": {}}])
    obj["spec"]["containers"][0]["env"] = [{"name": URI_VARIABLE, "value": "http://127.0.0.1:9/x"},
                                           {"name": "OTHER", "value": "1"}]
    obj["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    patched = applied(obj)
    container = patched["spec"]["containers"][0]
    assert _env(container) == {URI_VARIABLE: "http://127.0.0.1:9/x", "OTHER": "1",
                               TOKEN_FILE_VARIABLE: f"{TOKEN_DIRECTORY}/token"}
    assert [m["name"] for m in container["volumeMounts"]] == ["data", VOLUME_NAME]
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["data", VOLUME_NAME]


def test_null_lists_are_replaced_not_appended_to() -> None:
    obj = pod(host_network=True, volumes=None)
    obj["spec"]["containers"][0]["env"] = None
    patched = applied(obj)
    assert len(patched["spec"]["volumes"]) == 1
    assert len(patched["spec"]["containers"][0]["env"]) == 2


def test_settings_reach_the_patch() -> None:
    settings = TokenSettings(audience="sts.example", expiration_seconds=900,
                             credentials_uri="http://[fd00:ec2::23]/v1/credentials")
    obj = pod(host_network=True)
    result = mutate(obj, settings)
    assert isinstance(result, Patch)
    patched = jsonpatch.apply_patch(obj, result.operations)
    token = patched["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    assert (token["audience"], token["expirationSeconds"]) == ("sts.example", 900)
    assert _env(patched["spec"]["containers"][0])[URI_VARIABLE] == settings.credentials_uri


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=12,
)
spec_keys = st.sampled_from(["containers", "initContainers", "volumes", "hostNetwork"])
odd_specs = st.dictionaries(spec_keys, json_values, max_size=4)


@fuzz(300)
@given(spec=odd_specs, annotations=st.dictionaries(
    st.sampled_from([ROLE_ANNOTATION, OPT_IN_ANNOTATION, "x"]), json_values, max_size=3))
def test_any_object_is_patched_validly_or_declined(spec: dict[str, Any],
                                                   annotations: dict[str, Any]) -> None:
    obj = {"metadata": {"name": "p", "annotations": annotations}, "spec": spec}
    before = copy.deepcopy(obj)
    result = mutate(obj, SETTINGS)
    assert obj == before  # the input is never modified
    if isinstance(result, Declined):
        assert result.reason and "\n" not in result.reason
        return
    patched = jsonpatch.apply_patch(obj, result.operations)
    assert mutate(patched, SETTINGS) == Patch([])
