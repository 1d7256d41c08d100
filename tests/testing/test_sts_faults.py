"""The stand-in's fault bookkeeping and request parsing, without sockets."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from kiam_testbed.sts.faults import (
    AccountRateLimit,
    Fault,
    FaultKind,
    FaultQueue,
    account_of,
    error_response,
    parse_action,
    parse_assume_role,
)

A = "arn:aws:iam::123456789012:role/a"
B = "arn:aws:iam::123456789012:role/b"


def test_queue_uses_faults_in_order_and_counts_down() -> None:
    queue = FaultQueue()
    queue.add(Fault(kind=FaultKind.THROTTLING, count=2))
    queue.add(Fault(kind=FaultKind.ACCESS_DENIED))
    assert queue.pending() == 3
    taken = [queue.take(A), queue.take(B), queue.take(A), queue.take(A)]
    kinds = [f.kind if f else None for f in taken]
    assert kinds == [FaultKind.THROTTLING, FaultKind.THROTTLING, FaultKind.ACCESS_DENIED, None]
    assert queue.pending() == 0


def test_queue_role_filter_skips_other_roles() -> None:
    queue = FaultQueue()
    queue.add(Fault(kind=FaultKind.RESET, role_arn=B))
    queue.add(Fault(kind=FaultKind.THROTTLING))
    first = queue.take(A)
    assert first is not None and first.kind is FaultKind.THROTTLING
    assert queue.take(A) is None
    second = queue.take(B)
    assert second is not None and second.kind is FaultKind.RESET


def test_queue_clear() -> None:
    queue = FaultQueue()
    queue.add(Fault(kind=FaultKind.THROTTLING, count=5))
    queue.clear()
    assert queue.take(A) is None


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"kind": FaultKind.THROTTLING, "count": 0}, "count"),
        ({"kind": FaultKind.DELAY}, "delay="),
        ({"kind": FaultKind.TIMEOUT, "delay": -1.0}, "delay must be"),
        ({"kind": FaultKind.TIMEOUT, "delay": float("inf")}, "delay must be"),
    ],
)
def test_fault_validation(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Fault(**kwargs)  # type: ignore[arg-type]


def test_kind_from_text() -> None:
    assert FaultKind("access-denied") is FaultKind.ACCESS_DENIED
    with pytest.raises(ValueError):
        FaultKind("nonsense")


def test_parse_assume_role_form() -> None:
    body = (
        b"Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx"
        b"&RoleSessionName=kiam-kiam&ExternalId=ext&DurationSeconds=900"
    )
    action, params = parse_action(body, "")
    assert action == "AssumeRole"
    call = parse_assume_role(params)
    assert call.role_arn == "arn:aws:iam::1:role/x"
    assert call.session_name == "kiam-kiam"
    assert call.external_id == "ext"
    assert call.duration_seconds == 900


def test_parse_action_from_query_and_missing_fields() -> None:
    action, params = parse_action(b"", "Action=AssumeRole&RoleArn=r&RoleSessionName=s")
    assert action == "AssumeRole"
    call = parse_assume_role(params)
    assert (call.external_id, call.duration_seconds) == (None, None)
    assert parse_action(b"Action=GetCallerIdentity", "")[0] == "GetCallerIdentity"


@pytest.mark.parametrize(
    ("kind", "status", "code", "error_type"),
    [
        (FaultKind.THROTTLING, 400, "Throttling", "Sender"),
        (FaultKind.ACCESS_DENIED, 403, "AccessDenied", "Sender"),
        (FaultKind.INTERNAL_FAILURE, 500, "InternalFailure", "Receiver"),
        (FaultKind.SERVICE_UNAVAILABLE, 503, "ServiceUnavailable", "Receiver"),
    ],
)
def test_error_documents(kind: FaultKind, status: int, code: str, error_type: str) -> None:
    got_status, body = error_response(kind, role_arn="arn:x&y")
    assert got_status == status
    root = ET.fromstring(body)
    ns = {"s": "https://sts.amazonaws.com/doc/2011-06-15/"}
    assert root.findtext("s:Error/s:Code", namespaces=ns) == code
    assert root.findtext("s:Error/s:Type", namespaces=ns) == error_type
    assert root.findtext("s:RequestId", namespaces=ns)
    if kind is FaultKind.ACCESS_DENIED:
        assert "arn:x&y" in (root.findtext("s:Error/s:Message", namespaces=ns) or "")


def test_account_of_a_role_arn() -> None:
    assert account_of("arn:aws:iam::123456789012:role/a/b") == "123456789012"
    assert account_of("not-an-arn") == ""


def test_rate_limit_is_a_token_bucket_per_account() -> None:
    limit = AccountRateLimit(rate=2, burst=3)
    assert [limit.admit("1", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.admit("2", now=0.0) is True  # another account, another bucket
    assert limit.admit("1", now=0.25) is False  # half a token
    assert limit.admit("1", now=0.5) is True
    assert limit.admit("1", now=0.5) is False
    assert [limit.admit("1", now=100.0) for _ in range(4)] == [True, True, True, False]


def test_rate_limit_off_and_default_burst() -> None:
    off = AccountRateLimit()
    assert all(off.admit("1", now=0.0) for _ in range(1000))
    assert AccountRateLimit(rate=2.5).burst == 3  # one second's worth
    with pytest.raises(ValueError, match="rate and burst"):
        AccountRateLimit(rate=-1)
