"""``KubeEmulator``: the store, its HTTP server, and the hooks tests and the demo drive."""

from __future__ import annotations

import asyncio
import builtins
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from kiam_testbed.kube import errors
from kiam_testbed.kube.app import Handler, WatchSettings, build_app, status_response
from kiam_testbed.kube.errors import JsonObject
from kiam_testbed.kube.patch import merge_patch
from kiam_testbed.kube.resources import (
    BY_KEY,
    EVENTS,
    EVENTS_V1,
    NAMESPACES,
    PODS,
    SERVICEACCOUNTS,
    ResourceType,
)
from kiam_testbed.kube.store import Store, copy_json
from kiam_testbed.kube.tokens import TokenAuthority

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
CONTEXT_NAME = "kiam-emulator"
DEFAULT_IMAGE = "registry.invalid/app:1"

Resource = str | ResourceType


def _rt(resource: Resource) -> ResourceType:
    if isinstance(resource, ResourceType):
        return resource
    try:
        return BY_KEY[resource]
    except KeyError:
        raise ValueError(f"unknown resource {resource!r}; known: {sorted(BY_KEY)}") from None


@dataclass(slots=True)
class Fault:
    """Answer the next ``remaining`` matching requests with ``status`` and/or after ``delay``.

    ``status=None`` with a ``delay`` only slows the request down; it is then served
    normally. ``hits`` counts the requests it has answered.
    """

    method: str | None
    path: re.Pattern[str]
    query: re.Pattern[str] | None
    status: int | None
    body: JsonObject | None
    delay: float
    remaining: int
    hits: int = 0

    def matches(self, request: web.Request) -> bool:
        if self.remaining <= 0:
            return False
        if self.method is not None and request.method != self.method.upper():
            return False
        if not self.path.search(request.path):
            return False
        return self.query is None or bool(self.query.search(request.query_string))


@dataclass(slots=True)
class _Waiters:
    """Wakes ``wait_for`` callers on every change, request and watch open/close."""

    events: set[asyncio.Event] = field(default_factory=set)

    def pulse(self) -> None:
        for event in self.events:
            event.set()


