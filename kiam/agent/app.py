"""The agent's HTTP side: every route (docs/architecture.md) behind one dispatcher.

aiohttp's router is not used to choose a handler, because it would match on its own
decoding of the path; instead one catch-all handler normalises the raw path once
(:mod:`kiam.agent.paths`) and every decision is taken on that result.

The caller is the TCP peer (IPv4 or IPv6, IPv4-mapped addresses folded to IPv4),
never a header; ``?ip=`` overrides it only with ``--allow-ip-query`` (development).
Every answer comes within ``budget`` seconds of the request's arrival, inside the
1-second timeout of the AWS SDKs' metadata clients.

The container credentials endpoint (``--token-credentials``, docs/token-credentials.md,
"On the agent") is a second application on its own listener with one route,
``/v1/credentials``, answered through the same dispatcher, limit and metrics: there
the pod is named by its service-account token, not by its address.

Every route but ``/ping`` and ``/health`` (the kubelet's probes) is behind the
per-caller limit (:mod:`kiam.agent.fairness`, docs/architecture.md, "Fairness between
pods"), keyed by the TCP peer alone, ``?ip=`` or not: a pod over it gets 429 with
``Retry-After``, is counted, and is logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client.metrics import Counter, Histogram

from kiam.agent import metrics
from kiam.agent.answers import JSON, credentials_answer, error_response, no_role, role_answer
from kiam.agent.audit import KeyAudit
from kiam.agent.bad_requests import WarnLimiter
from kiam.agent.client import KiamClient
from kiam.agent.errors import (
    AgentError,
    AgentInternalError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    ServerFailed,
    ServerUnavailable,
    Throttled,
    Unauthorized,
)
from kiam.agent.fairness import NO_LIMITS, CallerLimiter, CallerLimits
from kiam.agent.imdsv2 import TOKEN_HEADER, TTL_HEADER, TokenStore, parse_ttl
from kiam.agent.paths import AllowList, Route, RouteKind, classify, normalise_path, split_target
from kiam.agent.proxy import MetadataProxy
from kiam.agent.replica import FALLBACKS, Entry, Fallback, Replica
from kiam.agent.token_answers import (
    TokenAnswer,
    TokenAnswers,
    answer_of,
    digest,
    token_from_header,
)
from kiam.common.net import PodIP, normalise_ip
from kiam.wire.credentials import document_from_message

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 0.9
REFUSAL_DELAY = (0.05, 0.15)
"""Seconds a 429 waits before it is sent, drawn anew for each between these two
(docs/architecture.md, "Fairness between pods")."""
_READ_METHODS = ("GET", "HEAD")
_ROUTE_METHODS = {RouteKind.TOKEN: ("PUT",)}
_NEEDS_TOKEN = (RouteKind.ROLE_NAME, RouteKind.CREDENTIALS, RouteKind.IAM_BLOCKED, RouteKind.PROXY)
_UNLIMITED = (RouteKind.PING, RouteKind.HEALTH)
_MAX_ROUTES = 1024
"""Canonical request paths whose route is remembered (so they are not normalised again)."""
CONTAINER_CREDENTIALS_PATH = "/v1/credentials"
"""The one path of the token credentials listener (``AWS_CONTAINER_CREDENTIALS_FULL_URI``)."""
_CONTAINER_CREDENTIALS = Route(RouteKind.CONTAINER_CREDENTIALS, CONTAINER_CREDENTIALS_PATH)
_Bound = tuple[Histogram, Counter, Counter | None]


@dataclass(frozen=True, kw_only=True)
class AppConfig:
    allow: AllowList
    """--allow-route-regexp."""
    imdsv2_required: bool = False
    """--imdsv2=required: token-less requests are answered 401."""
    allow_ip_query: bool = False
    """--allow-ip-query (development only)."""
    budget: float = DEFAULT_BUDGET
    """Seconds from a request's arrival to its answer."""
    limits: CallerLimits = NO_LIMITS
    """--pod-max-in-flight, --pod-rate, --pod-burst (0: no limit)."""
    session_refresh: float = 300.0
    """--session-refresh: token answers are asked again with this little left."""


