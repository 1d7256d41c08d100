"""``kiam.KiamTokenService``: token credentials (docs/token-credentials.md).

The agent passes on the projected service-account token a pod presented to its container
credentials endpoint. The pod is the one the token is bound to, as the API server says
(:class:`kiam.k8s.token_review.TokenReviewer`), and it must be live in the pod cache with
the same uid (a deleted pod's token is refused at once, whatever the review cache holds;
hostNetwork pods included, since no address is involved). Then the same policy as for an
IP: the pod's own annotation, the namespace's expression, session name, external ID
(:meth:`kiam.server.policy.Policy.decide_own_role`), and the same credential cache.

Refusals are rows of :mod:`kiam.wire.status`: TOKEN_REFUSED (401) for a token the API
server does not vouch for or whose pod is gone, ROLE_FORBIDDEN (403) for a policy denial
(with the ``KiamRoleForbidden`` Event), CREDENTIALS_FAILED/DEADLINE_EXCEEDED as for IPs,
UNAVAILABLE when the API server cannot review the token or the caches have not synced.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from kiam.aws.arn import RoleArn
from kiam.aws.credentials import Credentials
from kiam.k8s.errors import KubeError
from kiam.k8s.model import PodInfo
from kiam.k8s.token_review import TokenIdentity, TokenRefused
from kiam.server.node_entries import credentials_message
from kiam.server.policy import Allowed, Policy
from kiam.server.prefetch import permitted_expression
from kiam.server.service import (
    DEADLINE_MARGIN,
    ROLE_FORBIDDEN,
    ROLE_FORBIDDEN_LOG,
    Context,
    CredentialSource,
    EventSink,
    NamespaceLookup,
    fetch_credentials,
)
from kiam.wire import kiam_pb2, kiam_pb2_grpc, status

log = logging.getLogger(__name__)

NAMESPACE_WAIT = 1.0
"""Seconds to wait for the pod's namespace to reach the cache."""
POD_WAIT = 1.0
"""Seconds to wait for the token's pod to reach the cache, when the call has no deadline
(the watch may deliver a new pod after its first request)."""


class Reviewer(Protocol):
    """What the service needs of :class:`kiam.k8s.token_review.TokenReviewer`."""

    async def review(self, token: str) -> TokenIdentity: ...


class PodsByUid(Protocol):
    """What the service needs of :class:`kiam.k8s.pod_cache.PodCache`."""

    async def wait_for_uid(self, uid: str, *, timeout: float) -> PodInfo | None: ...  # noqa: ASYNC109


class KiamTokenService(kiam_pb2_grpc.KiamTokenServiceServicer):
    """The servicer; ``require_ready`` is the IP service's (synced caches, not draining)."""

    def __init__(
        self,
        *,
        reviewer: Reviewer,
        pods: PodsByUid,
        namespaces: NamespaceLookup,
        events: EventSink,
        credentials: CredentialSource,
        policy: Policy,
        require_ready: Callable[[Context], Awaitable[None]],
    ) -> None:
        self._reviewer = reviewer
        self._pods = pods
        self._namespaces = namespaces
        self._events = events
        self._credentials = credentials
        self._policy = policy
        self._require_ready = require_ready

    async def GetTokenCredentials(
        self, request: kiam_pb2.GetTokenCredentialsRequest, context: Context
    ) -> kiam_pb2.TokenCredentials:
        await self._require_ready(context)
        pod = await self._pod_of(request.token, context)
        fields = {"pod.namespace": pod.namespace, "pod.name": pod.name, "via": "token"}
        permitted = await permitted_expression(
            self._namespaces, pod.namespace, budget=NAMESPACE_WAIT
        )
        decision = self._policy.decide_own_role(pod=pod, permitted=permitted)
        if not isinstance(decision, Allowed):
            log.warning(ROLE_FORBIDDEN_LOG, decision.reason, extra={"fields": fields})
            self._events.warning(pod, ROLE_FORBIDDEN, decision.reason)
            await status.abort(context, status.ROLE_FORBIDDEN, decision.reason)
        credentials = await fetch_credentials(
            self._credentials, decision, pod=pod, context=context, events=self._events,
            fields={**fields, "role": decision.role_arn},
        )
        log.info("issued credentials", extra={"fields": {
            **fields, "role": decision.role_arn, "access.key.id": credentials.access_key_id}})
        return _answer(credentials, decision.role_arn, pod)

    async def _pod_of(self, token: str, context: Context) -> PodInfo:
        try:
            identity = await self._reviewer.review(token)
        except TokenRefused as exc:
            return await status.abort(context, status.TOKEN_REFUSED, str(exc))
        except KubeError as exc:
            return await status.abort(
                context, status.UNAVAILABLE, f"cannot review the token with the API server: {exc}"
            )
        remaining = context.time_remaining()
        budget = POD_WAIT if remaining is None else max(remaining - DEADLINE_MARGIN, 0.0)
        pod = await self._pods.wait_for_uid(identity.pod_uid, timeout=budget)
        where = f"{identity.namespace}/{identity.pod_name}"
        if pod is None or (pod.namespace, pod.name) != (identity.namespace, identity.pod_name):
            return await status.abort(
                context, status.TOKEN_REFUSED,
                f"the token's pod {where} (uid {identity.pod_uid}) is not running",
            )
        return pod


def _answer(credentials: Credentials, role_arn: RoleArn, pod: PodInfo) -> kiam_pb2.TokenCredentials:
    return kiam_pb2.TokenCredentials(
        credentials=credentials_message(credentials),
        role_arn=role_arn,
        pod_namespace=pod.namespace,
        pod_name=pod.name,
    )
