"""The agent's own exceptions, and the HTTP status each one answers with.

Foreign errors (grpc, aiohttp) are translated into these at the boundary that meets
them (``client.py``, ``proxy.py``); the HTTP layer only ever sees this tree::

    AgentError                      (status)
    ├── AgentInternalError          500  a bug in the agent (details in its log only)
    ├── BadRequest                  400  malformed path, TTL header, ...
    ├── Unauthorized                401  IMDSv2 token missing (required), invalid or expired
    ├── Forbidden                   403  X-Forwarded-For on a token request
    ├── NotFound                    404  unknown route or a path the allow-list blocks
    ├── MethodNotAllowed            405  e.g. GET on the token route
    ├── Throttled                   429  the pod is over its limit (--pod-max-in-flight, --pod-rate)
    ├── NoRole                      404  the caller's pod has no role annotation
    ├── UpstreamFailed              502  the real IMDS could not be reached
    ├── PodNotFound                 404  no live pod has the caller's IP
    ├── RoleForbidden               403  role is not the pod's, or the namespace forbids it
    ├── AmbiguousPod                409  live pods with different roles claim the IP
    ├── TokenRefused                401  the server refused a pod's service-account token
    ├── CredentialsFailed           500  STS refused or failed
    ├── RequestRefused              500  the server found the agent's request malformed
    ├── ServerFailed                502  the kiam server answered something unexpected
    ├── ServerUnavailable           503  no kiam server could be reached
    └── ServerTimeout               504  the deadline passed waiting for a kiam server

From PodNotFound on, each is a kiam server's answer, and its status is that of the
answer's row in the status table (:mod:`kiam.wire.status`, docs/architecture.md).
Every message is one line an operator can act on; it becomes the response body.
tests/agent/test_errors.py holds this tree to the classes.
"""

from __future__ import annotations

from kiam.wire.status import (
    AMBIGUOUS_POD,
    CREDENTIALS_FAILED,
    DEADLINE_EXCEEDED,
    INVALID_IP,
    OTHER,
    POD_NOT_FOUND,
    ROLE_FORBIDDEN,
    TOKEN_REFUSED,
    UNAVAILABLE,
)


class AgentError(Exception):
    """Base class; ``status`` is the HTTP status the agent answers with."""

    status = 500

    def __init__(self, message: str) -> None:
        # one line: the body must never spill a multi-line traceback-like detail
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class AgentInternalError(AgentError):
    status = 500


class BadRequest(AgentError):
    status = 400


class Unauthorized(AgentError):
    status = 401


class Forbidden(AgentError):
    status = 403


class NotFound(AgentError):
    status = 404


class MethodNotAllowed(AgentError):
    status = 405

    def __init__(self, message: str, *, allow: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.allow = allow
        """The methods the route takes: the ``Allow`` header HTTP requires on a 405."""


class Throttled(AgentError):
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Whole seconds, the ``Retry-After`` header HTTP pairs with a 429."""


class NoRole(AgentError):
    status = 404


class UpstreamFailed(AgentError):
    status = 502


class PodNotFound(AgentError):
    status = POD_NOT_FOUND.http


class RoleForbidden(AgentError):
    status = ROLE_FORBIDDEN.http


class AmbiguousPod(AgentError):
    status = AMBIGUOUS_POD.http


class TokenRefused(AgentError):
    status = TOKEN_REFUSED.http


class CredentialsFailed(AgentError):
    status = CREDENTIALS_FAILED.http


class RequestRefused(AgentError):
    status = INVALID_IP.http


class ServerFailed(AgentError):
    status = OTHER.http


class ServerUnavailable(AgentError):
    status = UNAVAILABLE.http


class ServerTimeout(AgentError):
    status = DEADLINE_EXCEEDED.http
