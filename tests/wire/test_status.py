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


class Refuser(kiam_pb2_grpc.KiamServiceServicer):
    """GetPodRole refuses with the row named by the request's ``ip`` (an index)."""

    async def GetPodRole(self, request: kiam_pb2.GetPodRoleRequest, context: Any) -> Any:
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
        assert f"row {index}" in (caught.value.details() or "")


async def test_the_catch_all_row_is_not_an_answer_to_send() -> None:
    with pytest.raises(ValueError, match="catch-all"):
        await status.abort(None, status.OTHER, "never")  # type: ignore[arg-type]
