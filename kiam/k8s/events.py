"""Kubernetes Events on pods: ``kubectl describe pod`` shows why kiam refused it.

:meth:`EventRecorder.warning` never blocks the request path: it records into a bounded
buffer (full means dropped and counted) and :meth:`EventRecorder.run` posts core/v1
Events in the background. Repeats of the same (pod, reason, message) are aggregated as
Kubernetes does: while a repeat comes within ``aggregate_window`` of the previous one,
the existing Event's ``count`` and ``lastTimestamp`` are PATCHed instead of creating a
new Event; repeats still waiting in the buffer are folded into one update.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from kiam.k8s.client import KubeClient
from kiam.k8s.errors import KubeError, KubeNotFound
from kiam.k8s.metrics import dropped_events, event_errors
from kiam.k8s.model import PodInfo

log = logging.getLogger(__name__)

ROLE_FORBIDDEN = "KiamRoleForbidden"
CREDENTIAL_ERROR = "KiamCredentialError"

_MAX_MESSAGE = 1024  # the API server's limit for events.k8s.io messages
_MAX_REMEMBERED = 4096

_Key = tuple[str, str, str]  # (pod uid or namespace/name, reason, message)


def _stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(kw_only=True)
class _Pending:
    pod: PodInfo
    reason: str
    message: str
    count: int
    last: float
    """Wall-clock time of the latest repeat."""


@dataclass(kw_only=True)
class _Posted:
    namespace: str
    name: str
    count: int
    last: float


class EventRecorder:
    """Warning Events about pods, posted in the background."""

    def __init__(
        self,
        client: KubeClient,
        *,
        component: str = "kiam",
        host: str = "",
        buffer: int = 1000,
        aggregate_window: float = 600.0,
    ) -> None:
        self._client = client
        self._component = component
        self._host = host
        self._aggregate_window = aggregate_window
        self._queue: asyncio.Queue[_Key] = asyncio.Queue(maxsize=max(1, buffer))
        self._pending: dict[_Key, _Pending] = {}
        self._posted: OrderedDict[_Key, _Posted] = OrderedDict()

    def warning(self, pod: PodInfo, reason: str, message: str) -> None:
        """Record a Warning Event on ``pod``; never blocks (drops when the buffer is full)."""
        message = message[:_MAX_MESSAGE]
        key = (pod.uid or pod.key, reason, message)
        now = time.time()
        pending = self._pending.get(key)
        if pending is not None:
            pending.count += 1
            pending.last = now
            return
        try:
            self._queue.put_nowait(key)
        except asyncio.QueueFull:
            dropped_events.inc()
            return
        self._pending[key] = _Pending(pod=pod, reason=reason, message=message, count=1, last=now)

    async def run(self) -> NoReturn:
        while True:
            key = await self._queue.get()
            pending = self._pending.pop(key)
            try:
                await self._record(key, pending)
            except KubeError as exc:
                event_errors.inc()
                log.warning(
                    "could not record event %s on pod %s: %s", pending.reason, pending.pod.key, exc
                )

    async def _record(self, key: _Key, pending: _Pending) -> None:
        posted = self._posted.get(key)
        if posted is not None and pending.last - posted.last <= self._aggregate_window:
            count = posted.count + pending.count
            path = f"/api/v1/namespaces/{posted.namespace}/events/{posted.name}"
            try:
                await self._client.patch_json(
                    path, {"count": count, "lastTimestamp": _stamp(pending.last)}
                )
            except KubeNotFound:
                pass  # the Event expired (TTL) or was deleted: start a new one
            else:
                posted.count, posted.last = count, pending.last
                self._posted.move_to_end(key)
                return
        self._posted[key] = await self._create(pending)
        self._posted.move_to_end(key)
        while len(self._posted) > _MAX_REMEMBERED:
            self._posted.popitem(last=False)

    async def _create(self, pending: _Pending) -> _Posted:
        pod = pending.pod
        # the same naming scheme as Kubernetes: unique per object and time
        name = f"{pod.name}.{time.time_ns():x}"
        first = pending.last
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": pod.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": pod.namespace,
                "name": pod.name,
                "uid": pod.uid,
            },
            "type": "Warning",
            "reason": pending.reason,
            "message": pending.message,
            "source": {
                "component": self._component,
                **({"host": self._host} if self._host else {}),
            },
            "firstTimestamp": _stamp(first),
            "lastTimestamp": _stamp(pending.last),
            "count": pending.count,
        }
        await self._client.post_json(f"/api/v1/namespaces/{pod.namespace}/events", body)
        log.info(
            "recorded event %s on pod %s",
            pending.reason,
            pod.key,
            extra={"fields": {"pod.namespace": pod.namespace, "pod.name": pod.name}},
        )
        return _Posted(namespace=pod.namespace, name=name, count=pending.count, last=pending.last)
