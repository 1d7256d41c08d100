"""A watch-fed cache of the pods that can own an IP, indexed by pod IP.

Live, non-hostNetwork pods are kept and indexed by IP (the others never own an IP, see
:mod:`kiam.k8s.ownership`), each as a small :class:`~kiam.k8s.model.PodInfo`. Live
hostNetwork pods are kept too, by uid only, for token credentials
(:meth:`PodCache.find_by_uid`, docs/token-credentials.md): a token, not an address, names
them. A re-list
replaces the whole state at once, so a pod deleted while the watch was down is gone
after the next list rather than served stale.

Requests for an IP the cache does not know yet wait on a per-IP future that the index
wakes when a pod with that IP arrives: no polling, bounded by the caller's timeout.

Listeners (:meth:`PodCache.add_listener`, the server's node replica) are told of every
change of a cached pod as the watch delivers it, and of each difference a re-list makes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import NoReturn

from kiam.common.net import PodIP
from kiam.k8s.client import KubeClient
from kiam.k8s.metrics import dropped_pods
from kiam.k8s.model import PodInfo, pod_info_from_json
from kiam.k8s.ownership import can_own_ip, credential_identity, owner_of_ip
from kiam.k8s.waiters import KeyedWaiters
from kiam.k8s.watching import DELETED, ListWatch, WatchOptions

log = logging.getLogger(__name__)

PODS_PATH = "/api/v1/pods"

# Most IPs have exactly one claimant: store the PodInfo itself, a tuple only when shared
# (saves a tuple per pod at 50,000 pods).
_Claimants = PodInfo | tuple[PodInfo, ...]

PodListener = Callable[[PodInfo | None, PodInfo | None], None]
"""``listener(old, new)``: a cached pod changed; None for "was not cached" / "is gone"."""


def _key(pod: PodInfo) -> str:
    return pod.uid or pod.key


def _as_tuple(entry: _Claimants) -> tuple[PodInfo, ...]:
    return entry if isinstance(entry, tuple) else (entry,)


def _index(by_ip: dict[PodIP, _Claimants], pod: PodInfo) -> None:
    for ip in pod.ips:
        entry = by_ip.get(ip)
        by_ip[ip] = pod if entry is None else (*_as_tuple(entry), pod)


def _unindex(by_ip: dict[PodIP, _Claimants], pod: PodInfo) -> None:
    key = _key(pod)
    for ip in pod.ips:
        entry = by_ip.get(ip)
        if entry is None:
            continue
        rest = tuple(other for other in _as_tuple(entry) if _key(other) != key)
        if not rest:
            del by_ip[ip]
        else:
            by_ip[ip] = rest[0] if len(rest) == 1 else rest


class PodCache:
    """Pods by IP, kept current by list+watch of all namespaces' pods."""

    def __init__(
        self,
        client: KubeClient,
        *,
        options: WatchOptions,
        announce_buffer: int,
        on_annotations_changed: Callable[[PodInfo], None] | None = None,
    ) -> None:
        self.synced = asyncio.Event()
        """Set once the first full list has been indexed."""
        self._on_annotations_changed = on_annotations_changed
        """Called with a cached pod whose annotations changed (not for new pods)."""
        self.announcements: asyncio.Queue[PodInfo] = asyncio.Queue(maxsize=max(1, announce_buffer))
        """Live pods with a role, new or with changed credentials: for prefetch."""
        self._pods: dict[str, PodInfo] = {}
        self._by_ip: dict[PodIP, _Claimants] = {}
        self._host_network: dict[str, PodInfo] = {}
        """Live hostNetwork pods by uid: never by IP."""
        self._waiters = KeyedWaiters()
        self._uid_waiters = KeyedWaiters()
        self._listeners: list[PodListener] = []
        self.watch = ListWatch(
            client,
            path=PODS_PATH,
            decode=pod_info_from_json,
            on_replace=self._replace,
            on_event=self._apply,
            options=options,
        )

    async def run(self) -> NoReturn:
        await self.watch.run()

    def __len__(self) -> int:
        return len(self._pods)

    def live_pods(self) -> Iterable[PodInfo]:
        """A snapshot of the cached pods (all live and able to own an IP)."""
        return list(self._pods.values())

    def add_listener(self, listener: PodListener) -> None:
        """Call ``listener(old, new)`` after every change of a cached pod (added, changed,
        gone: deleted, finished or hostNetwork), with the cache already updated; a re-list
        calls it for each pod it changes. It must not block."""
        self._listeners.append(listener)

    def claimants(self, ip: PodIP) -> tuple[PodInfo, ...]:
        """Every cached pod naming ``ip`` (normalised), for :func:`owner_of_ip`."""
        entry = self._by_ip.get(ip)
        return () if entry is None else _as_tuple(entry)

    def find_by_ip(self, ip: PodIP) -> PodInfo | None:
        """The pod owning ``ip`` (in :func:`~kiam.common.net.normalise_ip`'s form: the
        caller normalised it where it came in) now, or None. Raises AmbiguousPodIP."""
        entry = self._by_ip.get(ip)
        if entry is None:
            return None
        return owner_of_ip(_as_tuple(entry), ip=ip)

    def find_by_uid(self, uid: str) -> PodInfo | None:
        """The live pod with ``uid``, hostNetwork or not (token credentials), or None."""
        return self._pods.get(uid) or self._host_network.get(uid)

    async def wait_for_uid(self, uid: str, *, timeout: float) -> PodInfo | None:  # noqa: ASYNC109
        """Like :meth:`find_by_uid`, waiting up to ``timeout`` seconds for the watch to
        deliver the pod (a token's pod may ask before its watch event arrives)."""
        return await self._uid_waiters.wait_for(uid, lambda: self.find_by_uid(uid),
                                                timeout=timeout)

    async def wait_for_ip(self, ip: PodIP, *, timeout: float) -> PodInfo | None:  # noqa: ASYNC109
        """Like :meth:`find_by_ip`, but wait up to ``timeout`` seconds for the watch to
        deliver a pod with that IP. None when it is still unknown. Raises AmbiguousPodIP."""
        return await self._waiters.wait_for(ip, lambda: self.find_by_ip(ip), timeout=timeout)

    def _announce(self, pod: PodInfo, old: PodInfo | None) -> None:
        if (
            old is not None
            and old.annotations_digest != pod.annotations_digest
            and self._on_annotations_changed is not None
        ):
            self._on_annotations_changed(pod)
        if not pod.role:
            return
        if old is not None and credential_identity(old) == credential_identity(pod):
            return
        try:
            self.announcements.put_nowait(pod)
        except asyncio.QueueFull:
            dropped_pods.inc()

    def _apply(self, kind: str, pod: PodInfo) -> None:
        key = _key(pod)
        self._host_network.pop(key, None)
        if kind != DELETED and pod.is_live and pod.host_network:
            self._host_network[key] = pod
            self._uid_waiters.wake([key])
        old = self._pods.get(key)
        if old is not None:
            _unindex(self._by_ip, old)
        if kind == DELETED or not can_own_ip(pod):
            if old is not None:
                del self._pods[key]
                self._tell(old, None)
            return
        self._pods[key] = pod
        _index(self._by_ip, pod)
        self._waiters.wake(pod.ips)
        self._uid_waiters.wake([key])
        self._announce(pod, old)
        if old != pod:
            self._tell(old, pod)

    def _tell(self, old: PodInfo | None, new: PodInfo | None) -> None:
        for listener in self._listeners:
            listener(old, new)

    def _replace(self, pods: list[PodInfo]) -> None:
        fresh: dict[str, PodInfo] = {}
        by_ip: dict[PodIP, _Claimants] = {}
        host_network: dict[str, PodInfo] = {}
        for pod in pods:
            if can_own_ip(pod):
                fresh[_key(pod)] = pod
                _index(by_ip, pod)
            elif pod.is_live and pod.host_network:
                host_network[_key(pod)] = pod
        self._host_network = host_network
        old_pods = self._pods
        self._pods, self._by_ip = fresh, by_ip
        gone = len(old_pods.keys() - fresh.keys())
        for key, pod in fresh.items():
            self._announce(pod, old_pods.get(key))
        self._waiters.wake([ip for ip in self._waiters.waiting_keys() if ip in by_ip])
        self._uid_waiters.wake([uid for uid in self._uid_waiters.waiting_keys()
                                if uid in fresh or uid in host_network])
        if gone:
            log.info("re-list removed %d pods deleted while the watch was away", gone)
        if self._listeners:
            for key in old_pods.keys() | fresh.keys():
                before, after = old_pods.get(key), fresh.get(key)
                if before != after:
                    self._tell(before, after)
        self.synced.set()
