"""The gRPC status codes of ``kiam.KiamService``: one table, read by both sides.

Each :class:`Answer` says in which situation the server answers with a code, the HTTP
status the agent then gives the pod, whether the agent first tries another server, and
the metric label the code is counted under. The server refuses through :func:`abort`
with one of these rows; the agent reads what it received back into a row with
:func:`classify`; docs/architecture.md quotes the table as :func:`markdown_table`
renders it (tests/wire/test_status.py fails when the two differ). A change to what a
refusal carries on the wire (its code, its message, metadata beside it) is made here,
in :func:`abort` and :func:`classify`, and nowhere else.

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


POD_NOT_FOUND = Answer(
    code=grpc.StatusCode.NOT_FOUND,
    situation="no live pod has the IP (after waiting for the watch)",
    http=404,
)
AMBIGUOUS_POD = Answer(
    code=grpc.StatusCode.FAILED_PRECONDITION,
    situation="live pods with different roles claim the IP",
    http=409,
)
ROLE_FORBIDDEN = Answer(
    code=grpc.StatusCode.PERMISSION_DENIED,
    situation="requested role is not the pod's role / namespace forbids it",
    http=403,
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
    CREDENTIALS_FAILED,
    UNAVAILABLE,
    DEADLINE_EXCEEDED,
    INVALID_IP,
    OTHER,
)
_BY_CODE = {answer.code: answer for answer in TABLE if answer.code is not None}


def classify(error: aio.AioRpcError) -> Answer:
    """The row of a status the client received (the catch-all row for unknown codes)."""
    return _BY_CODE.get(error.code(), OTHER)


async def abort(context: aio.ServicerContext[Any, Any], answer: Answer, reason: str) -> NoReturn:
    """End the RPC with ``answer``'s code; ``reason`` (one line, for people) travels with it."""
    if answer.code is None:
        raise ValueError("the catch-all row is not an answer the server gives")
    await context.abort(answer.code, reason)
    raise AssertionError("context.abort returned")  # pragma: no cover


def markdown_table() -> str:
    """The table as docs/architecture.md quotes it."""
    lines = [
        "| situation | gRPC code | `grpc_code` label | agent HTTP |",
        "|---|---|---|---|",
    ]
    for answer in TABLE:
        code, label = "any other", "its Go name, e.g. `Unknown`"
        if answer.code is not None:
            code, label = answer.code.name, f"`{metric_label(answer.code)}`"
        retried = "retried on another server first" if answer.retried else ""
        notes = "; ".join(note for note in (retried, answer.why) if note)
        http = f"{answer.http} ({notes})" if notes else str(answer.http)
        lines.append(f"| {answer.situation} | {code} | {label} | {http} |")
    return "\n".join(lines) + "\n"
