"""Which pod owns an IP: the rule that decides whose role a request gets.

Pods claim an IP through ``status.podIPs``. Several pod objects can name the same IP at
once because the API keeps pods after their containers stop (finished Jobs, pods held by
finalizers) and because a terminating pod keeps its status until it is removed. The rule:

1. Finished pods (phase Succeeded or Failed) never match: their containers are gone and
   the IP may already belong to someone else. hostNetwork pods never match: their "IP"
   is the node's, shared with every other hostNetwork pod and with the node itself.
2. No claimant left: nobody owns the IP (the caller waits for the watch or gets 404).
3. All remaining claimants would receive the same credentials (same namespace, role,
   session name and external ID): answer the newest (``creationTimestamp``, then ``uid``)
   so the answer is deterministic; which of them asked makes no difference to the
   credentials.
4. They disagree. A terminating pod (``deletionTimestamp`` set) may still be running
   during its grace period and asking for its own credentials, and the API cannot tell
   us whether its network is gone, so preferring the newcomer outright could hand the
   old pod the new pod's role (and the other way round). ``deletionTimestamp`` is the end
   of the grace period: after it (plus :data:`GRACE_MARGIN` for kubelet lag and clock
   skew) the kubelet has killed the containers, so such a pod can no longer ask.
   Only those *expired* terminating claimants are set aside; if the rest agree, rule 3
   picks among them.
5. Otherwise raise :class:`~kiam.k8s.errors.AmbiguousPodIP`: refuse rather than guess.
   The condition is short-lived in a healthy cluster (the kubelet marks the old pod
   finished or it disappears), and SDKs retry.

A CNI does not hand out an IP while the sandbox holding it lives, so rule 4 only refuses
during the short gap between an old pod's teardown and the API learning of it, or when
something is genuinely wrong (duplicate IPs, forged status).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

from kiam.k8s.errors import AmbiguousPodIP
from kiam.k8s.model import PodInfo

GRACE_MARGIN = 5.0
"""Seconds past ``deletionTimestamp`` before a terminating pod is presumed dead."""


def can_own_ip(pod: PodInfo) -> bool:
    """Rule 1: only live, non-hostNetwork pods can ever own an IP."""
    return pod.is_live and not pod.host_network


def credential_identity(pod: PodInfo) -> tuple[str, str, str, str]:
    """What decides the credentials (and namespace policy) a pod receives."""
    return (pod.namespace, pod.role, pod.session_name, pod.external_id)


def _newest(pods: list[PodInfo]) -> PodInfo:
    return max(pods, key=lambda pod: (pod.creation_timestamp, pod.uid))


def _agree(pods: list[PodInfo]) -> bool:
    first = credential_identity(pods[0])
    return all(credential_identity(pod) == first for pod in pods[1:])


def _seconds(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def grace_deadline(pod: PodInfo) -> float | None:
    """Rule 4: when a terminating pod is presumed dead (``deletionTimestamp`` plus
    :data:`GRACE_MARGIN`, seconds since the epoch); None when it is not terminating or
    the timestamp is unreadable (which proves nothing: the pod may be running)."""
    if pod.deletion_timestamp is None:
        return None
    deadline = _seconds(pod.deletion_timestamp)
    return None if deadline is None else deadline + GRACE_MARGIN


def grace_expired(pod: PodInfo, *, now: float) -> bool:
    """Rule 4: terminating and past its grace period (plus margin) at ``now``."""
    deadline = grace_deadline(pod)
    return deadline is not None and now >= deadline


def owner_of_ip(
    candidates: Iterable[PodInfo], *, ip: str = "", now: float | None = None
) -> PodInfo | None:
    """The pod that owns an IP among the pods claiming it (see the module docstring).

    ``now`` is seconds since the epoch (default: the wall clock, which is what
    ``deletionTimestamp`` is measured against). Raises AmbiguousPodIP.
    """
    claimants = [pod for pod in candidates if can_own_ip(pod)]
    if not claimants:
        return None
    if len(claimants) == 1 or _agree(claimants):
        return _newest(claimants)
    when = time.time() if now is None else now
    running = [pod for pod in claimants if not grace_expired(pod, now=when)]
    if running and _agree(running):
        return _newest(running)
    raise AmbiguousPodIP(tuple(sorted(pod.key for pod in claimants)), ip=ip)
