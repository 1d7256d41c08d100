"""grpc status -> agent exception -> HTTP status, by the status table: no sockets."""

from __future__ import annotations

import re

import grpc
import pytest
from grpc import aio

from kiam.agent import errors
from kiam.agent.client import translate
from kiam.wire import status


def _rpc_error(code: grpc.StatusCode, details: str = "why") -> aio.AioRpcError:
    return aio.AioRpcError(
        code, aio.Metadata(), aio.Metadata(), details=details, debug_error_string=""
    )


@pytest.mark.parametrize(
    ("code", "exc_type", "status"),
    [
        (grpc.StatusCode.NOT_FOUND, errors.PodNotFound, 404),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.AmbiguousPod, 409),
        (grpc.StatusCode.PERMISSION_DENIED, errors.RoleForbidden, 403),
        (grpc.StatusCode.INTERNAL, errors.CredentialsFailed, 500),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.RequestRefused, 500),
        (grpc.StatusCode.UNAVAILABLE, errors.ServerUnavailable, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.ServerTimeout, 504),
        (grpc.StatusCode.UNKNOWN, errors.ServerFailed, 502),
        (grpc.StatusCode.UNAUTHENTICATED, errors.TokenRefused, 401),
        (grpc.StatusCode.DATA_LOSS, errors.ServerFailed, 502),
    ],
)
def test_translate(code: grpc.StatusCode, exc_type: type[errors.AgentError], status: int) -> None:
    exc = translate(_rpc_error(code, "multi\nline   detail"), what="GetPodRole")
    assert type(exc) is exc_type
    assert exc.status == status
    assert "\n" not in exc.message
    assert exc.message.startswith("GetPodRole: ")


@pytest.mark.parametrize("answer", status.TABLE, ids=lambda a: a.code.name if a.code else "OTHER")
def test_every_row_of_the_table_answers_the_pod_with_its_http_status(
    answer: status.Answer,
) -> None:
    code = answer.code or grpc.StatusCode.DATA_LOSS
    assert status.classify(_rpc_error(code)) is answer
    assert translate(_rpc_error(code), what="GetPodCredentials").status == answer.http


def test_an_unlisted_code_is_named_in_the_message() -> None:
    exc = translate(_rpc_error(grpc.StatusCode.DATA_LOSS, "who?"), what="GetPodRole")
    assert exc.message == "GetPodRole: the kiam server answered DATA_LOSS (who?)"


def test_the_pod_is_told_the_reason_beside_a_fixed_message() -> None:
    reason = "pod team/web is annotated with role reader,\nnot admin"
    error = aio.AioRpcError(
        grpc.StatusCode.PERMISSION_DENIED,
        aio.Metadata(),
        aio.Metadata((status.REASON_KEY, reason.encode())),
        details="forbidden by policy",
    )
    exc = translate(error, what="GetPodCredentials")
    assert type(exc) is errors.RoleForbidden
    assert exc.message == (
        "GetPodCredentials: forbidden (pod team/web is annotated with role reader, not admin)"
    )


@pytest.mark.parametrize(
    ("details", "exc_type", "http"),
    [
        ("forbidden by policy", errors.RoleForbidden, 403),
        ("no pod found", errors.PodNotFound, 404),
        ("pod not found", errors.PodNotFound, 404),
        ("multiple running pods found", errors.AmbiguousPod, 409),
        ("AccessDenied: not authorized to perform sts:AssumeRole", errors.ServerFailed, 502),
    ],
)
def test_a_go_servers_unknown_answers(
    details: str, exc_type: type[errors.AgentError], http: int
) -> None:
    exc = translate(_rpc_error(grpc.StatusCode.UNKNOWN, details), what="GetPodCredentials")
    assert (type(exc), exc.status) == (exc_type, http)
    assert details in exc.message


def test_messages_are_one_line() -> None:
    assert errors.NotFound("a\nb\n  c").message == "a b c"


def test_the_docstring_tree_matches_the_classes() -> None:
    assert errors.__doc__ is not None
    tree = re.findall(r"[├└]── (\w+)\s+(\d{3}) ", errors.__doc__)
    assert len(tree) >= 10
    assert {name: int(code) for name, code in tree} == {
        name: getattr(errors, name).status for name, _ in tree
    }
    listed = {name for name, _ in tree} | {"AgentError"}
    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.AgentError)
    }
    assert defined == listed
