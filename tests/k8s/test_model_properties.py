"""Fuzzing the pod and namespace decoders (hypothesis): whatever JSON the API sends (or
a broken admission webhook lets through), the result is a value with the types kiam
relies on, or ValueError for an object without a name; never another exception."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiam.common.net import normalise_ip
from kiam.k8s.model import namespace_info_from_json, pod_info_from_json
from tests.fuzzing import fuzz

pytestmark = pytest.mark.fuzz

FUZZ = fuzz(150)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
    st.sampled_from(["10.0.0.1", "::1", "fd00::5", "not-an-ip", "Running", "Succeeded"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
fields = st.sampled_from(
    ["metadata", "spec", "status", "name", "namespace", "annotations", "podIP", "podIPs",
     "ip", "phase", "hostNetwork", "deletionTimestamp", "uid", "nodeName",
     "iam.amazonaws.com/role", "iam.amazonaws.com/permitted"]
)
objects = st.dictionaries(fields, st.one_of(json_values, st.dictionaries(fields, json_values)))


@FUZZ
@given(obj=objects)
def test_a_pod_decodes_to_typed_fields_or_value_error(obj: dict[str, Any]) -> None:
    try:
        pod = pod_info_from_json(obj)
    except ValueError as exc:
        assert "metadata.name" in str(exc)
        return
    for text in (pod.namespace, pod.name, pod.uid, pod.phase, pod.node_name, pod.role,
                 pod.session_name, pod.external_id, pod.creation_timestamp):
        assert isinstance(text, str)
    assert pod.name
    assert isinstance(pod.host_network, bool)
    assert pod.deletion_timestamp is None or isinstance(pod.deletion_timestamp, str)
    assert len(set(pod.ips)) == len(pod.ips)
    assert all(normalise_ip(ip) == ip for ip in pod.ips)


@FUZZ
@given(obj=objects)
def test_a_namespace_decodes_to_typed_fields_or_value_error(obj: dict[str, Any]) -> None:
    try:
        namespace = namespace_info_from_json(obj)
    except ValueError as exc:
        assert "metadata.name" in str(exc)
        return
    assert namespace.name and isinstance(namespace.permitted, str)


@FUZZ
@given(
    meta=st.dictionaries(fields, json_values),
    status=st.dictionaries(fields, json_values),
    spec=st.dictionaries(fields, json_values),
)
def test_a_named_pod_always_decodes(
    meta: dict[str, Any], status: dict[str, Any], spec: dict[str, Any]
) -> None:
    obj = {"metadata": {**meta, "name": "p"}, "status": status, "spec": spec}
    assert pod_info_from_json(obj).name == "p"
