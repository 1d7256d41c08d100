"""``kiam.KiamService``: who is at this IP, what role may it have, and its credentials.

Every refusal is a row of the status table, :mod:`kiam.wire.status` (quoted in
docs/architecture.md), sent with its :func:`~kiam.wire.status.abort`: a policy refusal
and an unknown pod go out with Go Kiam's fixed messages, which Go's agents compare,
and the reason given here travels beside them.

An IP the pod cache does not know yet is waited for (event-driven) for as long as the
client's deadline allows, less a margin to answer in; a client without a deadline gets
:data:`DEFAULT_WAIT` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from grpc import aio

from kiam.aws.credentials import CredentialKey, Credentials
from kiam.aws.errors import AwsError
from kiam.common.net import PodIP, normalise_ip
from kiam.k8s.errors import AmbiguousPodIP
from kiam.k8s.model import PodInfo
from kiam.server.node_entries import credentials_message
from kiam.server.policy import Allowed, Policy
from kiam.server.prefetch import Namespaces, permitted_expression
from kiam.wire import kiam_pb2, kiam_pb2_grpc, status

log = logging.getLogger(__name__)

DEFAULT_WAIT = 3.0
"""Seconds to wait for an unknown IP when the client sent no deadline."""
DEADLINE_MARGIN = 0.1
"""Seconds kept back from the client's deadline to send the answer in."""

ROLE_FORBIDDEN = "KiamRoleForbidden"
"""The reason of the Warning Event on a pod refused its role (message: the Denied reason)."""
CREDENTIAL_ERROR = "KiamCredentialError"
"""The reason of the Warning Event on a pod whose credentials STS did not issue."""
ROLE_FORBIDDEN_LOG = "role forbidden: %s"
AMBIGUOUS_LOG = "ambiguous pod IP: %s"


def no_pod_message(ip: str) -> str:
    """What an agent is told (POD_NOT_FOUND) when no pod owns ``ip``."""
    return f"no running pod has IP {ip}"


def fetch_error_message(role_arn: str, error: Exception) -> str:
    """The log line and KiamCredentialError message when STS did not issue credentials."""
    return f"error fetching credentials for {role_arn}: {error}"


Context = aio.ServicerContext[Any, Any]


class PodLookup(Protocol):
    """What the service needs of ``kiam.k8s.pod_cache.PodCache``."""

    @property
    def synced(self) -> asyncio.Event: ...

    def find_by_ip(self, ip: PodIP) -> PodInfo | None: ...

    async def wait_for_ip(self, ip: PodIP, *, timeout: float) -> PodInfo | None: ...  # noqa: ASYNC109


class NamespaceLookup(Namespaces, Protocol):
    """What the service needs of ``kiam.k8s.namespace_cache.NamespaceCache``."""

    @property
    def synced(self) -> asyncio.Event: ...


class EventSink(Protocol):
    """What the service needs of ``kiam.k8s.events.EventRecorder``."""

    def warning(self, pod: PodInfo, reason: str, message: str) -> None: ...


class CredentialSource(Protocol):
    """What the service needs of ``kiam.aws.credential_cache.CredentialCache``."""

    async def get(self, key: CredentialKey) -> Credentials: ...


def _pod_fields(pod: PodInfo, ip: str) -> dict[str, str]:
    return {"pod.namespace": pod.namespace, "pod.name": pod.name, "pod.ip": ip}


