from __future__ import annotations

import pytest

from kiam.k8s.model import NamespaceInfo, PodInfo, namespace_info_from_json, pod_info_from_json
from tests.k8s.factories import pod_json


def test_pod_info_keeps_what_kiam_needs() -> None:
    info = pod_info_from_json(
        pod_json(
            "web",
            namespace="team-a",
            uid="u1",
            ip="10.1.2.3",
            role="reader",
            session_name="web-session",
            external_id="ext-1",
            created="2026-02-03T04:05:06Z",
            deleting="2026-02-03T05:00:00Z",
        )
    )
    assert info == PodInfo(
        namespace="team-a",
        name="web",
        uid="u1",
        ips=("10.1.2.3",),
        phase="Running",
        host_network=False,
        deletion_timestamp="2026-02-03T05:00:00Z",
        node_name="node-1",
        role="reader",
        session_name="web-session",
        external_id="ext-1",
        creation_timestamp="2026-02-03T04:05:06Z",
    )
    assert info.is_live
    assert info.key == "team-a/web"


def test_missing_annotations_default_to_empty() -> None:
    info = pod_info_from_json(pod_json("p"))
    assert (info.role, info.session_name, info.external_id) == ("", "", "")
    assert info.deletion_timestamp is None


def test_all_pod_ips_are_normalised_and_invalid_ones_skipped() -> None:
    info = pod_info_from_json(
        pod_json("p", ips=["10.0.0.7", "not-an-ip", "fd00:0:0::0007", "::ffff:10.0.0.7"])
    )
    assert info.ips == ("10.0.0.7", "fd00::7")


def test_pod_ip_is_the_fallback_without_pod_ips() -> None:
    obj = pod_json("p", ip=None)
    obj["status"]["podIP"] = "10.9.9.9"
    assert pod_info_from_json(obj).ips == ("10.9.9.9",)


def test_pending_pod_without_ip() -> None:
    obj = pod_json("p", ip=None)
    del obj["status"]
    info = pod_info_from_json(obj)
    assert info.ips == ()
    assert info.phase == "Pending"
    assert info.is_live


@pytest.mark.parametrize(
    ("phase", "live"),
    [("Succeeded", False), ("Failed", False), ("Running", True), ("Unknown", True)],
)
def test_is_live(phase: str, live: bool) -> None:
    assert pod_info_from_json(pod_json("p", phase=phase)).is_live is live


def test_host_network() -> None:
    assert pod_info_from_json(pod_json("p", host_network=True)).host_network


def test_repeated_strings_are_shared_between_pods() -> None:
    a = pod_info_from_json(
        pod_json("a", namespace="".join(["team", "-x"]), role="".join(["r", "1"]))
    )
    b = pod_info_from_json(
        pod_json("b", namespace="".join(["team", "-x"]), role="".join(["r", "1"]))
    )
    assert a.namespace is b.namespace
    assert a.role is b.role
    assert a.node_name is b.node_name


def test_pod_info_has_no_instance_dict() -> None:
    info = pod_info_from_json(pod_json("p"))
    assert not hasattr(info, "__dict__")


def test_object_without_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="name"):
        pod_info_from_json({"metadata": {}})


def test_namespace_info() -> None:
    obj = {"metadata": {"name": "ns", "annotations": {"iam.amazonaws.com/permitted": "arn:.*"}}}
    assert namespace_info_from_json(obj) == NamespaceInfo(name="ns", permitted="arn:.*")
    assert namespace_info_from_json({"metadata": {"name": "x"}}).permitted == ""
