"""What the webhook does to a pod: the decision and the JSON patch (docs/token-credentials.md).

Pure: a decoded core/v1 Pod in, a :class:`Patch` or a :class:`Declined` out. A pod is
changed when it has an ``iam.amazonaws.com/role`` annotation and is hostNetwork (its
source address is the node's, so the metadata path can never name it) or carries
:data:`OPT_IN_ANNOTATION` ``"true"``. Then every container and init container gets the
two variables the AWS SDKs read for the container credentials provider, and the pod a
projected service-account token volume for :attr:`TokenSettings.audience`, mounted
read-only where the token file variable points.

Idempotent: what is already there (the volume by name, a mount at the path, a variable by
name, whatever its value) is left alone, so a pod patched once, or one whose author set a
variable on purpose, is not changed again. Nothing here raises on odd input: an object
that is not a pod the webhook understands is declined with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROLE_ANNOTATION = "iam.amazonaws.com/role"
OPT_IN_ANNOTATION = "iam.amazonaws.com/token-credentials"
"""``"true"`` opts a pod that is not hostNetwork into token credentials."""
VOLUME_NAME = "kiam-token"
TOKEN_DIRECTORY = "/var/run/secrets/kiam/serviceaccount"
TOKEN_FILE = "token"
URI_VARIABLE = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
TOKEN_FILE_VARIABLE = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
DEFAULT_URI = "http://169.254.170.23/v1/credentials"
"""The agent's container credentials endpoint (IPv4); ``http://[fd00:ec2::23]/...`` on
IPv6 clusters. The SDKs accept plain HTTP only to loopback and these two addresses."""

JsonPatch = list[dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class TokenSettings:
    audience: str = "kiam"
    expiration_seconds: int = 3600
    """The kubelet renews a projected token at 80% of its life; the API server's floor is
    600 seconds."""
    credentials_uri: str = DEFAULT_URI


@dataclass(frozen=True)
class Patch:
    operations: JsonPatch
    """RFC 6902 operations; empty when the pod already has everything."""


@dataclass(frozen=True)
class Declined:
    reason: str
    """Why the pod is left as it is (one line, for the log)."""


def _list_of_dicts(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        return None
    return value


def wants_token_credentials(pod: dict[str, Any]) -> Declined | None:
    """None when the pod is to be changed, else why not."""
    metadata = pod.get("metadata")
    spec = pod.get("spec")
    if not isinstance(metadata, dict) or not isinstance(spec, dict):
        return Declined("not a pod: no metadata or spec")
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, dict):
        return Declined("metadata.annotations is not a map")
    role = annotations.get(ROLE_ANNOTATION)
    if not isinstance(role, str) or not role.strip():
        return Declined(f"no {ROLE_ANNOTATION} annotation")
    if spec.get("hostNetwork") is True:
        return None
    if annotations.get(OPT_IN_ANNOTATION) == "true":
        return None
    return Declined(f'neither hostNetwork nor {OPT_IN_ANNOTATION}: "true"')


def token_volume(settings: TokenSettings) -> dict[str, Any]:
    return {
        "name": VOLUME_NAME,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": settings.audience,
                        "expirationSeconds": settings.expiration_seconds,
                        "path": TOKEN_FILE,
                    }
                }
            ]
        },
    }


def _container_operations(
    path: str, container: dict[str, Any], settings: TokenSettings
) -> JsonPatch | Declined:
    env = _list_of_dicts(container.get("env"))
    mounts = _list_of_dicts(container.get("volumeMounts"))
    if env is None or mounts is None:
        return Declined(f"{path}: env or volumeMounts is not a list of objects")
    operations: JsonPatch = []
    wanted = {
        URI_VARIABLE: settings.credentials_uri,
        TOKEN_FILE_VARIABLE: f"{TOKEN_DIRECTORY}/{TOKEN_FILE}",
    }
    present = {item.get("name") for item in env}
    missing = [{"name": name, "value": value} for name, value in wanted.items()
               if name not in present]
    if missing and container.get("env") is None:
        operations.append({"op": "add", "path": f"{path}/env", "value": missing})
    else:
        operations += [{"op": "add", "path": f"{path}/env/-", "value": item} for item in missing]
    mounted = any(
        item.get("name") == VOLUME_NAME or item.get("mountPath") == TOKEN_DIRECTORY
        for item in mounts
    )
    if not mounted:
        mount = {"name": VOLUME_NAME, "mountPath": TOKEN_DIRECTORY, "readOnly": True}
        if container.get("volumeMounts") is not None:
            operations.append({"op": "add", "path": f"{path}/volumeMounts/-", "value": mount})
        else:
            operations.append({"op": "add", "path": f"{path}/volumeMounts", "value": [mount]})
    return operations


def mutate(pod: dict[str, Any], settings: TokenSettings) -> Patch | Declined:
    """The patch that gives ``pod`` token credentials, or why it gets none."""
    declined = wants_token_credentials(pod)
    if declined is not None:
        return declined
    spec: dict[str, Any] = pod["spec"]
    volumes = _list_of_dicts(spec.get("volumes"))
    if volumes is None:
        return Declined("spec.volumes is not a list of objects")
    operations: JsonPatch = []
    if not any(volume.get("name") == VOLUME_NAME for volume in volumes):
        volume = token_volume(settings)
        if spec.get("volumes") is not None:
            operations.append({"op": "add", "path": "/spec/volumes/-", "value": volume})
        else:
            operations.append({"op": "add", "path": "/spec/volumes", "value": [volume]})
    for kind in ("initContainers", "containers"):
        containers = _list_of_dicts(spec.get(kind))
        if containers is None:
            return Declined(f"spec.{kind} is not a list of objects")
        for index, container in enumerate(containers):
            done = _container_operations(f"/spec/{kind}/{index}", container, settings)
            if isinstance(done, Declined):
                return done
            operations += done
    return Patch(operations)