class KiamService(kiam_pb2_grpc.KiamServiceServicer):
    """The servicer; ``draining`` turns every call into UNAVAILABLE during shutdown."""

    def __init__(
        self,
        *,
        pods: PodLookup,
        namespaces: NamespaceLookup,
        events: EventSink,
        credentials: CredentialSource,
        policy: Policy,
        default_wait: float = DEFAULT_WAIT,
    ) -> None:
        self._pods = pods
        self._namespaces = namespaces
        self._events = events
        self._credentials = credentials
        self._policy = policy
        self._default_wait = default_wait
        self.draining = False

    @property
    def ready(self) -> bool:
        """Both caches have synced and we are not shutting down."""
        return not self.draining and self._pods.synced.is_set() and self._namespaces.synced.is_set()

    async def GetHealth(
        self, request: kiam_pb2.GetHealthRequest, context: Context
    ) -> kiam_pb2.HealthStatus:
        await self.require_ready(context)
        return kiam_pb2.HealthStatus(message="ok")

    async def GetPodRole(
        self, request: kiam_pb2.GetPodRoleRequest, context: Context
    ) -> kiam_pb2.Role:
        await self.require_ready(context)
        ip = await self._parse_ip(request.ip, context)
        pod = await self._find_pod(ip, context)
        name = self._policy.role_name_of(pod)
        log.debug(
            "found role", extra={"fields": {**_pod_fields(pod, ip), "role": name or "(none)"}}
        )
        return kiam_pb2.Role(name=name)

    async def GetPodCredentials(
        self, request: kiam_pb2.GetPodCredentialsRequest, context: Context
    ) -> kiam_pb2.Credentials:
        await self.require_ready(context)
        ip = await self._parse_ip(request.ip, context)
        pod = await self._find_pod(ip, context)
        fields = {**_pod_fields(pod, ip), "role": request.role}
        permitted = await self._permitted(pod.namespace, context)
        decision = self._policy.decide(pod=pod, requested_role=request.role, permitted=permitted)
        if not isinstance(decision, Allowed):
            log.warning(ROLE_FORBIDDEN_LOG, decision.reason, extra={"fields": fields})
            self._events.warning(pod, ROLE_FORBIDDEN, decision.reason)
            await status.abort(context, status.ROLE_FORBIDDEN, decision.reason)
        credentials = await fetch_credentials(
            self._credentials, decision, pod=pod, context=context, events=self._events,
            fields=fields,
        )
        log.info(
            "issued credentials",
            extra={"fields": {**fields, "access.key.id": credentials.access_key_id}},
        )
        return credentials_message(credentials)

    # ------------------------------------------------------------ steps

    async def require_ready(self, context: Context) -> None:
        if self.draining:
            await status.abort(context, status.UNAVAILABLE, "kiam server is shutting down")
        if not self.ready:
            await status.abort(
                context,
                status.UNAVAILABLE,
                "kiam server has not synced its pod and namespace caches yet",
            )

    async def _parse_ip(self, text: str, context: Context) -> PodIP:
        try:
            return normalise_ip(text)
        except ValueError:
            return await status.abort(context, status.INVALID_IP, f"not an IP address: {text!r}")

    def _budget(self, context: Context) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return self._default_wait
        return remaining - DEADLINE_MARGIN

    async def _find_pod(self, ip: PodIP, context: Context) -> PodInfo:
        try:
            pod = self._pods.find_by_ip(ip)
            if pod is None:
                budget = self._budget(context)
                if budget > 0:
                    log.debug(
                        "waiting for a pod with this IP",
                        extra={"fields": {"pod.ip": ip, "wait": round(budget, 3)}},
                    )
                    pod = await self._pods.wait_for_ip(ip, timeout=budget)
        except AmbiguousPodIP as exc:
            log.warning(AMBIGUOUS_LOG, exc, extra={"fields": {"pod.ip": ip}})
            await status.abort(context, status.AMBIGUOUS_POD, str(exc))
        if pod is None:
            await status.abort(context, status.POD_NOT_FOUND, no_pod_message(ip))
        return pod

    async def _permitted(self, namespace: str, context: Context) -> str | None:
        return await permitted_expression(
            self._namespaces, namespace, budget=self._budget(context)
        )


async def fetch_credentials(
    source: CredentialSource,
    decision: Allowed,
    *,
    pod: PodInfo,
    context: Context,
    events: EventSink,
    fields: dict[str, str],
) -> Credentials:
    """The credentials ``decision`` allows, within the call's deadline; a failure ends the
    call with its row (DEADLINE_EXCEEDED, CREDENTIALS_FAILED) and, when STS refused anew,
    a ``KiamCredentialError`` Event. Shared by the IP and the token RPCs."""
    remaining = context.time_remaining()
    try:
        async with asyncio.timeout(remaining):
            return await source.get(decision.key)
    except TimeoutError:
        message = f"deadline passed while fetching credentials for {decision.role_arn}"
        log.warning("%s", message, extra={"fields": fields})
        return await status.abort(context, status.DEADLINE_EXCEEDED, message)
    except AwsError as exc:
        message = fetch_error_message(decision.role_arn, exc)
        if exc.remembered:
            # reported when STS refused; again only once the window ends (docs/sts.md)
            log.debug("%s (remembered refusal)", message, extra={"fields": fields})
        else:
            log.error("%s", message, extra={"fields": fields})
            events.warning(pod, CREDENTIAL_ERROR, message)
        return await status.abort(context, status.CREDENTIALS_FAILED, message)
