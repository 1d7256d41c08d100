"""Service-account tokens as the apiserver issues and reviews them (TokenRequest,
TokenReview), for kiam's token credentials (docs/token-credentials.md).

A token is an ES256 JWT signed with a key made when the emulator starts, with the claims a
real apiserver writes: ``iss``, ``aud``, ``exp``/``iat``/``nbf``, ``jti``, ``sub``
(``system:serviceaccount:NS:NAME``) and ``kubernetes.io`` (namespace, service account
name and uid, and the bound pod's name and uid). A review checks the signature, expiry,
audience (the review's, else the apiserver's own), and that the service account and the
bound pod still exist with the uids in the token (a terminating pod's until a minute past
its ``deletionTimestamp``), as the apiserver does for bound tokens.
"""

from __future__ import annotations

import calendar
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from kiam_testbed.kube import errors
from kiam_testbed.kube.errors import JsonObject, KubeApiError

API_AUDIENCE = "https://kubernetes.default.svc"
"""The apiserver's own audience: what a token is for when a request names none."""
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
GROUP_VERSION = "authentication.k8s.io/v1"
DELETED_LEEWAY = 60.0

Lookup = Callable[[str, str], JsonObject | None]
"""(namespace, name) -> the stored object, or None."""


def _rfc3339(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _invalid(kind: str, field: str, message: str) -> KubeApiError:
    return errors.invalid(kind=kind, group="authentication.k8s.io", name="",
                          causes=[("FieldValueInvalid", field, message)])


class TokenAuthority:
    """Signs bound service-account tokens and reviews them (the clock is injectable)."""

    def __init__(self, *, issuer: str = API_AUDIENCE,
                 clock: Callable[[], float] = time.time) -> None:
        self.issuer = issuer
        self._clock = clock
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._key_id = uuid.uuid4().hex

    def request_token(self, *, namespace: str, service_account: JsonObject, body: Any,
                      pods: Lookup, issued_at: float | None = None) -> JsonObject:
        """``POST .../serviceaccounts/NAME/token``: the TokenRequest, its status filled."""
        if not isinstance(body, dict):
            raise errors.bad_request("a TokenRequest must be a JSON object")
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise errors.bad_request("TokenRequest.spec must be a JSON object")
        audiences = spec.get("audiences") or [API_AUDIENCE]
        if not isinstance(audiences, list) or not all(isinstance(a, str) and a
                                                      for a in audiences):
            raise _invalid("TokenRequest", "spec.audiences", "must be a list of strings")
        expiration = spec.get("expirationSeconds", DEFAULT_EXPIRATION)
        if not isinstance(expiration, int) or isinstance(expiration, bool):
            raise _invalid("TokenRequest", "spec.expirationSeconds", "must be an integer")
        if expiration < MIN_EXPIRATION:
            raise _invalid("TokenRequest", "spec.expirationSeconds",
                           "may not specify a duration less than 10 minutes")
        sa_meta = service_account["metadata"]
        claims_k8s: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": sa_meta["name"], "uid": sa_meta["uid"]},
        }
        bound = spec.get("boundObjectRef")
        if bound is not None:
            claims_k8s["pod"] = self._bound_pod(namespace, bound, pods)
        now = int(self._clock() if issued_at is None else issued_at)
        claims = {
            "iss": self.issuer, "aud": audiences, "iat": now, "nbf": now,
            "exp": now + expiration, "jti": str(uuid.uuid4()),
            "sub": f"system:serviceaccount:{namespace}:{sa_meta['name']}",
            "kubernetes.io": claims_k8s,
        }
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._key_id})
        return {
            "kind": "TokenRequest", "apiVersion": GROUP_VERSION,
            "metadata": {"name": sa_meta["name"], "namespace": namespace,
                         "creationTimestamp": _rfc3339(now)},
            "spec": {**spec, "audiences": audiences, "expirationSeconds": expiration},
            "status": {"token": token, "expirationTimestamp": _rfc3339(now + expiration)},
        }

    def _bound_pod(self, namespace: str, bound: Any, pods: Lookup) -> dict[str, str]:
        if not isinstance(bound, dict) or bound.get("kind") != "Pod":
            raise _invalid("TokenRequest", "spec.boundObjectRef.kind",
                           'Unsupported value: supported values: "Pod"')
        name = bound.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid("TokenRequest", "spec.boundObjectRef.name", "Required value")
        pod = pods(namespace, name)
        if pod is None:
            raise errors.not_found(plural="pods", group="", name=name)
        uid = pod["metadata"]["uid"]
        wanted = bound.get("uid")
        if wanted and wanted != uid:
            raise KubeApiError(errors.status_body(
                code=409, message=f"the UID in the bound object reference ({wanted}) does not "
                f"match the UID in record. The object might have been deleted and then "
                f"recreated", reason="Conflict"))
        return {"name": name, "uid": uid}

    def _deleted_long_ago(self, stamp: Any) -> bool:
        """As the apiserver: a terminating pod's token holds until a minute past the end
        of its grace period (``deletionTimestamp``)."""
        if not isinstance(stamp, str):
            return False
        try:
            moment = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            return False
        return moment < self._clock() - DELETED_LEEWAY

    def review(self, body: Any, *, service_accounts: Lookup, pods: Lookup) -> JsonObject:
        """``POST /apis/authentication.k8s.io/v1/tokenreviews``: the review, answered."""
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise errors.bad_request("a TokenReview must be a JSON object with a spec")
        spec = body["spec"]
        token = spec.get("token")
        wanted = spec.get("audiences") or [API_AUDIENCE]
        if not isinstance(wanted, list) or not all(isinstance(a, str) for a in wanted):
            raise _invalid("TokenReview", "spec.audiences", "must be a list of strings")
        status = self._review_status(token, wanted, service_accounts, pods)
        return {"kind": "TokenReview", "apiVersion": GROUP_VERSION,
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}

    def _review_status(self, token: Any, wanted: list[str], service_accounts: Lookup,
                       pods: Lookup) -> JsonObject:
        def refused(error: str) -> JsonObject:
            return {"authenticated": False, "user": {}, "error": error}

        if not isinstance(token, str) or not token:
            return refused("token is empty")
        try:
            # the audience is compared below, the times against our clock (PyJWT has none)
            claims = jwt.decode(
                token, self._key.public_key(), algorithms=["ES256"], issuer=self.issuer,
                options={"verify_aud": False, "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False, "require": ["exp", "iat", "iss", "sub"]},
            )
        except jwt.InvalidTokenError:
            return refused("[invalid bearer token, square/go-jose: error in cryptographic "
                           "primitive, token lookup failed]")
        expires = claims["exp"]
        if not isinstance(expires, int) or expires <= self._clock():
            return refused("[invalid bearer token, service account token has expired]")
        audiences = claims.get("aud")
        held = audiences if isinstance(audiences, list) else [audiences]
        shared = [a for a in wanted if a in held]
        if not shared:
            return refused("[invalid bearer token, token audiences "
                           f"{held!r} is invalid for the target audiences {wanted!r}]")
        k8s = claims.get("kubernetes.io") or {}
        namespace = k8s.get("namespace", "")
        account = k8s.get("serviceaccount") or {}
        current = service_accounts(namespace, account.get("name", ""))
        if current is None or current["metadata"]["uid"] != account.get("uid"):
            return refused(f"[invalid bearer token, service account {namespace}/"
                           f"{account.get('name', '')} has been deleted]")
        extra: dict[str, list[str]] = {
            "authentication.kubernetes.io/credential-id": [f"JTI={claims.get('jti', '')}"],
        }
        bound = k8s.get("pod")
        if bound is not None:
            pod = pods(namespace, bound.get("name", ""))
            if pod is None:
                return refused(f"[invalid bearer token, pod {namespace}/{bound.get('name')} "
                               "has been deleted]")
            if pod["metadata"]["uid"] != bound.get("uid"):
                return refused(f"[invalid bearer token, pod {namespace}/{bound.get('name')} "
                               "has been deleted and recreated (uid mismatch)]")
            if self._deleted_long_ago(pod["metadata"].get("deletionTimestamp")):
                return refused("[invalid bearer token, service account token has been "
                               "invalidated]")
            extra["authentication.kubernetes.io/pod-name"] = [bound["name"]]
            extra["authentication.kubernetes.io/pod-uid"] = [bound["uid"]]
        return {
            "authenticated": True,
            "user": {
                "username": claims["sub"],
                "uid": account.get("uid", ""),
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                           "system:authenticated"],
                "extra": extra,
            },
            "audiences": shared,
        }
