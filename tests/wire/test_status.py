"""The status-code table: Go's metric labels, docs/architecture.md quoting it verbatim,
and each row surviving a real gRPC round trip on 127.0.0.1."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from kiam.wire import kiam_pb2, kiam_pb2_grpc, status

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
SENT = [answer for answer in status.TABLE if answer.code is not None]


@pytest.mark.parametrize(
    ("code", "label"),
    [
        (None, "OK"),
        (grpc.StatusCode.OK, "OK"),
        (grpc.StatusCode.CANCELLED, "Canceled"),
        (grpc.StatusCode.NOT_FOUND, "NotFound"),
        (grpc.StatusCode.PERMISSION_DENIED, "PermissionDenied"),
        (grpc.StatusCode.FAILED_PRECONDITION, "FailedPrecondition"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "DeadlineExceeded"),
        (grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument"),
    ],
)
def test_metric_labels_are_gos_spelling(code: grpc.StatusCode | None, label: str) -> None:
    assert status.metric_label(code) == label


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_every_code_has_a_go_label(code: grpc.StatusCode) -> None:
    # Go's String() is the CamelCase of the constant (CANCELLED is Go's "Canceled")
    expected = "".join(part.capitalize() for part in code.name.split("_"))
    expected = {"Ok": "OK", "Cancelled": "Canceled"}.get(expected, expected)
    assert status.metric_label(code) == expected


def test_docs_quote_the_table_verbatim() -> None:
    text = ARCHITECTURE.read_text()
    found = re.search(
        r"<!-- status-table: begin[^\n]*-->\n(.*?)<!-- status-table: end -->", text, re.DOTALL
    )
    assert found, "docs/architecture.md lost its status-table markers"
    assert found.group(1) == status.markdown_table(), (
        "docs/architecture.md disagrees with kiam/wire/status.py; paste markdown_table()"
    )


def test_each_code_is_in_one_row_and_the_table_ends_with_the_catch_all() -> None:
    codes = [answer.code for answer in SENT]
    assert len(codes) == len(set(codes))
    assert status.TABLE[-1] is status.OTHER
    assert [answer for answer in status.TABLE if answer.retried] == [status.UNAVAILABLE]


UNICODE_REASON = "rôle «admin» is not the pod's"


class Refuser(kiam_pb2_grpc.KiamServiceServicer):
    """GetPodRole refuses with the row named by the request's ``ip`` (an index), or
    with ROLE_FORBIDDEN and :data:`UNICODE_REASON` for ``unicode``."""

    async def GetPodRole(self, request: kiam_pb2.GetPodRoleRequest, context: Any) -> Any:
        if request.ip == "unicode":
            await status.abort(context, status.ROLE_FORBIDDEN, UNICODE_REASON)
        await status.abort(context, SENT[int(request.ip)], f"row {request.ip}\nsecond line")


@pytest.fixture
async def stub() -> AsyncIterator[kiam_pb2_grpc.KiamServiceAsyncStub]:
    server = aio.server()
    kiam_pb2_grpc.add_KiamServiceServicer_to_server(Refuser(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield kiam_pb2_grpc.KiamServiceStub(channel)
    finally:
        await server.stop(None)


async def test_each_row_the_server_sends_is_the_row_the_client_reads(
    stub: kiam_pb2_grpc.KiamServiceAsyncStub,
) -> None:
    for index, answer in enumerate(SENT):
        with pytest.raises(aio.AioRpcError) as caught:
            await stub.GetPodRole(kiam_pb2.GetPodRoleRequest(ip=str(index)), timeout=5)
        assert caught.value.code() is answer.code
        assert status.classify(caught.value) is answer
        assert status.reason(caught.value) == f"row {index}\nsecond line"
        if answer.message:
            assert caught.value.details() == answer.message
        else:
            assert caught.value.details() == f"row {index}\nsecond line"


async def test_refusals_go_kiams_agent_matches_carry_its_exact_message(
    stub: kiam_pb2_grpc.KiamServiceAsyncStub,
) -> None:
    # Go's agent (pkg/server/gateway.go) compares the message, byte for byte
    messages = {}
    for row in (status.ROLE_FORBIDDEN, status.POD_NOT_FOUND):
        with pytest.raises(aio.AioRpcError) as caught:
            await stub.GetPodRole(kiam_pb2.GetPodRoleRequest(ip=str(SENT.index(row))), timeout=5)
        messages[caught.value.code()] = caught.value.details()
    assert messages == {
        grpc.StatusCode.PERMISSION_DENIED: "forbidden by policy",
        grpc.StatusCode.NOT_FOUND: "no pod found",
    }


async def test_a_reason_beside_a_fixed_message_survives_any_text(
    stub: kiam_pb2_grpc.KiamServiceAsyncStub,
) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.GetPodRole(kiam_pb2.GetPodRoleRequest(ip="unicode"), timeout=5)
    assert caught.value.details() == "forbidden by policy"
    assert status.reason(caught.value) == UNICODE_REASON


def _received(code: grpc.StatusCode, details: str, trailer: bytes | None = None) -> aio.AioRpcError:
    trailing = aio.Metadata() if trailer is None else aio.Metadata((status.REASON_KEY, trailer))
    return aio.AioRpcError(code, aio.Metadata(), trailing, details=details)


@pytest.mark.parametrize(
    ("details", "row"),
    [
        # pkg/server/errors.go and pkg/k8s/pod_cache.go, as Go's server sends them
        ("forbidden by policy", status.ROLE_FORBIDDEN),
        ("no pod found", status.POD_NOT_FOUND),
        ("pod not found", status.POD_NOT_FOUND),
        ("multiple running pods found", status.AMBIGUOUS_POD),
        # anything else from a Go server (an STS error, ...) is the catch-all row
        ("AccessDenied: not authorized", status.OTHER),
        ("Forbidden by policy", status.OTHER),
        ("forbidden by policy ", status.OTHER),
        ("", status.OTHER),
    ],
)
def test_a_go_servers_unknown_is_read_by_its_message(details: str, row: status.Answer) -> None:
    assert status.classify(_received(grpc.StatusCode.UNKNOWN, details)) is row


def test_the_code_decides_for_every_code_but_unknown() -> None:
    error = _received(grpc.StatusCode.INTERNAL, "forbidden by policy")
    assert status.classify(error) is status.CREDENTIALS_FAILED
    error = _received(grpc.StatusCode.PERMISSION_DENIED, "anything")
    assert status.classify(error) is status.ROLE_FORBIDDEN


def test_the_reason_is_the_message_when_nothing_travels_beside_it() -> None:
    assert status.reason(_received(grpc.StatusCode.UNKNOWN, "forbidden by policy")) == (
        "forbidden by policy"
    )
    error = _received(grpc.StatusCode.PERMISSION_DENIED, "forbidden by policy", b"why")
    assert status.reason(error) == "why"


async def test_the_catch_all_row_is_not_an_answer_to_send() -> None:
    with pytest.raises(ValueError, match="catch-all"):
        await status.abort(None, status.OTHER, "never")  # type: ignore[arg-type]
