"""The node replica's change feed: per node, the entries its agents hold, kept current.

docs/architecture.md, "The node replica". No I/O: the caches call in (their listeners),
streams take their updates out (:class:`Subscription`), and :meth:`NodeFeed.run` only
sleeps until the next moment an entry changes by itself.

1. **Which IPs a node has.** An IP is on a node when a pod the pod cache holds on that
   node (``spec.nodeName``) claims it. Kept for every node from the pod listener, so a
   stream's snapshot needs no scan of the cache.
2. **Entries only for watched nodes.** A node's entries are evaluated
   (:func:`kiam.server.node_entries.evaluate`) while at least one stream watches it: the
   *view*, what its agents hold. A server's work is proportional to the nodes it
   streams to, not to the cluster.
3. **Every change, at once, in order.** A pod change re-evaluates the IPs it touches
   (old and new), a namespace change the IPs its pods own, stored credentials the IPs
   whose entry is for that key, and an IP whose answer changes with time (the end of a
   grace period, credentials falling due) is evaluated again at that moment. An update
   is pushed only when the entry differs from the view's.
4. **Removal before reuse.** An IP that leaves a node is ``removed_ip`` on it; an entry
   that gives an IP to another pod than the view's is preceded by ``removed_ip``; and of
   one change, every removal is pushed before any entry.
5. **A slow stream never blocks.** Pushing appends to each subscription's bounded
   buffer; a buffer that is full ends that subscription (it re-snapshots on reconnect),
   never waits.
6. **An Event per denial decided.** When an entry's policy decision becomes a denial
   for a pod (new, or another reason), a ``KiamRoleForbidden`` Warning is recorded on
   the pod, as the RPC would have (the request may never reach the server now); a
   push of the same decision records nothing.
7. **Credentials ahead of need.** An allowed entry without fresh credentials asks the
   credential cache to fetch them in the background (``fetch``, which never waits and
   does nothing for a key that is fresh, on its way, refused or backing off); they are
   pushed when stored. Prefetch covers new pods; this covers the rest (a namespace that
   starts permitting a role, credentials that fell due without a refresh).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import NoReturn, Protocol

import grpc

from kiam.aws.credentials import CredentialKey, Credentials
from kiam.common.net import PodIP
from kiam.k8s.model import PodInfo
from kiam.server.node_entries import Evaluation, evaluate
from kiam.server.policy import Policy
from kiam.wire import kiam_pb2

log = logging.getLogger(__name__)

ROLE_FORBIDDEN = "KiamRoleForbidden"
_SWEEP_EVERY = 256
"""Credentials stores between sweeps of the stale ones (:meth:`NodeFeed._forget_stale`)."""


class PodIndex(Protocol):
    """What the feed needs of ``kiam.k8s.pod_cache.PodCache``."""

    def claimants(self, ip: PodIP) -> tuple[PodInfo, ...]: ...


class EventSink(Protocol):
    def warning(self, pod: PodInfo, reason: str, message: str) -> None: ...


Update = tuple[kiam_pb2.NodeUpdate, float]
"""A message and when the change it reports was observed (``time.monotonic()``)."""


class Subscription:
    """One stream's updates: a bounded buffer the feed appends to without waiting."""

    def __init__(self, node: str, *, buffer: int) -> None:
        self.node = node
        self._buffer = buffer
        self._updates: deque[Update] = deque()
        self._ready = asyncio.Event()
        self.ended: asyncio.Future[tuple[grpc.StatusCode, str]] = (
            asyncio.get_running_loop().create_future()
        )
        """Resolves with the status the stream must end with (cut off, draining)."""

    def push(self, message: kiam_pb2.NodeUpdate, observed: float) -> None:
        if self.ended.done():
            return
        if len(self._updates) >= self._buffer:
            self.end(
                grpc.StatusCode.ABORTED,
                f"node stream for {self.node} fell {self._buffer} updates behind; "
                "reconnect for a new snapshot",
            )
            return
        self._updates.append((message, observed))
        self._ready.set()

    def end(self, code: grpc.StatusCode, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result((code, reason))
            self._updates.clear()
            self._ready.set()

    def take(self) -> Update | None:
        """The next update, or None when there is none now."""
        if self._updates:
            return self._updates.popleft()
        self._ready.clear()
        return None

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109
        """Until an update is pushed or the stream ends, at most ``timeout`` seconds."""
        if self._updates or self.ended.done():
            return
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            pass


def _removed(ip: str) -> kiam_pb2.NodeUpdate:
    return kiam_pb2.NodeUpdate(removed_ip=ip)


class NodeFeed:
    """See the module docstring. Register :meth:`pod_changed`, :meth:`namespace_changed`
    and :meth:`credentials_stored` as the caches' listeners before they run."""

    def __init__(
        self,
        *,
        pods: PodIndex,
        permitted: Callable[[str], str | None],
        policy: Policy,
        events: EventSink,
        session_refresh: float,
        fetch: Callable[[CredentialKey], None] = lambda key: None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._pods = pods
        self._permitted = permitted
        self._policy = policy
        self._events = events
        self._session_refresh = session_refresh
        self._now = wall_clock
        self._fetch = fetch
        self._nodes_of: dict[PodIP, frozenset[str]] = {}
        self._ips_on: dict[str, set[PodIP]] = {}
        self._views: dict[str, dict[PodIP, Evaluation]] = {}
        self._subscribers: dict[str, set[Subscription]] = {}
        self._credentials: dict[CredentialKey, Credentials] = {}
        self._stores = 0
        self._users: dict[CredentialKey, set[tuple[str, PodIP]]] = {}
        self._scheduled: dict[tuple[str, PodIP], float] = {}
        self._revisits: list[tuple[float, str, PodIP]] = []
        self._wake = asyncio.Event()

    # -- listeners (rule 3) -----------------------------------------------------------

    def pod_changed(self, old: PodInfo | None, new: PodInfo | None) -> None:
        observed = time.monotonic()
        ips = set(old.ips if old is not None else ()) | set(new.ips if new is not None else ())
        touched: list[tuple[PodIP, frozenset[str]]] = []
        for ip in ips:
            before = self._nodes_of.get(ip, frozenset())
            after = frozenset(pod.node_name for pod in self._pods.claimants(ip))
            self._move(ip, before, after)
            touched.append((ip, after))
            for node in before - after:  # rule 4: removals first
                self._remove(node, ip, observed)
        for ip, after in touched:
            for node in after:
                if node in self._views:
                    self._refresh(node, ip, observed)

    def namespace_changed(self, name: str) -> None:
        observed = time.monotonic()
        for node in list(self._views):
            for ip in list(self._ips_on.get(node, ())):
                if any(pod.namespace == name for pod in self._pods.claimants(ip)):
                    self._refresh(node, ip, observed)

    def credentials_stored(self, key: CredentialKey, credentials: Credentials) -> None:
        observed = time.monotonic()
        self._credentials[key] = credentials
        self._stores += 1
        if self._stores % _SWEEP_EVERY == 0:
            self._forget_stale()
        for node, ip in list(self._users.get(key, ())):
            self._refresh(node, ip, observed)

    def _forget_stale(self) -> None:
        """Drop credentials no entry may carry any more (within ``session_refresh`` of
        expiry): a key nobody refreshes (its pods are gone) leaves within a session."""
        now = self._now()
        stale = [key for key, held in self._credentials.items()
                 if held.expiration.timestamp() - self._session_refresh <= now]
        for key in stale:
            del self._credentials[key]

    # -- streams ----------------------------------------------------------------------

    def subscribe(self, node: str, *, buffer: int) -> tuple[list[kiam_pb2.NodeEntry], Subscription]:
        """The node's snapshot and a subscription to every change after it."""
        if node not in self._views:
            self._views[node] = {}
            observed = time.monotonic()
            for ip in list(self._ips_on.get(node, ())):
                self._refresh(node, ip, observed)
        subscription = Subscription(node, buffer=buffer)
        self._subscribers.setdefault(node, set()).add(subscription)
        entries = [e.entry for e in self._views[node].values() if e.entry is not None]
        return entries, subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        node = subscription.node
        subscribers = self._subscribers.get(node)
        if subscribers is None:
            return
        subscribers.discard(subscription)
        if subscribers:
            return
        del self._subscribers[node]
        for ip, evaluation in self._views.pop(node, {}).items():
            self._unuse(node, ip, evaluation)
            self._scheduled.pop((node, ip), None)

    def end_all(self, code: grpc.StatusCode, reason: str) -> None:
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.end(code, reason)

    def watched(self) -> int:
        """Nodes with at least one stream."""
        return len(self._views)

    # -- time (rule 3) ----------------------------------------------------------------

    async def run(self) -> NoReturn:
        """Evaluate again each IP whose answer changes with time, when it does."""
        while True:
            self._wake.clear()
            now = self._now()
            while self._revisits and self._revisits[0][0] <= now:
                when, node, ip = heapq.heappop(self._revisits)
                if self._scheduled.get((node, ip)) == when:
                    del self._scheduled[(node, ip)]
                    if node in self._views:
                        self._refresh(node, ip, time.monotonic())
            timeout = self._revisits[0][0] - now if self._revisits else None
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    # -- the views --------------------------------------------------------------------

    def _move(self, ip: PodIP, before: frozenset[str], after: frozenset[str]) -> None:
        if after:
            self._nodes_of[ip] = after
        else:
            self._nodes_of.pop(ip, None)
        for node in before - after:
            on = self._ips_on.get(node)
            if on is not None:
                on.discard(ip)
                if not on:
                    del self._ips_on[node]
        for node in after - before:
            self._ips_on.setdefault(node, set()).add(ip)

    def _push(self, node: str, message: kiam_pb2.NodeUpdate, observed: float) -> None:
        for subscription in self._subscribers.get(node, ()):
            subscription.push(message, observed)

    def _remove(self, node: str, ip: PodIP, observed: float) -> None:
        view = self._views.get(node)
        if view is None or ip not in view:
            return
        self._unuse(node, ip, view.pop(ip))
        self._scheduled.pop((node, ip), None)
        self._push(node, _removed(ip), observed)

    def _refresh(self, node: str, ip: PodIP, observed: float) -> None:
        view = self._views[node]
        evaluation = evaluate(
            ip,
            self._pods.claimants(ip),
            permitted=self._permitted,
            policy=self._policy,
            cached=self._credentials.get,
            session_refresh=self._session_refresh,
            now=self._now(),
        )
        self._schedule(node, ip, evaluation.revisit_at)
        old = view.get(ip)
        if evaluation.entry is None:
            self._remove(node, ip, observed)
            return
        if old is not None:
            self._unuse(node, ip, old)
        view[ip] = evaluation
        if evaluation.key is not None:
            self._users.setdefault(evaluation.key, set()).add((node, ip))
            if not evaluation.entry.HasField("credentials"):
                self._fetch(evaluation.key)  # rule 7
        if old is not None and old.entry == evaluation.entry:
            return
        if old is not None and old.entry is not None and (
            old.entry.pod_uid != evaluation.entry.pod_uid
        ):
            self._push(node, _removed(ip), observed)  # rule 4: another pod's now
        self._record_denial(old, evaluation)
        self._push(node, kiam_pb2.NodeUpdate(entry=evaluation.entry), observed)

    def _unuse(self, node: str, ip: PodIP, evaluation: Evaluation) -> None:
        if evaluation.key is None:
            return
        users = self._users.get(evaluation.key)
        if users is not None:
            users.discard((node, ip))
            if not users:
                del self._users[evaluation.key]

    def _schedule(self, node: str, ip: PodIP, when: float | None) -> None:
        if when is None:
            self._scheduled.pop((node, ip), None)
            return
        if self._scheduled.get((node, ip)) == when:
            return
        self._scheduled[(node, ip)] = when
        heapq.heappush(self._revisits, (when, node, ip))
        if self._revisits[0][0] == when:
            self._wake.set()

    def _record_denial(self, old: Evaluation | None, new: Evaluation) -> None:
        """Rule 6: once per decision, for pods that ask for a role."""
        pod, reason = new.owner, new.denial
        if pod is None or reason is None or not pod.role:
            return
        if old is not None and old.owner is not None and old.denial == reason and (
            old.owner.uid == pod.uid
        ):
            return
        log.warning(
            "role forbidden: %s",
            reason,
            extra={"fields": {"pod.namespace": pod.namespace, "pod.name": pod.name,
                              "pod.ip": new.entry.ip if new.entry else ""}},
        )
        self._events.warning(pod, ROLE_FORBIDDEN, reason)

