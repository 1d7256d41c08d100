"""The gRPC status codes of ``kiam.KiamService``: one table, read by both sides.

Each :class:`Answer` says in which situation the server answers with a code, the HTTP
status the agent then gives the pod, whether the agent first tries another server, and
the metric label the code is counted under. The server refuses through :func:`abort`
with one of these rows; the agent reads what it received back into a row with
:func:`classify`; docs/architecture.md quotes the table as :func:`markdown_table`
renders it (tests/wire/test_status.py fails when the two differ). A change to what a
refusal carries on the wire (its code, its message, metadata beside it) is made here,
in :func:`abort`, :func:`classify` and :func:`reason`, and nowhere else.

Go Kiam's agent tells a refusal by the status *message*, never the code: it gives up at
once only on ``forbidden by policy`` and retries everything else until the pod's
request times out. So the rows Go's agent matches are sent with Go's exact message
(:attr:`Answer.message`), and the human reason travels beside it in the trailing
metadata key :data:`REASON_KEY`, which Go's agent ignores and ours reads. Go Kiam's
server answers every refusal with UNKNOWN and one of those fixed messages; the agent
reads such an answer into the row that means the same (:attr:`Answer.go_messages`).

Metric labels are Go's ``codes.Code.String()`` (``NotFound``, ``PermissionDenied``,
note ``Canceled``), the spelling go-grpc-prometheus gives Kiam's ``grpc_code`` label,
so dashboards and alerts written for Go Kiam keep working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from grpc import aio

# Go's codes.Code.String(), for every code.
_GO_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


def metric_label(code: grpc.StatusCode | None) -> str:
    """The ``grpc_code`` label: ``NOT_FOUND`` -> ``NotFound``; None (nothing set) is OK."""
    if code is None:
        return "OK"
    return _GO_NAMES.get(code, "Unknown")


@dataclass(frozen=True, kw_only=True)
class Answer:
    """One row of the table: a situation, its code, and what the agent makes of it."""

    code: grpc.StatusCode | None
    """The status code; None for the row that stands for every code not listed."""
    situation: str
    """When the server answers with it (the docs' first column)."""
    http: int
    """The HTTP status the agent answers the pod with."""
    retried: bool = False
    """The agent tries another server before answering (while the deadline lasts)."""
    why: str = ""
    """The reason for ``http`` where it is not obvious."""
    message: str = ""
    """The status message, fixed because Go Kiam's agent compares it (the reason then
    travels under :data:`REASON_KEY`); empty: the reason is the message."""
    go_messages: tuple[str, ...] = ()
    """Messages a Go Kiam server sends with UNKNOWN in this situation."""


REASON_KEY = "kiam-reason-bin"
"""Trailing metadata with the human reason (UTF-8) where the message is fixed; ``-bin``
so any text survives (gRPC base64-encodes it)."""

# Go Kiam's error texts (pkg/server/errors.go, pkg/k8s/pod_cache.go), as its server
# sends them and its agent compares them.
GO_FORBIDDEN = "forbidden by policy"
GO_NO_POD = "no pod found"
"""Go's server, GetPodCredentials for an unknown IP."""
GO_POD_NOT_FOUND = "pod not found"
"""Go's server, GetPodRole for an unknown IP (its pod cache's own error)."""
GO_MULTIPLE_PODS = "multiple running pods found"

POD_NOT_FOUND = Answer(
    code=grpc.StatusCode.NOT_FOUND,
    situation="no live pod has the IP (after waiting for the watch)",
    http=404,
    message=GO_NO_POD,
    go_messages=(GO_NO_POD, GO_POD_NOT_FOUND),
)
AMBIGUOUS_POD = Answer(
    code=grpc.StatusCode.FAILED_PRECONDITION,
    situation="live pods with different roles claim the IP",
    http=409,
    go_messages=(GO_MULTIPLE_PODS,),
)
ROLE_FORBIDDEN = Answer(
    code=grpc.StatusCode.PERMISSION_DENIED,
    situation="requested role is not the pod's role / namespace forbids it",
    http=403,
    message=GO_FORBIDDEN,
    go_messages=(GO_FORBIDDEN,),
)
TOKEN_REFUSED = Answer(
    code=grpc.StatusCode.UNAUTHENTICATED,
    situation="token credentials: the token is invalid, expired, for another audience, "
    "not bound to a pod, or its pod is gone",
    http=401,
)
CREDENTIALS_FAILED = Answer(
    code=grpc.StatusCode.INTERNAL,
    situation="STS refused or failed",
    http=500,
)
UNAVAILABLE = Answer(
    code=grpc.StatusCode.UNAVAILABLE,
    situation="server not synced yet / shutting down / unreachable",
    http=503,
    retried=True,
)
DEADLINE_EXCEEDED = Answer(
    code=grpc.StatusCode.DEADLINE_EXCEEDED,
    situation="deadline passed",
    http=504,
)
INVALID_IP = Answer(
    code=grpc.StatusCode.INVALID_ARGUMENT,
    situation="the IP in the request is not an IP",
    http=500,
    why="the IP is the pod connection's own, so the fault is the agent's, not the pod's",
)
OTHER = Answer(
    code=None,
    situation="any other code (our server sends none)",
    http=502,
)

TABLE = (
    POD_NOT_FOUND,
    AMBIGUOUS_POD,
    ROLE_FORBIDDEN,
    TOKEN_REFUSED,
    CREDENTIALS_FAILED,
    UNAVAILABLE,
    DEADLINE_EXCEEDED,
    INVALID_IP,
    OTHER,
)
_BY_CODE = {answer.code: answer for answer in TABLE if answer.code is not None}
_BY_GO_MESSAGE = {message: answer for answer in TABLE for message in answer.go_messages}


def classify(error: aio.AioRpcError) -> Answer:
    """The row of a status the client received (the catch-all row for unknown codes).

    UNKNOWN is what a Go Kiam server sends for every refusal; its message says which."""
    return classify_status(error.code(), error.details() or "")


def classify_status(code: grpc.StatusCode, message: str) -> Answer:
    """:func:`classify` of a status given as its code and message (a refusal that came
    some other way than as an RPC's status, e.g. in the node stream's entries)."""
    if code is grpc.StatusCode.UNKNOWN:
        return _BY_GO_MESSAGE.get(message, OTHER)
    return _BY_CODE.get(code, OTHER)


_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def code_of(number: int) -> grpc.StatusCode:
    """The status code with grpc's ``number`` (a ``Refusal.code``); UNKNOWN if none has it."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def reason(error: aio.AioRpcError) -> str:
    """The human reason of a status: :data:`REASON_KEY` when sent, else the message."""
    # pairs of an aio.Metadata at run time (the stubs give it the sync API's type)
    trailing: Any = error.trailing_metadata()
    for key, value in trailing or ():
        if key == REASON_KEY:
            text = value if isinstance(value, str) else value.decode(errors="replace")
            if text:
                return text
    return error.details() or ""


async def abort(context: aio.ServicerContext[Any, Any], answer: Answer, reason: str) -> NoReturn:
    """End the RPC with ``answer``'s code; ``reason`` (one line, for people) travels with it:
    as the message, or under :data:`REASON_KEY` when the row's message is fixed."""
    if answer.code is None:
        raise ValueError("the catch-all row is not an answer the server gives")
    message, beside = carried(answer, reason)
    if beside:
        await context.abort(
            answer.code, message, trailing_metadata=((REASON_KEY, beside.encode()),)
        )
    await context.abort(answer.code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def carried(answer: Answer, reason: str) -> tuple[str, str]:
    """What :func:`abort` sends for ``answer`` and ``reason``: (the status message, the
    text under :data:`REASON_KEY`, ``""`` when none travels). The node replica's
    ``Refusal`` carries the same pair (docs/architecture.md, "The node replica")."""
    if answer.message:
        return answer.message, reason
    return reason, ""


def markdown_table() -> str:
    """The table as docs/architecture.md quotes it."""
    lines = [
        "| situation | gRPC code | message | `grpc_code` label | agent HTTP | from a Go server |",
        "|---|---|---|---|---|---|",
    ]
    for answer in TABLE:
        code, label, message = "any other", "its Go name, e.g. `Unknown`", ""
        if answer.code is not None:
            code, label = answer.code.name, f"`{metric_label(answer.code)}`"
            message = f"`{answer.message}`" if answer.message else "the reason"
        retried = "retried on another server first" if answer.retried else ""
        notes = "; ".join(note for note in (retried, answer.why) if note)
        http = f"{answer.http} ({notes})" if notes else str(answer.http)
        go = " or ".join(f"UNKNOWN `{m}`" for m in answer.go_messages)
        lines.append(f"| {answer.situation} | {code} | {message} | {label} | {http} | {go} |")
    return "\n".join(lines) + "\n"
