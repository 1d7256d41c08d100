"""Request paths: one normalisation, then one classification.

Every decision (which handler, whether the allow-list permits a proxied path, which
role is asked for) is made on the normalised path, and the proxy forwards exactly that
path, never the raw one. So ``..``, ``//``, percent-encoding and query strings cannot
steer a request somewhere the decision did not look at.

Normalisation (``normalise_path``):

* the query string is split off (the proxy never forwards it);
* an encoded ``/``, ``.``, ``\\`` or NUL (``%2f``, ``%2e``, ``%5c``, ``%00``) is refused:
  IMDS paths never need them and they are the usual way to smuggle separators;
* the rest is percent-decoded once (a malformed escape is refused), and the result may
  hold only RFC 3986 path characters without ``%`` (so no double encoding, ``?``, ``#``,
  space or non-ASCII survives);
* dot segments are resolved (``..`` above the root is refused) and empty segments are
  dropped, which collapses ``//``; a trailing ``/`` is kept, since IMDS lists differ
  from leaves by it.

Classification (``classify``) follows the agent's route table (docs/architecture.md).
``{v}`` is any single version segment (``latest``, ``2016-09-02``...). The credential
routes are matched case-sensitively, as IMDS does; any other casing of the
``iam/security-credentials`` subtree is never proxied (it is answered 404), so no
allow-list can forward another role's path.

The allow-list regular expression (``--allow-route-regexp``) is searched (unanchored,
as Go's ``MatchString``) in the whole normalised path including the version segment,
for example ``^/latest/meta-data/instance-id$``, which keeps Kiam's documented
expressions (``^/latest/meta-data/placement/availability-zone$``) working unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from kiam.agent.errors import BadRequest

_FORBIDDEN_ESCAPES = re.compile(r"%(2f|2e|5c|00)", re.IGNORECASE)
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_MAX_PATH = 2048
# RFC 3986 path characters, without '%': the decoded path can then be sent upstream
# as it is, and no escape, '?' or '#' can appear in it after decoding.
_SAFE = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@/-]*")


def split_target(raw_target: str) -> tuple[str, str]:
    """``/path?query`` -> (``/path``, ``query``)."""
    path, _, query = raw_target.partition("?")
    return path, query


def normalise_path(raw_path: str) -> str:
    """The canonical form of a raw request path (without its query); BadRequest otherwise."""
    if not raw_path.startswith("/"):
        raise BadRequest("request path must start with '/'")
    if len(raw_path) > _MAX_PATH:
        raise BadRequest(f"request path longer than {_MAX_PATH} characters")
    if _FORBIDDEN_ESCAPES.search(raw_path):
        raise BadRequest("percent-encoded '/', '.', '\\' or NUL is not allowed in the path")
    if "%" in _ESCAPE.sub("", raw_path):
        raise BadRequest("malformed percent-encoding in the path")
    # every escape left is two hex digits (checked above), so int() cannot fail
    decoded = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), raw_path)
    if not _SAFE.fullmatch(decoded):
        raise BadRequest(
            "the decoded path may hold only letters, digits, '/' and -._~!$&'()*+,;=:@"
        )
    segments: list[str] = []
    parts = decoded.split("/")[1:]
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not segments:
                raise BadRequest("'..' above the root is not allowed in the path")
            segments.pop()
            continue
        segments.append(part)
    trailing = bool(segments) and parts[-1] in ("", ".", "..")
    return "/" + "/".join(segments) + ("/" if trailing else "")


class RouteKind(Enum):
    PING = "ping"
    HEALTH = "health"
    TOKEN = "token"
    ROLE_NAME_REDIRECT = "roleNameRedirect"
    ROLE_NAME = "roleName"
    CREDENTIALS = "credentials"
    IAM_BLOCKED = "iamBlocked"
    PROXY = "proxy"
    CONTAINER_CREDENTIALS = "containerCredentials"
    """``GET /v1/credentials`` on the token credentials listener only (never on the
    metadata port: :func:`classify` does not return it)."""


@dataclass(frozen=True, slots=True)
class Route:
    kind: RouteKind
    path: str
    """The normalised path (what the proxy forwards)."""
    role: str = ""
    """The role asked for (credentials routes only)."""

    @property
    def handler(self) -> str:
        """Label for the metrics, Kiam's handler names where Kiam had them."""
        if self.kind is RouteKind.IAM_BLOCKED:
            return "proxy"
        if self.kind is RouteKind.ROLE_NAME_REDIRECT:
            return "roleName"
        return str(self.kind.value)


_SEGMENT = r"[^/]+"
# IAM's characters for role names and path segments, plus ':' for a full ARN: Go servers
# answer GetPodRole with the annotation as written (``kiam/pathrole``, an ARN), and the
# SDK asks for exactly that under security-credentials/.
_ROLE_PART = r"[A-Za-z0-9+=,.@_:-]+"
_TOKEN = re.compile(rf"^/{_SEGMENT}/api/token$")
_ROLE_NAME_REDIRECT = re.compile(rf"^/{_SEGMENT}/meta-data/iam/security-credentials$")
_ROLE_NAME = re.compile(rf"^/{_SEGMENT}/meta-data/iam/security-credentials/$")
_CREDENTIALS = re.compile(
    rf"^/{_SEGMENT}/meta-data/iam/security-credentials/((?:{_ROLE_PART}/)*{_ROLE_PART})/?$"
)
# Any other casing of the credentials subtree, and anything in it that is not a role.
_IAM_SUBTREE = re.compile(rf"^/{_SEGMENT}/meta-data/iam/security-credentials(/|$)", re.IGNORECASE)


def classify(path: str) -> Route:
    """Route a *normalised* path (see :func:`normalise_path`)."""
    if path == "/ping":
        return Route(RouteKind.PING, path)
    if path == "/health":
        return Route(RouteKind.HEALTH, path)
    if _TOKEN.match(path):
        return Route(RouteKind.TOKEN, path)
    if _ROLE_NAME_REDIRECT.match(path):
        return Route(RouteKind.ROLE_NAME_REDIRECT, path)
    if _ROLE_NAME.match(path):
        return Route(RouteKind.ROLE_NAME, path)
    if match := _CREDENTIALS.match(path):
        return Route(RouteKind.CREDENTIALS, path, role=match.group(1))
    if _IAM_SUBTREE.match(path):
        return Route(RouteKind.IAM_BLOCKED, path)
    return Route(RouteKind.PROXY, path)


@dataclass(frozen=True, slots=True)
class AllowList:
    """``--allow-route-regexp``: which normalised paths may be proxied to the real IMDS."""

    expression: str
    """The flag's value as the operator wrote it (for messages)."""
    pattern: re.Pattern[str] | None
    """None: the default, which proxies nothing."""

    @classmethod
    def from_regexp(cls, regexp: str) -> AllowList:
        """The operator's expression, compiled as written (never wrapped or joined)."""
        # Kiam treats "" as its default "^$": no normalised path (which always starts
        # with "/") can match either, so both mean "proxy nothing".
        if not regexp:
            return cls(regexp, None)
        return cls(regexp, re.compile(regexp))

    def permits(self, path: str) -> bool:
        return self.pattern is not None and self.pattern.search(path) is not None
