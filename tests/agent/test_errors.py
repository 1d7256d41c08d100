"""grpc status -> agent exception -> HTTP status (docs/architecture.md), targets and channel
options: no sockets."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from kiam.agent import errors
from kiam.agent.client import channel_options, grpc_targets, translate
from kiam.common.settings import KeepaliveSettings


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
        (grpc.StatusCode.UNAVAILABLE, errors.ServerUnavailable, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.ServerTimeout, 504),
        (grpc.StatusCode.UNKNOWN, errors.ServerFailed, 502),
        (grpc.StatusCode.UNAUTHENTICATED, errors.ServerFailed, 502),
    ],
)
def test_translate(code: grpc.StatusCode, exc_type: type[errors.AgentError], status: int) -> None:
    exc = translate(_rpc_error(code, "multi\nline   detail"), what="GetPodRole")
    assert type(exc) is exc_type
    assert exc.status == status
    assert "\n" not in exc.message
    assert exc.message.startswith("GetPodRole: ")


def test_messages_are_one_line() -> None:
    assert errors.NotFound("a\nb\n  c").message == "a b c"


@pytest.mark.parametrize(
    ("address", "targets"),
    [
        ("localhost:9610", ["dns:///localhost:9610"]),
        ("kiam-server", ["dns:///kiam-server:9610"]),
        ("127.0.0.1:1,127.0.0.1:2", ["127.0.0.1:1", "127.0.0.1:2"]),
        ("[::1]:9610, kiam-server:9611", ["[::1]:9610", "dns:///kiam-server:9611"]),
        (":9610", ["dns:///localhost:9610"]),
    ],
)
def test_grpc_targets(address: str, targets: list[str]) -> None:
    assert grpc_targets(address) == targets


@pytest.mark.parametrize("address", ["", " , ", "host:port", "a:1:2:3:x"])
def test_grpc_targets_refused(address: str) -> None:
    with pytest.raises(ValueError):
        grpc_targets(address)


def test_channel_options_carry_the_keepalive_flags_and_round_robin() -> None:
    keepalive = KeepaliveSettings(time=7.5, timeout=1.5, permit_without_stream=True)
    options = dict(channel_options(keepalive))
    assert options["grpc.keepalive_time_ms"] == 7500
    assert options["grpc.keepalive_timeout_ms"] == 1500
    assert options["grpc.keepalive_permit_without_calls"] == 1
    # every address behind a DNS name is used, not just the first
    assert options["grpc.lb_policy_name"] == "round_robin"
    assert dict(channel_options(KeepaliveSettings()))["grpc.keepalive_permit_without_calls"] == 0
