"""Who a service-account token belongs to, asked of the API server (TokenReview).

The server's side of token credentials (docs/token-credentials.md): a pod presents its
projected token; :class:`TokenReviewer` sends it to ``authentication.k8s.io/v1``
TokenReview for the configured audience and reads the pod the token is bound to
(``authentication.kubernetes.io/pod-name`` / ``pod-uid``). A token not bound to a pod is
refused: only a pod's own token names a pod.

Answers are kept per SHA-256 digest of the token (never the token itself) for
``ttl`` seconds, refusals for ``refusal_ttl``, at most ``max_entries`` of them (oldest
dropped first); concurrent reviews of one token make one API call. The cache only saves
API calls: the caller still requires the bound pod to be live in its pod cache with the
same uid, so a deleted pod's token is refused at once whatever the cache holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"
_SA_PREFIX = "system:serviceaccount:"


class TokenRefused(Exception):
    """The API server does not vouch for the token for a pod; the message says why."""


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    """The pod a reviewed token is bound to."""

    namespace: str
    pod_name: str
    pod_uid: str
    service_account: str


class Poster(Protocol):
    """What the reviewer needs of :class:`kiam.k8s.client.KubeClient`."""

    async def post_json(self, path: str, body: Any) -> Any: ...


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def identity_from_review(review: Any) -> TokenIdentity:
    """The pod of an answered TokenReview; TokenRefused with the API's reason if none."""
    status = review.get("status") if isinstance(review, dict) else None
    if not isinstance(status, dict):
        raise TokenRefused("the API server's TokenReview answer has no status")
    if status.get("authenticated") is not True:
        error = " ".join(str(status.get("error") or "not authenticated").split())
        raise TokenRefused(f"token refused by the API server: {error}")
    user = _mapping(status.get("user"))
    username = str(user.get("username", ""))
    if not username.startswith(_SA_PREFIX) or username.count(":") != 3:
        raise TokenRefused(f"the token is not a service account's ({username or 'no user'})")
    namespace, account = username[len(_SA_PREFIX):].split(":")
    extra = _mapping(user.get("extra"))

    def single(key: str) -> str:
        values = extra.get(key)
        if isinstance(values, list) and len(values) == 1 and isinstance(values[0], str):
            return values[0]
        return ""

    name, uid = single(POD_NAME), single(POD_UID)
    if not (namespace and name and uid):
        raise TokenRefused("the token is not bound to a pod (use a projected "
                           "service-account token volume)")
    return TokenIdentity(namespace=namespace, pod_name=name, pod_uid=uid,
                         service_account=account)


@dataclass(slots=True)
class _Kept:
    expires: float
    answer: TokenIdentity | TokenRefused


class TokenReviewer:
    """TokenReview with a bounded cache by digest and one call per token at a time."""

    def __init__(
        self,
        kube: Poster,
        *,
        audience: str,
        ttl: float = 30.0,
        refusal_ttl: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self.audience = audience
        self._ttl = ttl
        self._refusal_ttl = refusal_ttl
        self._max = max_entries
        self._clock = clock
        self._kept: OrderedDict[bytes, _Kept] = OrderedDict()
        self._flights: dict[bytes, asyncio.Future[TokenIdentity]] = {}
        self.api_calls = 0

    def __len__(self) -> int:
        return len(self._kept)

    async def review(self, token: str) -> TokenIdentity:
        """The pod ``token`` is bound to. Raises TokenRefused, or
        :class:`~kiam.k8s.errors.KubeError` when the API server cannot be asked (not
        kept)."""
        if not token:
            raise TokenRefused("empty token")
        digest = hashlib.sha256(token.encode()).digest()
        kept = self._kept.get(digest)
        if kept is not None and kept.expires > self._clock():
            if isinstance(kept.answer, TokenRefused):
                raise kept.answer
            return kept.answer
        flight = self._flights.get(digest)
        if flight is None:
            # a task, so a waiter that gives up never cancels the call the others wait for
            flight = asyncio.ensure_future(self._ask(digest, token))
            self._flights[digest] = flight
            flight.add_done_callback(lambda _: self._flights.pop(digest, None))
        return await asyncio.shield(flight)

    async def _ask(self, digest: bytes, token: str) -> TokenIdentity:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": [self.audience]}}
        self.api_calls += 1
        review = await self._kube.post_json(TOKEN_REVIEWS, body)
        try:
            identity = identity_from_review(review)
        except TokenRefused as exc:
            self._keep(digest, exc, self._refusal_ttl)
            raise
        self._keep(digest, identity, self._ttl)
        return identity

    def _keep(self, digest: bytes, answer: TokenIdentity | TokenRefused, ttl: float) -> None:
        self._kept[digest] = _Kept(expires=self._clock() + ttl, answer=answer)
        self._kept.move_to_end(digest)
        while len(self._kept) > self._max:
            self._kept.popitem(last=False)
