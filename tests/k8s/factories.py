"""Pod and namespace JSON as the API server writes it, and PodInfo values, for tests."""

from __future__ import annotations

from typing import Any

from kiam.k8s.model import PodInfo


def pod_json(
    name: str,
    *,
    namespace: str = "default",
    uid: str | None = None,
    ip: str | None = "10.0.0.1",
    ips: list[str] | None = None,
    phase: str = "Running",
    role: str | None = None,
    session_name: str | None = None,
    external_id: str | None = None,
    host_network: bool = False,
    node: str = "node-1",
    created: str = "2026-01-01T00:00:00Z",
    deleting: str | None = None,
) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    if role is not None:
        annotations["iam.amazonaws.com/role"] = role
    if session_name is not None:
        annotations["iam.amazonaws.com/session-name"] = session_name
    if external_id is not None:
        annotations["iam.amazonaws.com/external-id"] = external_id
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{namespace}-{name}",
        "creationTimestamp": created,
        "resourceVersion": "1",
        "annotations": annotations,
    }
    if deleting is not None:
        meta["deletionTimestamp"] = deleting
    status: dict[str, Any] = {"phase": phase}
    if ips is not None:
        status["podIPs"] = [{"ip": value} for value in ips]
        if ips:
            status["podIP"] = ips[0]
    elif ip is not None:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    spec: dict[str, Any] = {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def pod(
    name: str = "p",
    *,
    namespace: str = "default",
    uid: str | None = None,
    ips: tuple[str, ...] = ("10.0.0.1",),
    phase: str = "Running",
    host_network: bool = False,
    deleting: str | None = None,
    role: str = "",
    session_name: str = "",
    external_id: str = "",
    created: str = "2026-01-01T00:00:00Z",
) -> PodInfo:
    return PodInfo(
        namespace=namespace,
        name=name,
        uid=uid or f"uid-{namespace}-{name}",
        ips=ips,
        phase=phase,
        host_network=host_network,
        deletion_timestamp=deleting,
        node_name="node-1",
        role=role,
        session_name=session_name,
        external_id=external_id,
        creation_timestamp=created,
    )
