"""The resource types the emulator serves, with their defaulting and validation (pure).

Only what kiam touches: core/v1 pods (with the ``status`` subresource), namespaces,
service accounts (with the ``token`` subresource) and events, and events.k8s.io/v1
events. The two event APIs are stored separately (a real
apiserver converts one to the other); kiam writes events and never reads them back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kiam_testbed.kube.errors import JsonObject, KubeApiError, invalid

_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)

_META_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True, slots=True)
class ResourceType:
    key: str
    """How hooks name it: ``pods``, ``namespaces``, ``events``, ``events.events.k8s.io``."""
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    fields: frozenset[str]
    """Fields a field selector may name (others are answered with 400)."""
    allow_create_on_update: bool = False
    """PUT to a missing object creates it (true for events, as in the apiserver)."""
    return_deleted_object: bool = True
    """DELETE answers the object (pods, namespaces) rather than a success ``Status``."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


PODS = ResourceType(
    key="pods",
    group="",
    version="v1",
    plural="pods",
    kind="Pod",
    namespaced=True,
    fields=_META_FIELDS
    | {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    },
)
NAMESPACES = ResourceType(
    key="namespaces",
    group="",
    version="v1",
    plural="namespaces",
    kind="Namespace",
    namespaced=False,
    fields=frozenset({"metadata.name", "status.phase"}),
)
SERVICEACCOUNTS = ResourceType(
    key="serviceaccounts",
    group="",
    version="v1",
    plural="serviceaccounts",
    kind="ServiceAccount",
    namespaced=True,
    fields=_META_FIELDS,
)
"""Stored as given; their ``token`` subresource is a TokenRequest (kiam_testbed.kube.tokens)."""
EVENTS = ResourceType(
    key="events",
    group="",
    version="v1",
    plural="events",
    kind="Event",
    namespaced=True,
    fields=_META_FIELDS
    | {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
    allow_create_on_update=True,
    return_deleted_object=False,
)
EVENTS_V1 = ResourceType(
    key="events.events.k8s.io",
    group="events.k8s.io",
    version="v1",
    plural="events",
    kind="Event",
    namespaced=True,
    fields=_META_FIELDS
    | {
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "reason",
        "reportingController",
        "type",
    },
    allow_create_on_update=True,
    return_deleted_object=False,
)

ALL_TYPES = (PODS, NAMESPACES, SERVICEACCOUNTS, EVENTS, EVENTS_V1)
BY_KEY = {rt.key: rt for rt in ALL_TYPES}
BY_PATH = {(rt.group, rt.version, rt.plural): rt for rt in ALL_TYPES}


def field_value(obj: JsonObject, field: str) -> str:
    """The string a field selector compares against; a missing field is ``""``."""
    if field == "source":
        field = "source.component"
    node: Any = obj
    for part in field.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


Cause = tuple[str, str, str]


def _required(field: str) -> Cause:
    return ("FieldValueRequired", field, "Required value")


def _bad_value(field: str, value: Any, why: str) -> Cause:
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    return ("FieldValueInvalid", field, f"Invalid value: {shown}: {why}")


def _validate_name(rt: ResourceType, name: str) -> list[Cause]:
    if rt is NAMESPACES:
        if len(name) > 63 or not _LABEL_RE.match(name):
            return [_bad_value("metadata.name", name, _LABEL_MSG)]
    elif len(name) > 253 or not _SUBDOMAIN_RE.match(name):
        return [_bad_value("metadata.name", name, _SUBDOMAIN_MSG)]
    return []


def _validate_pod(obj: JsonObject) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [_required("spec.containers")]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [_required("spec.containers")]
    causes: list[Cause] = []
    for i, container in enumerate(containers):
        if not isinstance(container, dict) or not container.get("name"):
            causes.append(_required(f"spec.containers[{i}].name"))
        elif not container.get("image"):
            causes.append(_required(f"spec.containers[{i}].image"))
    return causes


def _validate_core_event(obj: JsonObject) -> list[Cause]:
    namespace = obj.get("metadata", {}).get("namespace", "")
    involved = obj.get("involvedObject") or {}
    causes: list[Cause] = []
    if involved.get("namespace") and involved.get("namespace") != namespace:
        causes.append(
            _bad_value("involvedObject.namespace", involved["namespace"],
                       "does not match event.namespace")
        )
    if obj.get("eventTime"):
        causes += [
            _required(name)
            for name in ("reportingComponent", "reportingInstance", "action")
            if not obj.get(name)
        ]
    event_type = obj.get("type", "")
    if event_type and event_type not in ("Normal", "Warning"):
        causes.append(("FieldValueNotSupported", "type",
                       f'Unsupported value: "{event_type}": supported values: '
                       '"Normal", "Warning"'))
    return causes


def _validate_events_v1(obj: JsonObject) -> list[Cause]:
    causes = [
        _required(name)
        for name in ("eventTime", "reportingController", "reportingInstance", "action", "reason")
        if not obj.get(name)
    ]
    event_type = obj.get("type", "")
    if event_type not in ("Normal", "Warning"):
        causes.append(("FieldValueNotSupported", "type",
                       f'Unsupported value: "{event_type}": supported values: '
                       '"Normal", "Warning"'))
    namespace = obj.get("metadata", {}).get("namespace", "")
    regarding = obj.get("regarding") or {}
    if regarding.get("namespace") and regarding.get("namespace") != namespace:
        causes.append(
            _bad_value("regarding.namespace", regarding["namespace"],
                       "does not match event.namespace")
        )
    return causes


# Pod spec fields a PUT/PATCH may change; every other change is refused, as the apiserver does.
_POD_MUTABLE_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds",
                     "schedulingGates")


def _pod_spec_frozen(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    frozen = {k: v for k, v in spec.items() if k not in _POD_MUTABLE_SPEC}
    for key in ("containers", "initContainers"):
        if isinstance(frozen.get(key), list):
            frozen[key] = [
                {k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c
                for c in frozen[key]
            ]
    return frozen


def validate(rt: ResourceType, obj: JsonObject, old: JsonObject | None) -> None:
    """Raise a 422 ``Invalid`` with the apiserver's causes when ``obj`` is not acceptable."""
    name = obj.get("metadata", {}).get("name", "")
    causes = _validate_name(rt, name)
    if rt is PODS:
        causes += _validate_pod(obj)
        if old is not None and _pod_spec_frozen(obj.get("spec")) != _pod_spec_frozen(
            old.get("spec")
        ):
            causes.append(("FieldValueForbidden", "spec",
                           "Forbidden: pod updates may not change fields other than "
                           "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                           "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
                           "to existing tolerations),`spec.terminationGracePeriodSeconds` "
                           "(allow it to be set to 1 if it was previously negative)"))
    elif rt is EVENTS:
        causes += _validate_core_event(obj)
    elif rt is EVENTS_V1:
        causes += _validate_events_v1(obj)
    if causes:
        raise invalid(kind=rt.kind, group=rt.group, name=name, causes=causes)


def apply_create_defaults(rt: ResourceType, obj: JsonObject) -> None:
    """Server-side defaults a new object gets (in place). ``status`` is reset for pods."""
    name = obj["metadata"]["name"]
    if rt is PODS:
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
        # The apiserver ignores a client's .status on create: only the kubelet sets it.
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif rt is NAMESPACES:
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = name
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}


def require_object(body: Any) -> JsonObject:
    if not isinstance(body, dict):
        raise KubeApiError(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "the body of the request was in an unknown format - "
                "accepted media types include: application/json",
                "reason": "BadRequest",
                "code": 400,
            }
        )
    return body
