"""The apiserver's HTTP surface over a :class:`Store`: routing, queries, bodies, watches.

Every path is parsed here (one catch-all route) so an unknown resource gets the
apiserver's 404 ``Status`` rather than aiohttp's text page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from kiam_testbed.kube import errors, protobuf
from kiam_testbed.kube.errors import JsonObject, KubeApiError
from kiam_testbed.kube.patch import PatchError, json_patch, merge_patch
from kiam_testbed.kube.protobuf import PROTOBUF, ProtobufError
from kiam_testbed.kube.resources import (
    BY_PATH,
    PODS,
    SERVICEACCOUNTS,
    ResourceType,
    require_object,
)
from kiam_testbed.kube.selectors import (
    FieldRequirement,
    FieldSelector,
    parse_field_selector,
    parse_label_selector,
)
from kiam_testbed.kube.store import Store
from kiam_testbed.kube.tables import WatchTables, table, wants_table
from kiam_testbed.kube.tokens import TokenAuthority
from kiam_testbed.kube.watch import Entry

log = logging.getLogger(__name__)

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_JSON_TYPES = frozenset({JSON, MERGE_PATCH, STRATEGIC_PATCH, JSON_PATCH, "",
                         "application/octet-stream"})
"""Bodies read as JSON (aiohttp says octet-stream when a client sends no type)."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a request path names."""

    rt: ResourceType
    namespace: str | None
    """``None``: every namespace (or a cluster-scoped resource)."""
    name: str = ""
    subresource: str = ""
    legacy_watch: bool = False


_SUBRESOURCES = {("status", PODS), ("token", SERVICEACCOUNTS)}