class KubeEmulator:
    """The Kubernetes apiserver HTTP API, in memory. See the package docstring."""

    def __init__(
        self,
        *,
        history_size: int = 10_000,
        bookmark_interval: float = 60.0,
        watch_timeout: float = 1800.0,
        namespaces: Iterable[str] = DEFAULT_NAMESPACES,
        shutdown_timeout: float = 2.0,
    ) -> None:
        self.store = Store(history_size=history_size)
        self.watch_settings = WatchSettings(bookmark_interval=bookmark_interval,
                                            default_timeout=watch_timeout)
        self.faults: list[Fault] = []
        self.tokens = TokenAuthority()
        """Signs TokenRequests and answers TokenReviews (kiam_testbed.kube.tokens)."""
        self._counts: Counter[tuple[str, str, bool]] = Counter()
        self._waiters = _Waiters()
        self.store.listeners.append(self._waiters.pulse)
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self.url = ""
        for name in namespaces:
            self.create_namespace(name)

    # ---- lifecycle ---------------------------------------------------------------

    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: any free port); returns :attr:`url`."""
        app = build_app(self.store, self.watch_settings, middlewares=[self._middleware],
                        tokens=self.tokens)
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               handler_cancellation=True,
                               shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        sockname = runner.addresses[0]
        bound_host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
        self.url = f"http://{bound_host}:{sockname[1]}"
        return self.url

    async def stop(self) -> None:
        """Close every watch, cancel grace timers, stop serving. Safe to call twice."""
        self.store.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await asyncio.shield(runner.cleanup())

    async def __aenter__(self) -> KubeEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def kubeconfig(self) -> JsonObject:
        """A kubeconfig for :attr:`url`: plain http, no credentials, all named
        ``kiam-emulator``."""
        if not self.url:
            raise RuntimeError("start() the emulator first")
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CONTEXT_NAME, "cluster": {"server": self.url}}],
            "users": [{"name": CONTEXT_NAME, "user": {}}],
            "contexts": [{"name": CONTEXT_NAME, "context": {
                "cluster": CONTEXT_NAME, "user": CONTEXT_NAME, "namespace": "default"}}],
            "current-context": CONTEXT_NAME,
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | Path) -> Path:
        """Write :meth:`kubeconfig` (JSON is YAML) to ``path``; returns the path."""
        target = Path(path)
        target.write_bytes(orjson.dumps(self.kubeconfig(), option=orjson.OPT_INDENT_2))
        return target

    # ---- request accounting and faults -------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        watch = (request.query.get("watch", "").lower() in ("true", "1")
                 or "/watch/" in request.path)
        self._counts[(request.method, request.path, watch)] += 1
        self._waiters.pulse()
        for fault in self.faults:
            if fault.matches(request):
                fault.remaining -= 1
                fault.hits += 1
                if fault.delay > 0:
                    await asyncio.sleep(fault.delay)
                if fault.status is not None:
                    body = fault.body or errors.status_body(
                        code=fault.status, message=f"injected fault ({fault.status})")
                    return status_response({**body, "code": fault.status})
                break
        return await handler(request)

    def inject_fault(
        self,
        *,
        method: str | None = None,
        path: str = "",
        query: str | None = None,
        status: int | None = None,
        body: JsonObject | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> Fault:
        """Fail (``status``, optional ``Status`` ``body``) or slow (``delay`` seconds) the
        next ``times`` requests whose method is ``method`` and whose path matches the
        regex ``path`` (``re.search``; ``query`` likewise against the raw query string)."""
        if status is None and delay <= 0:
            raise ValueError("a fault needs a status, a delay, or both")
        fault = Fault(method=method, path=re.compile(path),
                      query=re.compile(query) if query is not None else None,
                      status=status, body=body, delay=delay, remaining=times)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def request_count(
        self, method: str | None = None, path: str | None = None, *, watch: bool | None = None
    ) -> int:
        """Requests seen (faulted ones included); ``path`` is a regex fully matched against
        the path without the query; ``watch`` narrows to watches or to non-watches."""
        pattern = re.compile(path) if path is not None else None
        return sum(
            n for (m, p, w), n in self._counts.items()
            if (method is None or m == method.upper())
            and (pattern is None or pattern.fullmatch(p))
            and (watch is None or w == watch)
        )

    def reset_counts(self) -> None:
        self._counts.clear()

    def stats(self) -> dict[str, int]:
        """Sizes of the emulator's state (objects, history, watchers, timers, faults,
        distinct request keys, waiters): what must not grow with the number of requests."""
        return {
            **self.store.stats(),
            "faults": len(self.faults),
            "request_keys": len(self._counts),
            "waiters": len(self._waiters.events),
        }

    # ---- watches -----------------------------------------------------------------

    def watcher_count(self, resource: Resource | None = None) -> int:
        return len(self.store.watchers(_rt(resource) if resource is not None else None))

    def drop_watches(self, resource: Resource | None = None) -> int:
        """End every open watch stream (of ``resource``) now; returns how many."""
        watchers = self.store.watchers(_rt(resource) if resource is not None else None)
        for watcher in watchers:
            watcher.close()
        return len(watchers)

    def send_bookmark(self, resource: Resource | None = None) -> int:
        """A BOOKMARK now on every watch (of ``resource``) that allows bookmarks."""
        watchers = [w for w in self.store.watchers(_rt(resource) if resource else None)
                    if w.bookmarks]
        for watcher in watchers:
            watcher.want_bookmark()
        return len(watchers)

    def compact(self) -> int:
        """Drop the change history: watching from any older version now gets 410."""
        return self.store.compact()

    @property
    def resource_version(self) -> int:
        return self.store.rv

    async def wait_for(self, predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` holds; re-checked on every change and request."""
        event = asyncio.Event()
        self._waiters.events.add(event)
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    event.clear()
                    await event.wait()
        finally:
            self._waiters.events.discard(event)

    async def wait_for_watchers(
        self, count: int = 1, resource: Resource = "pods", *, timeout: float = 5.0  # noqa: ASYNC109
    ) -> None:
        await self.wait_for(lambda: self.watcher_count(resource) >= count, timeout=timeout)

    async def wait_for_requests(
        self,
        count: int,
        method: str | None = None,
        path: str | None = None,
        *,
        watch: bool | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Wait until :meth:`request_count` with these filters reaches ``count``."""
        await self.wait_for(
            lambda: self.request_count(method, path, watch=watch) >= count, timeout=timeout
        )

    # ---- objects -----------------------------------------------------------------

    def create(self, resource: Resource, obj: Mapping[str, Any], *, namespace: str = "",
               keep_status: bool = True) -> JsonObject:
        """Create as a POST would, but keep ``.status`` (unless told not to)."""
        rt = _rt(resource)
        body = copy_json(dict(obj))
        ns = namespace or body.get("metadata", {}).get("namespace", "") or (
            "default" if rt.namespaced else "")
        return self.store.create(rt, ns, body, keep_status=keep_status).full()

    def get(self, resource: Resource, namespace: str, name: str) -> JsonObject:
        return self.store.get(_rt(resource), namespace, name).full()

    def find(self, resource: Resource, namespace: str, name: str) -> JsonObject | None:
        entry = self.store.find(_rt(resource), namespace, name)
        return entry.full() if entry is not None else None

    def list(self, resource: Resource, namespace: str | None = None) -> list[JsonObject]:
        result = self.store.list_entries(_rt(resource), namespace=namespace)
        return [entry.full() for entry in result.entries]

    def update(self, resource: Resource, obj: Mapping[str, Any]) -> JsonObject:
        """Replace an object wholesale, status and spec included (no pod-update rules)."""
        rt = _rt(resource)
        body = copy_json(dict(obj))
        meta = body.get("metadata", {})
        meta.pop("resourceVersion", None)
        return self.store.update(rt, meta.get("namespace", ""), meta["name"], body,
                                 unchecked=True).full()

    def patch(self, resource: Resource, namespace: str, name: str,
              patch: Mapping[str, Any]) -> JsonObject:
        """Merge-patch an object (status and spec included)."""
        rt = _rt(resource)
        current = self.store.get(rt, namespace, name).full()
        patched = merge_patch(current, copy_json(dict(patch)))
        return self.store.update(rt, namespace, name, patched, unchecked=True).full()

    def delete(self, resource: Resource, namespace: str, name: str, *,
               grace_period: int | None = None) -> JsonObject:
        """Delete as the API would (pods: gracefully); answers the last state."""
        entry, _ = self.store.delete(_rt(resource), namespace, name, grace_period=grace_period)
        return entry.full()

    # ---- namespaces, pods, events ------------------------------------------------

    def create_namespace(self, name: str, *, annotations: Mapping[str, str] | None = None,
                         labels: Mapping[str, str] | None = None) -> JsonObject:
        meta: JsonObject = {"name": name}
        if labels:
            meta["labels"] = dict(labels)
        if annotations:
            meta["annotations"] = dict(annotations)
        return self.store.create(NAMESPACES, "", {"metadata": meta}).full()

    def create_service_account(self, namespace: str, name: str = "default") -> JsonObject:
        """A ServiceAccount (a real cluster's controller makes ``default`` in every
        namespace; here a test makes the ones it needs). Creates the namespace if missing."""
        if self.store.find(NAMESPACES, "", namespace) is None:
            self.create_namespace(namespace)
        body = {"metadata": {"name": name, "namespace": namespace}}
        return self.store.create(SERVICEACCOUNTS, namespace, body).full()

    def request_token(self, namespace: str, pod: str, *, service_account: str = "default",
                      audiences: Iterable[str] = ("kiam",), expiration: int = 3600,
                      issued_at: float | None = None) -> str:
        """A token bound to ``pod`` as the kubelet gets it for a projected volume
        (``POST .../serviceaccounts/NAME/token``); ``issued_at`` back-dates it (a token
        that has expired by now)."""
        account = self.store.get(SERVICEACCOUNTS, namespace, service_account).obj
        pod_uid = self.store.get(PODS, namespace, pod).obj["metadata"]["uid"]
        body = {"spec": {"audiences": builtins.list(audiences), "expirationSeconds": expiration,
                         "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod,
                                            "uid": pod_uid}}}

        def find_pod(ns: str, name: str) -> JsonObject | None:
            entry = self.store.find(PODS, ns, name)
            return None if entry is None else entry.obj

        answer = self.tokens.request_token(namespace=namespace, service_account=account,
                                           body=body, pods=find_pod, issued_at=issued_at)
        token: str = answer["status"]["token"]
        return token

    def create_pod(
        self,
        namespace: str,
        name: str,
        *,
        ip: str | None = None,
        ips: Iterable[str] | None = None,
        phase: str | None = None,
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        node_name: str = "node-1",
        host_network: bool = False,
        host_ip: str | None = None,
        grace_period: int | None = None,
        ensure_namespace: bool = True,
    ) -> JsonObject:
        """A pod as the scheduler and kubelet would leave it: on ``node_name`` (so deletes
        are graceful), phase ``Running`` when it has an IP, else ``Pending``."""
        if ensure_namespace and self.store.find(NAMESPACES, "", namespace) is None:
            self.create_namespace(namespace)
        pod = _pod_body(namespace=namespace, name=name, annotations=annotations, labels=labels,
                        node_name=node_name, host_network=host_network,
                        grace_period=grace_period)
        pod["status"] = _pod_status({"phase": "Pending"}, phase=phase, ip=ip, ips=ips,
                                    host_ip=host_ip)
        return self.store.create(PODS, namespace, pod, keep_status=True).full()

    def set_pod_status(
        self,
        namespace: str,
        name: str,
        *,
        phase: str | None = None,
        pod_ip: str | None = None,
        pod_ips: Iterable[str] | None = None,
        host_ip: str | None = None,
        host_network: bool | None = None,
        node_name: str | None = None,
    ) -> JsonObject:
        """Play the kubelet (and scheduler): change phase/IPs, ``spec.hostNetwork`` and
        ``spec.nodeName``. ``pod_ip=""`` clears the IPs. One MODIFIED event."""
        current = self.store.get(PODS, namespace, name).full()
        status = _pod_status(dict(current.get("status") or {}), phase=phase, ip=pod_ip,
                             ips=pod_ips, host_ip=host_ip)
        spec = dict(current.get("spec") or {})
        if host_network is not None:
            if host_network:
                spec["hostNetwork"] = True
            else:
                spec.pop("hostNetwork", None)
        if node_name is not None:
            spec["nodeName"] = node_name
        current["status"], current["spec"] = status, spec
        return self.store.update(PODS, namespace, name, current, unchecked=True).full()

    def delete_pod(self, namespace: str, name: str, *,
                   grace_period: int | None = None) -> JsonObject:
        return self.delete(PODS, namespace, name, grace_period=grace_period)

    def hold_pod(self, namespace: str, name: str) -> None:
        """Keep a terminating pod after its grace period ends (a finalizer, a kubelet that
        never confirms): it stays, with its ``deletionTimestamp`` in the past."""
        self.store.hold_pod(namespace, name)

    def finalise_pod(self, namespace: str, name: str) -> JsonObject:
        """End a terminating pod's grace period now: it is removed (DELETED)."""
        return self.store.finalise_pod(namespace, name).full()

    def events(self, namespace: str | None = None, *, reason: str | None = None
               ) -> builtins.list[JsonObject]:
        """Events of both APIs (core/v1 first), optionally only one ``reason``."""
        found = self.list(EVENTS, namespace) + self.list(EVENTS_V1, namespace)
        return [e for e in found if reason is None or e.get("reason") == reason]


def _pod_body(*, namespace: str, name: str, annotations: Mapping[str, str] | None,
              labels: Mapping[str, str] | None, node_name: str, host_network: bool,
              grace_period: int | None) -> JsonObject:
    meta: JsonObject = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    spec: JsonObject = {"containers": [{"name": "main", "image": DEFAULT_IMAGE}]}
    if node_name:
        spec["nodeName"] = node_name
    if host_network:
        spec["hostNetwork"] = True
    if grace_period is not None:
        spec["terminationGracePeriodSeconds"] = grace_period
    return {"metadata": meta, "spec": spec}


def _pod_status(status: JsonObject, *, phase: str | None, ip: str | None,
                ips: Iterable[str] | None, host_ip: str | None) -> JsonObject:
    addresses = list(ips) if ips is not None else None
    if ip is not None and addresses is None:
        addresses = [ip] if ip else []
    if addresses is not None:
        if addresses:
            status["podIP"] = addresses[0]
            status["podIPs"] = [{"ip": a} for a in addresses]
            if phase is None and status.get("phase") == "Pending":
                phase = "Running"
        else:
            status.pop("podIP", None)
            status.pop("podIPs", None)
    if host_ip is not None:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    if phase is not None:
        status["phase"] = phase
    return status