class MetadataApp:
    """Holds what the handlers share; :meth:`build` makes the aiohttp application."""

    def __init__(
        self,
        *,
        config: AppConfig,
        client: KiamClient,
        proxy: MetadataProxy,
        tokens: TokenStore,
        replica: Replica | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.proxy = proxy
        self.tokens = tokens
        self.replica = replica
        """The node replica (None without --node-name): answers before the RPCs."""
        self.audit = KeyAudit()
        self.unavailable: str | None = "the agent is starting"
        """Why /health answers 503; None from the end of start-up (the DNAT rule and the
        token credentials endpoint in place) until shutdown starts, so a readiness probe
        never counts a node whose pods are not intercepted yet, and traffic drains at
        the end."""
        self.limiter = CallerLimiter(config.limits)
        """One limit per caller address across both listeners."""
        self.token_answers = TokenAnswers()
        self._token_fetches: dict[bytes, asyncio.Future[TokenAnswer]] = {}
        self._throttle_warnings = WarnLimiter()
        # the lean path: routes of canonical paths and metric children, found once
        self._routes: dict[str, Route] = {}
        self._bound: dict[tuple[str, int], _Bound] = {}
        self._hits = {
            kind: metrics.replica_hits.labels(kind.value)
            for kind in (RouteKind.ROLE_NAME, RouteKind.CREDENTIALS)
        }
        self._fallbacks = {
            (kind, reason): metrics.replica_fallbacks.labels(kind.value, reason)
            for kind in (RouteKind.ROLE_NAME, RouteKind.CREDENTIALS)
            for reason in FALLBACKS
        }
        self._served = {
            new: metrics.credentials_served.labels("new" if new else "seen")
            for new in (True, False)
        }

    def build(self) -> web.Application:
        """The metadata application (the agent's port, behind the DNAT rule)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    def build_container(self) -> web.Application:
        """The container credentials application (``--token-credentials-listen``)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.dispatch_container)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, self._metadata_route)

    async def dispatch_container(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, _container_route)

    def _metadata_route(self, raw_path: str) -> Route:
        return self._routes.get(raw_path) or self._classify(raw_path)

    async def _answer(
        self, request: web.Request, route_of: Callable[[str], Route]
    ) -> web.StreamResponse:
        started = time.monotonic()
        deadline = started + self.config.budget
        handler = "invalid"
        try:
            raw_path, _ = split_target(request.raw_path)
            route = route_of(raw_path)
            handler = route.handler
            if route.kind in _UNLIMITED:
                response = await self._route(request, route, deadline)
            else:
                response = await self._limited(request, route, deadline)
        except AgentError as exc:
            response = error_response(exc)
            if exc.status >= 500:
                fields = {"path": request.raw_path, "status": exc.status, "error": str(exc)}
                log.warning("request failed", extra={"fields": fields})
        except Exception:
            # a bug: still one line to the pod, the traceback to the log
            log.exception("unexpected error", extra={"fields": {"path": request.raw_path}})
            response = error_response(
                AgentInternalError("internal error in kiam agent; see its log")
            )
        if handler != RouteKind.PING.value:
            bound = self._bound.get((handler, response.status)) or self._bind(
                handler, response.status
            )
            latency, responses, success = bound
            latency.observe(time.monotonic() - started)
            responses.inc()
            if success is not None:
                success.inc()
        return response

    def _classify(self, raw_path: str) -> Route:
        route = classify(normalise_path(raw_path))
        # only a path already canonical is remembered: its next request skips the
        # normalisation, and any other spelling is normalised each time as before
        if route.path == raw_path and len(self._routes) < _MAX_ROUTES:
            self._routes[raw_path] = route
        return route

    def _bind(self, handler: str, code: int) -> _Bound:
        bound = (
            metrics.handler_latency.labels(handler),
            metrics.responses.labels(handler, str(code)),
            metrics.success.labels(handler) if code == 200 else None,
        )
        self._bound[(handler, code)] = bound
        return bound

    async def _limited(
        self, request: web.Request, route: Route, deadline: float
    ) -> web.Response:
        caller = _peer_ip(request)
        refused = self.limiter.admit(caller, now=time.monotonic())
        if refused is not None:
            metrics.throttled.labels(refused.limit).inc()
            if self._throttle_warnings.should_warn(caller, now=time.monotonic()):
                fields = {"caller": caller, "limit": refused.limit}
                log.warning("pod over its limit, refused (429)", extra={"fields": fields})
            limit = "in flight" if refused.limit == "in_flight" else "per second"
            # a flooding pod waits for its refusals too, so it cannot make them as fast
            # as the event loop can answer and slow its neighbours down that way; the
            # wait varies, so refusals made together are not all sent together either
            await asyncio.sleep(random.uniform(*REFUSAL_DELAY))
            raise Throttled(
                f"too many requests {limit} from {caller}; retry after {refused.retry_after} s",
                retry_after=refused.retry_after,
            )
        try:
            return await self._route(request, route, deadline)
        finally:
            self.limiter.release(caller, now=time.monotonic())

    async def _route(self, request: web.Request, route: Route, deadline: float) -> web.Response:
        allowed = _ROUTE_METHODS.get(route.kind, _READ_METHODS)
        if request.method not in allowed:
            raise MethodNotAllowed(
                f"method {request.method} not allowed here; use {', '.join(allowed)}",
                allow=allowed,
            )
        if route.kind is RouteKind.PING:
            return web.Response(text="pong", content_type="text/plain")
        if route.kind is RouteKind.HEALTH:
            return await self._health(request, deadline)
        if route.kind is RouteKind.ROLE_NAME_REDIRECT:
            return _redirect_to_slash(request, route)
        if route.kind is RouteKind.CONTAINER_CREDENTIALS:
            return await self._container_credentials(request, deadline)
        ip = self._caller_ip(request)
        if route.kind is RouteKind.TOKEN:
            return self._token(request, ip)
        if route.kind in _NEEDS_TOKEN:
            self._check_token(request, ip)
        if route.kind is RouteKind.ROLE_NAME:
            return await self._role_name(ip, deadline)
        if route.kind is RouteKind.CREDENTIALS:
            return await self._credentials(ip, route.role, deadline)
        return await self._proxy(request, route, deadline)

    def _caller_ip(self, request: web.Request) -> PodIP:
        if self.config.allow_ip_query and (override := request.query.get("ip")):
            try:
                return normalise_ip(override)
            except ValueError:
                raise BadRequest(f"?ip={override!r} is not an IP address") from None
        return _peer_ip(request)

    def _token(self, request: web.Request, ip: str) -> web.Response:
        if "X-Forwarded-For" in request.headers:
            # IMDS refuses forwarded token requests so a proxy on the node cannot mint
            # tokens for remote callers; so do we
            raise Forbidden("token requests carrying X-Forwarded-For are refused")
        ttl = parse_ttl(request.headers.get(TTL_HEADER))
        token = self.tokens.issue(ip=ip, ttl=ttl)
        return web.Response(text=token, content_type="text/plain", headers={TTL_HEADER: str(ttl)})

    def _check_token(self, request: web.Request, ip: str) -> None:
        token = request.headers.get(TOKEN_HEADER)
        if token is None:
            if self.config.imdsv2_required:
                raise Unauthorized("IMDSv2 is required: PUT /latest/api/token first")
            return
        if not self.tokens.check(token, ip=ip):
            raise Unauthorized("IMDSv2 token is invalid, expired or was issued to another address")

    async def _health(self, request: web.Request, deadline: float) -> web.Response:
        if self.unavailable is not None:
            raise ServerUnavailable(self.unavailable)
        if request.query.get("deep", "") not in ("", "0", "false"):
            message = await self.client.health(budget=_left(deadline))
            return web.Response(text=message or "ok", content_type="text/plain")
        return web.Response(text="ok", content_type="text/plain")

    async def _role_name(self, ip: str, deadline: float) -> web.Response:
        found: Entry | Fallback = "no_stream"
        if self.replica is not None:
            found = self.replica.role(ip, now=time.monotonic())
        if not isinstance(found, str):
            self._hits[RouteKind.ROLE_NAME].inc()
            if found.role_outcome == "no_role":
                metrics.empty_role.inc()
            elif found.role_outcome == "refused":
                metrics.find_role_errors.inc()
            return found.role_answer.response()
        self._fallbacks[RouteKind.ROLE_NAME, found].inc()
        try:
            role = await self.client.pod_role(ip, budget=_left(deadline))
        except AgentError:
            metrics.find_role_errors.inc()
            raise
        if not role:
            metrics.empty_role.inc()
            raise no_role(ip)
        return role_answer(role).response()

    async def _credentials(self, ip: str, role: str, deadline: float) -> web.Response:
        found: Entry | Fallback = "no_stream"
        if self.replica is not None:
            found = self.replica.credentials(ip, role, now=time.monotonic(), wall=time.time())
        if not isinstance(found, str):
            self._hits[RouteKind.CREDENTIALS].inc()
            if found.credentials_refusal is not None:
                metrics.credential_fetch_errors.inc()
                return found.credentials_refusal.response()
            assert found.credentials is not None  # Replica.credentials returns no other
            credentials = found.credentials
            self._served_to(ip, role, credentials.access_key_id, entry=found)
            return credentials.answer.response()
        self._fallbacks[RouteKind.CREDENTIALS, found].inc()
        try:
            message = await self.client.pod_credentials(ip, role, budget=_left(deadline))
            try:
                document = document_from_message(message)
            except ValueError as exc:
                raise ServerFailed(f"the kiam server sent unreadable credentials: {exc}") from None
        except AgentError:
            metrics.credential_fetch_errors.inc()
            raise
        answer = credentials_answer(document)
        self._served_to(ip, role, document["AccessKeyId"], entry=None)
        return answer.response()

    def _served_to(
        self, ip: str, role: str, access_key_id: str, *, entry: Entry | None
    ) -> None:
        """The audit trail: one line when a pod is first handed an access key; the rest
        are counted (docs/architecture.md, "The node replica")."""
        uid = entry.pod_uid if entry is not None else ""
        new = self.audit.is_new(ip=ip, pod_uid=uid, access_key_id=access_key_id)
        self._served[new].inc()
        if not new:
            return
        # never the secret or the token
        fields = {"pod.ip": ip, "role": role, "access.key.id": access_key_id}
        if entry is not None and entry.pod_name:
            fields["pod.namespace"], fields["pod.name"] = entry.pod_namespace, entry.pod_name
        fields["source"] = "replica" if entry is not None else "server"
        log.info("served credentials", extra={"fields": fields})

    async def _container_credentials(
        self, request: web.Request, deadline: float
    ) -> web.Response:
        """The token decides, never the address (docs/token-credentials.md)."""
        token = token_from_header(request.headers.get("Authorization"))
        key = digest(token)
        answer = self.token_answers.get(key, wall=time.time())
        if answer is None:
            fetch = self._token_fetches.get(key)
            if fetch is None:
                # one RPC per token at a time: a pod's containers share one token file
                fetch = asyncio.ensure_future(self._ask_token(token, key, deadline))
                self._token_fetches[key] = fetch
                fetch.add_done_callback(lambda done: self._fetched(key, done))
            answer = await asyncio.shield(fetch)
        caller = _peer_ip(request)
        new = self.audit.is_new(
            ip=f"{caller} {answer.pod}", pod_uid="", access_key_id=answer.access_key_id
        )
        self._served[new].inc()
        if new:
            # never the secret, the session token or the service-account token
            fields = {
                "pod.ip": caller,
                "role": answer.role_arn,
                "access.key.id": answer.access_key_id,
                "pod": answer.pod,
                "source": "token",
            }
            log.info("served credentials", extra={"fields": fields})
        return web.Response(status=200, body=answer.body, headers={"Content-Type": JSON})

    async def _ask_token(self, token: str, key: bytes, deadline: float) -> TokenAnswer:
        try:
            reply = await self.client.token_credentials(token, budget=_left(deadline))
            try:
                answer = answer_of(reply, token=token, session_refresh=self.config.session_refresh)
            except ValueError as exc:
                raise ServerFailed(f"the kiam server sent unreadable credentials: {exc}") from None
        except AgentError:
            metrics.credential_fetch_errors.inc()
            raise
        self.token_answers.put(key, answer, wall=time.time())
        return answer

    def _fetched(self, key: bytes, done: asyncio.Future[TokenAnswer]) -> None:
        self._token_fetches.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone (shield)

    async def _proxy(self, request: web.Request, route: Route, deadline: float) -> web.Response:
        if route.kind is RouteKind.IAM_BLOCKED or not self.config.allow.permits(route.path):
            metrics.proxy_blocked.inc()
            raise NotFound(
                f"request blocked by allow-route-regexp {self.config.allow.expression!r}: "
                f"{route.path}"
            )
        upstream = await self.proxy.get(route.path, method=request.method, budget=_left(deadline))
        return web.Response(status=upstream.status, body=upstream.body, headers=upstream.headers)


