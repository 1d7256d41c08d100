"""Credentials ahead of need: what to prefetch when a pod appears, which keys stay in use.

Decisions over what the caches hold, with no I/O of their own:

1. A pod announced by the pod cache (new, or with changed credentials) gets its key
   fetched ahead (:func:`prefetch`) when the policy would serve it, so its first request
   finds credentials waiting.
2. The credential cache refreshes a key only while :func:`keys_in_use` still names it:
   the keys of the live pods the policy would serve. Pods share a handful of
   :func:`~kiam.k8s.ownership.credential_identity` values, so each is decided once.
3. The pod and namespace watches are independent, so a namespace created just before
   its first pod may trail it: :func:`permitted_expression` waits for it, briefly
   (:data:`NAMESPACE_WAIT`), both here and when the service answers a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import NoReturn, Protocol

from kiam.aws.credentials import CredentialKey
from kiam.k8s.model import NamespaceInfo, PodInfo
from kiam.k8s.ownership import credential_identity
from kiam.server.policy import Policy

NAMESPACE_WAIT = 1.0
"""Longest wait for a namespace the cache has not seen yet (it is normally there first)."""


class Namespaces(Protocol):
    """What these decisions need of ``kiam.k8s.namespace_cache.NamespaceCache``."""

    def permitted(self, namespace: str) -> str | None: ...

    async def wait_for_namespace(
        self,
        name: str,
        *,
        timeout: float,  # noqa: ASYNC109
    ) -> NamespaceInfo | None: ...


async def permitted_expression(
    namespaces: Namespaces, namespace: str, *, budget: float = NAMESPACE_WAIT
) -> str | None:
    """The namespace's permitted expression; None when it is still unknown after waiting
    ``budget`` seconds, at most :data:`NAMESPACE_WAIT` (rule 3)."""
    permitted = namespaces.permitted(namespace)
    if permitted is not None:
        return permitted
    wait = min(budget, NAMESPACE_WAIT)
    if wait <= 0:
        return None
    info = await namespaces.wait_for_namespace(namespace, timeout=wait)
    return info.permitted if info is not None else None


def keys_in_use(
    pods: Iterable[PodInfo], *, permitted: Callable[[str], str | None], policy: Policy
) -> set[CredentialKey]:
    """Rule 2: the keys the policy would serve ``pods`` (the pod cache's live pods)."""
    keys: set[CredentialKey] = set()
    decided: dict[tuple[str, str, str, str], CredentialKey | None] = {}
    for pod in pods:
        if pod.host_network or not pod.role:
            continue
        identity = credential_identity(pod)
        if identity not in decided:
            decided[identity] = policy.key_for(pod=pod, permitted=permitted(pod.namespace))
        key = decided[identity]
        if key is not None:
            keys.add(key)
    return keys


async def prefetch(
    *,
    announcements: asyncio.Queue[PodInfo],
    namespaces: Namespaces,
    synced: asyncio.Event,
    policy: Policy,
    fetch: Callable[[CredentialKey], None],
) -> NoReturn:
    """Rule 1, forever: ``fetch`` (which must not wait) each announced pod's key.

    Starts once the namespaces have ``synced``, so the first list's pods are not all
    waited for as unknown namespaces.
    """
    await synced.wait()
    while True:
        pod = await announcements.get()
        permitted = await permitted_expression(namespaces, pod.namespace)
        key = policy.key_for(pod=pod, permitted=permitted)
        if key is not None:
            fetch(key)
