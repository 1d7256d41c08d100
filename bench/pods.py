"""Pod bodies shaped like a real cluster's, so list sizes and decode costs are honest.

A real pod is a few kilobytes of JSON (labels, owner references, containers with env and
resources, volumes, tolerations, status conditions ...) of which kiam keeps a dozen
fields. A benchmark on skeleton pods would flatter the baseline's memory and time.
"""

from __future__ import annotations

from typing import Any

ROLE_ANNOTATION = "iam.amazonaws.com/role"


def pod_ip(index: int) -> str:
    """A distinct 10.x address per pod index (up to 16 million pods)."""
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


def node_name(index: int) -> str:
    """The name of node ``index``, as EKS names them."""
    return f"ip-10-{index // 250 % 256}-{index % 250}-17.eu-west-1.compute.internal"


def pod_body(*, namespace: str, name: str, index: int, role: str,
             nodes: int = 50) -> dict[str, Any]:
    """A Deployment-owned pod with two containers, on one of ``nodes`` nodes, Running."""
    app = f"app-{index % 200}"
    node = node_name(index % nodes)
    annotations = {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}
    if role:
        annotations[ROLE_ANNOTATION] = role
    env = [{"name": f"SETTING_{i}", "value": f"value-{i}-{app}"} for i in range(6)]
    container = {
        "name": app,
        "image": f"registry.example.com/team/{app}:1.{index % 7}.3",
        "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
        "env": env,
        "resources": {"limits": {"memory": "512Mi"}, "requests": {"cpu": "250m",
                                                                  "memory": "256Mi"}},
        "volumeMounts": [{"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                          "name": "kube-api-access", "readOnly": True}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"},
                           "periodSeconds": 10, "timeoutSeconds": 1},
        "imagePullPolicy": "IfNotPresent",
        "terminationMessagePath": "/dev/termination-log",
    }
    sidecar = {"name": "log-shipper", "image": "registry.example.com/infra/shipper:4.2",
               "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}
    condition_types = ("Initialized", "Ready", "ContainersReady", "PodScheduled")
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": app, "pod-template-hash": f"7d9f{index % 97:02d}c5b",
                       "team": f"team-{index % 20}"},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": f"{app}-7d9f{index % 97:02d}c5b",
                                 "uid": f"00000000-0000-4000-8000-{index % 200:012d}",
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "nodeName": node,
            "serviceAccountName": app,
            "containers": [container, sidecar],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
            "tolerations": [{"effect": "NoExecute", "key": "node.kubernetes.io/not-ready",
                             "operator": "Exists", "tolerationSeconds": 300}],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "terminationGracePeriodSeconds": 30,
        },
        "status": {
            "phase": "Running",
            "hostIP": f"10.0.{index % nodes % 256}.17",
            "podIP": pod_ip(index),
            "podIPs": [{"ip": pod_ip(index)}],
            "qosClass": "Burstable",
            "startTime": "2026-01-01T00:00:00Z",
            "conditions": [{"type": t, "status": "True",
                            "lastTransitionTime": "2026-01-01T00:00:05Z"}
                           for t in condition_types],
            "containerStatuses": [
                {"name": c["name"], "ready": True, "restartCount": 0, "started": True,
                 "image": c["image"], "imageID": f"{c['image']}@sha256:{'ab' * 32}",
                 "containerID": f"containerd://{index:064x}",
                 "state": {"running": {"startedAt": "2026-01-01T00:00:03Z"}}}
                for c in (container, sidecar)],
        },
    }