_PEERS: dict[str, PodIP] = {}
_MAX_PEERS = 4096
"""Peer addresses as the socket gives them -> their normalised form, parsed once each."""


def _peer_ip(request: web.Request) -> PodIP:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        raise BadRequest("cannot tell the caller's address")
    text = str(peer[0])
    ip = _PEERS.get(text)
    if ip is None:
        ip = normalise_ip(text)
        if len(_PEERS) >= _MAX_PEERS:
            _PEERS.clear()  # a node has far fewer pods; only a scan gets here
        _PEERS[text] = ip
    return ip


def _container_route(raw_path: str) -> Route:
    if raw_path != CONTAINER_CREDENTIALS_PATH:
        raise NotFound(f"no such path; the credentials are at {CONTAINER_CREDENTIALS_PATH}")
    return _CONTAINER_CREDENTIALS


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def _redirect_to_slash(request: web.Request, route: Route) -> web.Response:
    """301 to the list's canonical form, as Go Kiam answers (docs/architecture.md).

    The Location is a path with no scheme or host, so the client comes back to whatever
    address it reached us by (169.254.169.254 through the DNAT rule, or the agent itself).
    """
    location = route.path + "/"
    if request.query_string:
        location += "?" + request.query_string
    return web.Response(status=301, headers={"Location": location})
