"""Kubernetes ``Status`` bodies and the one exception that carries them.

Every failure the emulator answers is a :class:`KubeApiError` holding the exact ``Status``
object the apiserver would send (``kind: Status``, ``apiVersion: v1``, ``status: Failure``,
``message``, ``reason``, ``details``, ``code``). The HTTP layer serialises it as is; the
in-process hooks raise it, so tests see the same reason and code either way.
"""

from __future__ import annotations

from typing import Any

JsonObject = dict[str, Any]

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def reason_for(code: int) -> str:
    """The apiserver's ``reason`` for a bare HTTP code (``Unknown`` when it has none)."""
    return _REASONS.get(code, "Unknown")


def status_body(
    *, code: int, message: str, reason: str | None = None, details: JsonObject | None = None
) -> JsonObject:
    """A failure ``Status`` with the apiserver's key order (``details`` only when given)."""
    body: JsonObject = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or reason_for(code),
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


class KubeApiError(Exception):
    """An apiserver error answer: ``status`` is the full ``Status`` body."""

    def __init__(self, status: JsonObject) -> None:
        super().__init__(status.get("message", ""))
        self.status = status

    @property
    def code(self) -> int:
        return int(self.status["code"])

    @property
    def reason(self) -> str:
        return str(self.status["reason"])


def _details(name: str, group: str, kind: str) -> JsonObject:
    details: JsonObject = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    return details


def not_found(*, plural: str, group: str, name: str) -> KubeApiError:
    resource = f"{plural}.{group}" if group else plural
    return KubeApiError(
        status_body(
            code=404,
            message=f'{resource} "{name}" not found',
            details=_details(name, group, plural),
        )
    )


def already_exists(*, plural: str, group: str, name: str) -> KubeApiError:
    resource = f"{plural}.{group}" if group else plural
    return KubeApiError(
        status_body(
            code=409,
            reason="AlreadyExists",
            message=f'{resource} "{name}" already exists',
            details=_details(name, group, plural),
        )
    )


def conflict(*, plural: str, group: str, name: str, why: str) -> KubeApiError:
    resource = f"{plural}.{group}" if group else plural
    return KubeApiError(
        status_body(
            code=409,
            reason="Conflict",
            message=f'Operation cannot be fulfilled on {resource} "{name}": {why}',
            details=_details(name, group, plural),
        )
    )


STALE_WHY = (
    "the object has been modified; please apply your changes to the latest version "
    "and try again"
)


def invalid(
    *, kind: str, group: str, name: str, causes: list[tuple[str, str, str]]
) -> KubeApiError:
    """422: ``causes`` are ``(reason, field, message)`` as the apiserver lists them."""
    full = f"{kind}.{group}" if group else kind
    text = ", ".join(f"{field}: {message}" for _, field, message in causes)
    if len(causes) > 1:
        text = f"[{text}]"
    details = _details(name, group, kind)
    details["causes"] = [
        {"reason": reason, "message": message, "field": field} for reason, field, message in causes
    ]
    return KubeApiError(
        status_body(code=422, message=f'{full} "{name}" is invalid: {text}', details=details)
    )


def bad_request(message: str) -> KubeApiError:
    return KubeApiError(status_body(code=400, message=message))


def expired(message: str) -> KubeApiError:
    return KubeApiError(status_body(code=410, reason="Expired", message=message))


def unknown_resource() -> KubeApiError:
    return KubeApiError(
        status_body(
            code=404, message="the server could not find the requested resource", details={}
        )
    )
