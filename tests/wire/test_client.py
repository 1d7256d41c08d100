"""The client side shared by the agent and ``kiam health``: targets, channel options and
how a failure is worded (pure: no sockets)."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from kiam.common.settings import KeepaliveSettings
from kiam.wire.client import channel_options, describe, grpc_targets


@pytest.mark.parametrize(
    ("address", "targets"),
    [
        ("localhost:9610", ["dns:///localhost:9610"]),
        ("kiam-server", ["dns:///kiam-server:9610"]),
        ("127.0.0.1:1,127.0.0.1:2", ["127.0.0.1:1", "127.0.0.1:2"]),
        ("127.0.0.1", ["127.0.0.1:9610"]),
        ("[::1]:9610, kiam-server:9611", ["[::1]:9610", "dns:///kiam-server:9611"]),
        (" a:1, ,b:2 ", ["dns:///a:1", "dns:///b:2"]),
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


@pytest.mark.parametrize(
    ("code", "details", "reason"),
    [
        (grpc.StatusCode.UNAVAILABLE, "failed to connect: Connection refused", "unreachable"),
        (grpc.StatusCode.UNAVAILABLE, "Tls handshake failed (TSI_PROTOCOL_FAILURE)", "TLS refused"),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: "
         "UNKNOWN: ipv4:127.0.0.1:1: Custom verification check failed with error: "
         "UNAUTHENTICATED: Hostname Verification Check failed.", "TLS refused"),
        (grpc.StatusCode.UNAVAILABLE, "ipv4:127.0.0.1:1: Socket closed", "certificate not"),
        (grpc.StatusCode.UNAVAILABLE, "shutting down", "server unavailable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "timed out"),
        (grpc.StatusCode.INTERNAL, "boom", "server answered INTERNAL"),
    ],
)
def test_describe(code: grpc.StatusCode, details: str, reason: str) -> None:
    error = aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details, "")
    text = describe("srv:9610", error)
    assert text.startswith("srv:9610: ")
    assert reason in text
    assert text.endswith(details)


def test_describe_keeps_a_multi_line_detail_on_one_line() -> None:
    error = aio.AioRpcError(grpc.StatusCode.INTERNAL, aio.Metadata(), aio.Metadata(), "a\n b", "")
    assert describe("srv:1", error) == "srv:1: server answered INTERNAL: a b"

