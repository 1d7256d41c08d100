"""The few fields of pods and namespaces kiam needs, decoded straight from API JSON.

The pod cache holds one :class:`PodInfo` per pod, so its size is the server's memory per
pod: slots, tuples, and interned strings for values that repeat across many pods
(namespace, phase, node, role ...). Whole pod objects are never kept.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from kiam.common.net import PodIP, normalise_ip

log = logging.getLogger(__name__)

ROLE_ANNOTATION = "iam.amazonaws.com/role"
SESSION_NAME_ANNOTATION = "iam.amazonaws.com/session-name"
EXTERNAL_ID_ANNOTATION = "iam.amazonaws.com/external-id"
PERMITTED_ANNOTATION = "iam.amazonaws.com/permitted"

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

_intern = sys.intern


@dataclass(frozen=True, slots=True, kw_only=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    ips: tuple[PodIP, ...]
    """Normalised pod IPs (all of ``status.podIPs``)."""
    phase: str
    host_network: bool
    deletion_timestamp: str | None
    """RFC 3339; set while the pod terminates: the end of its grace period."""
    node_name: str
    role: str
    """``iam.amazonaws.com/role`` as written; ``""`` when absent."""
    session_name: str
    external_id: str
    creation_timestamp: str
    """RFC 3339 as the API server writes it (second precision, ``Z``)."""
    annotations_digest: int = field(default=0, compare=False, repr=False)
    """Changes when any annotation changes: the server then forgets the STS refusals
    remembered for the pod's key (docs/sts.md)."""

    @property
    def is_live(self) -> bool:
        """Not finished: Pending, Running or Unknown. Finished pods never own an IP."""
        return self.phase not in TERMINAL_PHASES

    @property
    def key(self) -> str:
        """``namespace/name``, for logs and messages."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespaceInfo:
    name: str
    permitted: str
    """``iam.amazonaws.com/permitted`` (a regular expression); ``""`` permits nothing."""
    annotations_digest: int = field(default=0, compare=False, repr=False)
    """Changes when any annotation changes (see :attr:`PodInfo.annotations_digest`)."""


def _digest(annotations: dict[str, Any]) -> int:
    """A hash of every annotation: equal within this process for equal annotations."""
    return hash(frozenset((str(k), str(v)) for k, v in annotations.items()))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _ips(status: dict[str, Any]) -> tuple[PodIP, ...]:
    raw: list[str] = []
    pod_ips = status.get("podIPs")
    if isinstance(pod_ips, list):
        raw = [_str(_dict(entry).get("ip")) for entry in pod_ips]
    if not any(raw):
        raw = [_str(status.get("podIP"))]
    ips: list[PodIP] = []
    for text in raw:
        if not text:
            continue
        try:
            ip = normalise_ip(text)
        except ValueError:
            # one bad entry must not hide the pod's other addresses
            log.warning("ignoring invalid pod IP %r", text)
            continue
        if ip not in ips:
            ips.append(ip)
    return tuple(ips)


def pod_info_from_json(obj: dict[str, Any]) -> PodInfo:
    """Keep what kiam needs from a decoded core/v1 Pod.

    Raises ValueError when the object has no name (not a pod at all).
    """
    meta = _dict(obj.get("metadata"))
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    annotations = _dict(meta.get("annotations"))
    name = _str(meta.get("name"))
    if not name:
        raise ValueError("pod without metadata.name")
    deletion = meta.get("deletionTimestamp")
    return PodInfo(
        namespace=_intern(_str(meta.get("namespace"))),
        name=name,
        uid=_str(meta.get("uid")),
        ips=_ips(status),
        phase=_intern(_str(status.get("phase")) or "Pending"),
        host_network=spec.get("hostNetwork") is True,
        deletion_timestamp=deletion if isinstance(deletion, str) and deletion else None,
        node_name=_intern(_str(spec.get("nodeName"))),
        role=_intern(_str(annotations.get(ROLE_ANNOTATION))),
        session_name=_intern(_str(annotations.get(SESSION_NAME_ANNOTATION))),
        external_id=_intern(_str(annotations.get(EXTERNAL_ID_ANNOTATION))),
        creation_timestamp=_str(meta.get("creationTimestamp")),
        annotations_digest=_digest(annotations),
    )


def namespace_info_from_json(obj: dict[str, Any]) -> NamespaceInfo:
    """Keep the name and the ``permitted`` annotation of a decoded core/v1 Namespace."""
    meta = _dict(obj.get("metadata"))
    name = _str(meta.get("name"))
    if not name:
        raise ValueError("namespace without metadata.name")
    annotations = _dict(meta.get("annotations"))
    return NamespaceInfo(
        name=_intern(name),
        permitted=_intern(_str(annotations.get(PERMITTED_ANNOTATION))),
        annotations_digest=_digest(annotations),
    )
