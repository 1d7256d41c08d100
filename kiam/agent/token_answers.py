"""Token credentials on the agent, the pure part (docs/token-credentials.md, "On the agent").

- :func:`token_from_header`: the ``Authorization`` header the AWS SDKs send to the
  container credentials endpoint is the pod's projected service-account token itself
  (the contents of ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE``), a JWT. Missing, or not
  shaped like a JWT (three base64url segments), is the pod's mistake: 400 with the
  reason. Whether the token is good is the API server's word, through a kiam server.
- :func:`container_document`: the JSON the SDKs' container provider reads.
- :class:`TokenAnswers`: answers kept by the SHA-256 digest of the token (never the
  token), until the credentials come within ``--session-refresh`` of their expiry or
  the token itself expires, whichever is first; at most ``capacity`` tokens.

No I/O here; :mod:`kiam.agent.token_endpoint` is the HTTP side.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass

import orjson

from kiam.agent.errors import BadRequest
from kiam.wire import kiam_pb2
from kiam.wire.credentials import format_timestamp, parse_timestamp

MAX_TOKEN = 8192
"""Longest token accepted, in characters (aiohttp refuses longer header lines anyway)."""
CAPACITY = 4096
"""Tokens whose answers are kept; a node has far fewer pods."""

_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_ACCOUNT = re.compile(r"arn:[a-z-]+:iam::(\d{12}):role/.+")


def token_from_header(value: str | None) -> str:
    """The token an ``Authorization`` header carries; :class:`BadRequest` saying why not."""
    if value is None:
        raise BadRequest(
            "missing Authorization header: send the pod's service-account token "
            "(AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)"
        )
    token = value.strip()
    if not token:
        raise BadRequest("empty Authorization header: the token file is empty")
    if len(token) > MAX_TOKEN:
        raise BadRequest(f"Authorization header over {MAX_TOKEN} characters")
    if _JWT.fullmatch(token) is None:
        raise BadRequest(
            "Authorization header is not a service-account token (a JWT: three base64url "
            "parts joined by dots, no scheme such as 'Bearer')"
        )
    return token


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT-shaped token, read without checking anything.

    Only ever used to forget a cached answer sooner, never to accept a token: the kiam
    server has the API server review every token before any answer exists.
    """
    payload = token.split(".")[1]
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def account_of(role_arn: str) -> str:
    """The 12-digit account of a role ARN; ``""`` when it is not one."""
    match = _ACCOUNT.fullmatch(role_arn)
    return match.group(1) if match else ""


def container_document(reply: kiam_pb2.TokenCredentials) -> bytes:
    """The container credentials JSON (``AccessKeyId``, ``SecretAccessKey``, ``Token``,
    ``AccountId``, ``Expiration``); ValueError when the server's timestamps are unreadable."""
    credentials = reply.credentials
    return orjson.dumps(
        {
            "AccessKeyId": credentials.access_key_id,
            "SecretAccessKey": credentials.secret_access_key,
            "Token": credentials.token,
            "AccountId": account_of(reply.role_arn),
            "Expiration": format_timestamp(parse_timestamp(credentials.expiration)),
        }
    )


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """One token's answer: the bytes to send and what the audit line says."""

    body: bytes
    access_key_id: str
    role_arn: str
    pod: str
    """``namespace/name`` of the pod the token is bound to."""
    fresh_until: float
    """Wall-clock seconds; from then on a server is asked again."""


def answer_of(
    reply: kiam_pb2.TokenCredentials, *, token: str, session_refresh: float
) -> TokenAnswer:
    """The answer to keep for ``token``; ValueError when the reply is unreadable."""
    body = container_document(reply)
    fresh_until = parse_timestamp(reply.credentials.expiration).timestamp() - session_refresh
    expiry = token_expiry(token)
    if expiry is not None:
        fresh_until = min(fresh_until, expiry)
    return TokenAnswer(
        body=body,
        access_key_id=reply.credentials.access_key_id,
        role_arn=reply.role_arn,
        pod=f"{reply.pod_namespace}/{reply.pod_name}",
        fresh_until=fresh_until,
    )


class TokenAnswers:
    """Answers by token digest, each until its ``fresh_until``; the least recently used
    goes first past ``capacity``."""

    def __init__(self, *, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._answers: OrderedDict[bytes, TokenAnswer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: bytes, *, wall: float) -> TokenAnswer | None:
        answer = self._answers.get(key)
        if answer is None:
            return None
        if wall >= answer.fresh_until:
            del self._answers[key]
            return None
        self._answers.move_to_end(key)
        return answer

    def put(self, key: bytes, answer: TokenAnswer, *, wall: float) -> None:
        if wall >= answer.fresh_until:
            return  # nothing left to keep it for
        self._answers[key] = answer
        self._answers.move_to_end(key)
        while len(self._answers) > self.capacity:
            self._answers.popitem(last=False)

    def purge(self, *, wall: float) -> None:
        """Forget every answer past its time."""
        for key in [k for k, a in self._answers.items() if wall >= a.fresh_until]:
            del self._answers[key]


__all__ = [
    "TokenAnswer",
    "TokenAnswers",
    "account_of",
    "answer_of",
    "container_document",
    "digest",
    "token_expiry",
    "token_from_header",
]