def parse_path(path: str) -> Target | None:
    """``/api/v1/...`` or ``/apis/{group}/{version}/...``; ``None`` when nothing matches."""
    segments = [s for s in path.split("/") if s]
    if segments[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", segments[2:]
    elif len(segments) >= 3 and segments[0] == "apis":
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        return None
    legacy_watch = bool(rest) and rest[0] == "watch"
    if legacy_watch:
        rest = rest[1:]
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        scoped = BY_PATH.get((group, version, rest[2]))
        if scoped is not None and scoped.namespaced:
            namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    rt = BY_PATH.get((group, version, rest[0]))
    if rt is None or (rt.namespaced is False and namespace is not None):
        return None
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if subresource and (subresource, rt) not in _SUBRESOURCES:
        return None
    return Target(rt, namespace, name, subresource, legacy_watch)


def json_response(body: bytes | JsonObject, *, status: int = 200) -> web.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return web.Response(body=data, status=status, content_type=JSON)


def status_response(status: JsonObject) -> web.Response:
    return json_response(status, status=int(status["code"]))


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _int_param(query: Any, name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise errors.bad_request(f"invalid value for {name}: {raw!r}") from None


def _selectors(rt: ResourceType, query: Any) -> tuple[FieldSelector, Any]:
    fields = parse_field_selector(query.get("fieldSelector", ""), supported=rt.fields)
    labels = parse_label_selector(query.get("labelSelector", ""))
    return fields, labels


def _unsupported(detail: str) -> KubeApiError:
    return KubeApiError(errors.status_body(
        code=415, message=f"the body of the request was in an unknown format - accepted "
        f"media types include: application/json, {PROTOBUF} (Namespace, ServiceAccount "
        f"only){detail}"))


async def _read_json(request: web.Request, *, required: bool) -> Any:
    if request.content_type == PROTOBUF:
        # kubectl 1.32+ sends its typed calls (kubectl create namespace) as protobuf
        try:
            return protobuf.decode(await request.read())
        except ProtobufError as exc:
            raise _unsupported(f": {exc}") from None
    if request.content_type not in _JSON_TYPES:
        raise _unsupported("")
    raw = await request.read()
    if not raw.strip():
        if required:
            raise errors.bad_request("the body of the request is empty")
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(
            f"couldn't get version/kind; json parse error: {exc}"
        ) from None


@dataclass(frozen=True, slots=True)
class WatchSettings:
    bookmark_interval: float
    """Seconds between periodic bookmarks on watches that allow them."""
    default_timeout: float
    """How long a watch without ``timeoutSeconds`` lasts."""


class KubeApi:
    """Request handlers; :meth:`handle` is the one catch-all route."""

    def __init__(self, store: Store, settings: WatchSettings,
                 tokens: TokenAuthority | None = None) -> None:
        self._store = store
        self._settings = settings
        self.tokens = tokens or TokenAuthority()

    def _lookup(self, rt: ResourceType) -> Any:
        def find(namespace: str, name: str) -> JsonObject | None:
            entry = self._store.find(rt, namespace, name)
            return None if entry is None else entry.obj

        return find

    async def token_review(self, request: web.Request) -> web.Response:
        body = await _read_json(request, required=True)
        review = self.tokens.review(body, service_accounts=self._lookup(SERVICEACCOUNTS),
                                    pods=self._lookup(PODS))
        return json_response(review, status=201)

    async def _token_request(self, request: web.Request, target: Target) -> web.Response:
        account = self._store.get(SERVICEACCOUNTS, self._ns(target), target.name)
        body = await _read_json(request, required=True)
        answer = self.tokens.request_token(namespace=self._ns(target), service_account=account.obj,
                                           body=body, pods=self._lookup(PODS))
        return json_response(answer, status=201)

    def _ns(self, target: Target) -> str:
        return target.namespace or ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = parse_path(request.path)
        if target is None:
            raise errors.unknown_resource()
        method = request.method
        if method == "GET":
            if target.legacy_watch or _flag(request.query.get("watch")):
                return await self._watch(request, target)
            if target.name:
                return self._get(request, target)
            return self._list(request, target)
        if method == "POST" and target.subresource == "token":
            return await self._token_request(request, target)
        if method == "POST" and not target.name and target.subresource == "":
            if target.rt.namespaced and target.namespace is None:
                raise _method_not_allowed()
            body = require_object(await _read_json(request, required=True))
            entry = self._store.create(target.rt, self._ns(target), body)
            return json_response(entry.full_bytes(), status=201)
        if method == "PUT" and target.name:
            body = require_object(await _read_json(request, required=True))
            existed = self._store.find(target.rt, self._ns(target), target.name) is not None
            entry = self._store.update(target.rt, self._ns(target), target.name, body,
                                       subresource=target.subresource)
            return json_response(entry.full_bytes(), status=200 if existed else 201)
        if method == "PATCH" and target.name:
            return await self._patch(request, target)
        if method == "DELETE" and target.name and not target.subresource:
            return await self._delete(request, target)
        raise _method_not_allowed()

    def _get(self, request: web.Request, target: Target) -> web.Response:
        entry = self._store.get(target.rt, self._ns(target), target.name)
        if _wants_table(request):
            return json_response(_table(request, target.rt, [entry],
                                        str(entry.obj["metadata"].get("resourceVersion", ""))))
        return json_response(entry.full_bytes())

    def _list(self, request: web.Request, target: Target) -> web.Response:
        fields, labels = _selectors(target.rt, request.query)
        result = self._store.list_entries(
            target.rt,
            namespace=target.namespace,
            fields=fields,
            labels=labels,
            # resourceVersion=0 reads the watch cache, which ignores limit (no paging)
            limit=0 if request.query.get("resourceVersion") == "0" else max(
                _int_param(request.query, "limit") or 0, 0),
            continue_token=request.query.get("continue", ""),
        )
        meta: JsonObject = {"resourceVersion": str(result.rv)}
        if result.continue_token:
            meta["continue"] = result.continue_token
        if result.remaining is not None:
            meta["remainingItemCount"] = result.remaining
        rt = target.rt
        if _wants_table(request):
            return json_response(_table(request, rt, result.entries, str(result.rv)))
        head = b'{"kind":"%s","apiVersion":"%s","metadata":%s,"items":[' % (
            rt.list_kind.encode(), rt.api_version.encode(), orjson.dumps(meta))
        items = b",".join(entry.item_bytes() for entry in result.entries)
        return json_response(head + items + b"]}")

    async def _patch(self, request: web.Request, target: Target) -> web.Response:
        content_type = request.content_type
        if content_type not in (MERGE_PATCH, STRATEGIC_PATCH, JSON_PATCH):
            raise KubeApiError(errors.status_body(
                code=415,
                message="the body of the request was in an unknown format - accepted media "
                "types include: application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml, application/strategic-merge-patch+json",
            ))
        patch = await _read_json(request, required=True)
        current = self._store.get(target.rt, self._ns(target), target.name)
        try:
            if content_type == JSON_PATCH:
                patched = json_patch(current.full(), patch)
            else:
                if not isinstance(patch, dict):
                    raise errors.bad_request("a merge patch must be a JSON object")
                patched = merge_patch(current.full(), patch)
        except PatchError as exc:
            raise KubeApiError(errors.status_body(
                code=422, message=f"the server rejected our request due to an error in our "
                f"request: {exc}", details={"causes": [{"message": str(exc)}]})) from None
        entry = self._store.update(target.rt, self._ns(target), target.name,
                                   require_object(patched), subresource=target.subresource)
        return json_response(entry.full_bytes())

    async def _delete(self, request: web.Request, target: Target) -> web.Response:
        options = await _read_json(request, required=False) or {}
        if not isinstance(options, dict):
            raise errors.bad_request("DeleteOptions must be a JSON object")
        grace = _int_param(request.query, "gracePeriodSeconds")
        if grace is None and options.get("gracePeriodSeconds") is not None:
            grace = options["gracePeriodSeconds"]
            if not isinstance(grace, int) or isinstance(grace, bool):
                raise errors.bad_request(f"invalid value for gracePeriodSeconds: {grace!r}")
        preconditions = options.get("preconditions")
        if preconditions is not None and not isinstance(preconditions, dict):
            raise errors.bad_request("DeleteOptions.preconditions must be a JSON object")
        entry, _gone = self._store.delete(target.rt, self._ns(target), target.name,
                                          grace_period=grace, preconditions=preconditions)
        if target.rt.return_deleted_object:
            return json_response(entry.full_bytes())
        return json_response(_success(target.rt, entry))

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        query = request.query
        fields, labels = _selectors(target.rt, query)
        if target.name:
            # Legacy /watch/.../{name}: a watch of one object.
            fields = FieldSelector(
                (*fields.requirements, FieldRequirement("metadata.name", target.name, False))
            )
        timeout = _int_param(query, "timeoutSeconds")
        duration = float(timeout) if timeout and timeout > 0 else self._settings.default_timeout
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        try:
            watcher = self._store.watch(
                target.rt, namespace=target.namespace, resource_version=query.get(
                    "resourceVersion", ""), fields=fields, labels=labels,
                bookmarks=_flag(query.get("allowWatchBookmarks")))
        except KubeApiError as exc:
            if exc.code != 410:
                raise
            # The apiserver accepts the watch, then says 410 in an ERROR event and ends it.
            await response.prepare(request)
            await response.write(orjson.dumps({"type": "ERROR", "object": exc.status}) + b"\n")
            await response.write_eof()
            return response
        tables = WatchTables(target.rt.kind, target.rt.group, now=time.time,
                             include=request.query.get("includeObject", "Metadata")
                             ) if _wants_table(request) else None
        try:
            await response.prepare(request)
            await self._stream(response, watcher, duration, tables)
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except ConnectionError:
            pass  # the client went away; nothing to tell it
        finally:
            self._store.unwatch(watcher)
        return response

    async def _stream(self, response: web.StreamResponse, watcher: Any, duration: float,
                      tables: WatchTables | None = None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration
        interval = self._settings.bookmark_interval
        next_bookmark = loop.time() + interval
        while True:
            now = loop.time()
            if watcher.bookmarks and now >= next_bookmark:
                # Periodic, even on a busy stream, as the apiserver does.
                watcher.want_bookmark()
                next_bookmark = now + interval
            data = watcher.drain(current_rv=self._store.rv)
            if data:
                await response.write(tables.convert(data) if tables is not None else data)
            elif watcher.closed:
                return
            now = loop.time()
            if now >= deadline:
                return
            if data:
                continue
            wait = deadline - now
            if watcher.bookmarks:
                wait = min(wait, max(next_bookmark - now, 0.0))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await watcher.wakeup.wait()


def _wants_table(request: web.Request) -> bool:
    return wants_table(request.headers.get("Accept", ""))


def _table(request: web.Request, rt: ResourceType, entries: Any, rv: str) -> JsonObject:
    objects = [orjson.loads(entry.item_bytes()) for entry in entries]
    return table(rt.kind, rt.group, objects, now=time.time(), resource_version=rv,
                 include=request.query.get("includeObject", "Metadata"))


def _method_not_allowed() -> KubeApiError:
    return KubeApiError(errors.status_body(code=405, message="the server does not allow this "
                                           "method on the requested resource", details={}))


def _success(rt: ResourceType, entry: Entry) -> JsonObject:
    details: JsonObject = {"name": entry.name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.plural
    details["uid"] = entry.obj["metadata"].get("uid", "")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def status_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a ``Status`` body, as from the apiserver."""
    try:
        return await handler(request)
    except KubeApiError as exc:
        return status_response(exc.status)
    except web.HTTPException:
        raise
    except Exception as exc:  # a bug here must still answer like an apiserver would
        log.exception("kube emulator handler failed")
        return status_response(errors.status_body(code=500, message=f"emulator error: {exc}"))


_SHORT_NAMES = {"pods": ("po",), "namespaces": ("ns",), "events": ("ev",),
                "serviceaccounts": ("sa",)}
"""As the apiserver names them, so ``kubectl get po,ns,ev,sa`` works."""


def _discovery_routes(app: web.Application) -> None:
    def resources(group_version: str, types: list[ResourceType]) -> JsonObject:
        listed: list[JsonObject] = []
        for rt in types:
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            resource: JsonObject = {"name": rt.plural, "singularName": rt.kind.lower(),
                                    "namespaced": rt.namespaced, "kind": rt.kind,
                                    "verbs": verbs}
            if rt.plural in _SHORT_NAMES:
                resource["shortNames"] = list(_SHORT_NAMES[rt.plural])
            if rt is PODS:
                resource["categories"] = ["all"]
            listed.append(resource)
            if rt is PODS:
                listed.append({"name": "pods/status", "singularName": "", "namespaced": True,
                               "kind": "Pod", "verbs": ["get", "patch", "update"]})
            if rt is SERVICEACCOUNTS:
                listed.append({"name": "serviceaccounts/token", "singularName": "",
                               "namespaced": True, "group": "authentication.k8s.io",
                               "version": "v1", "kind": "TokenRequest", "verbs": ["create"]})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": listed}

    core = [rt for rt in BY_PATH.values() if not rt.group]
    events = [rt for rt in BY_PATH.values() if rt.group == "events.k8s.io"]
    fixed: dict[str, JsonObject] = {
        "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.0-kiam-emulator",
                     "platform": "linux/amd64"},
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
        "/api/v1": resources("v1", core),
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
            "name": name,
            "versions": [{"groupVersion": f"{name}/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": f"{name}/v1", "version": "v1"}}
            for name in ("events.k8s.io", "authentication.k8s.io")]},
        "/apis/events.k8s.io/v1": resources("events.k8s.io/v1", events),
        "/apis/authentication.k8s.io/v1": {
            "kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "authentication.k8s.io/v1",
            "resources": [{"name": "tokenreviews", "singularName": "tokenreview",
                           "namespaced": False, "kind": "TokenReview", "verbs": ["create"]}]},
    }
    for path, body in fixed.items():
        data = orjson.dumps(body)

        async def serve(_: web.Request, data: bytes = data) -> web.Response:
            return json_response(data)

        app.router.add_get(path, serve)
    async def openapi_v2(_: web.Request) -> web.Response:
        # An empty OpenAPI v2 document (zero bytes is an empty protobuf message): kubectl
        # validates only the kinds a schema describes, so it validates nothing here. With
        # /openapi/v3 absent (404), kubectl falls back to this, as on older apiservers.
        return web.Response(body=b"", content_type=OPENAPI_V2_PROTOBUF)

    app.router.add_get("/openapi/v2", openapi_v2)
    for probe in ("/healthz", "/readyz", "/livez"):
        async def ok(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        app.router.add_get(probe, ok)


def build_app(
    store: Store, settings: WatchSettings, middlewares: list[Any] | None = None,
    tokens: TokenAuthority | None = None,
) -> web.Application:
    app = web.Application(middlewares=[*(middlewares or []), status_errors],
                          client_max_size=64 << 20)
    _discovery_routes(app)
    api = KubeApi(store, settings, tokens)
    app.router.add_post(TOKEN_REVIEWS, api.token_review)
    app.router.add_route("*", "/{tail:.*}", api.handle)
    return app


__all__ = ["KubeApi", "Target", "WatchSettings", "build_app", "parse_path"]
