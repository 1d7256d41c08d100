"""The test bed's free ports: different, free, and never where the kernel hands out its own."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from kiam_testbed import stack
from kiam_testbed.child import HarnessError
from kiam_testbed.stack import free_port, free_ports, loopback_placement


def test_ports_are_different_free_and_below_the_ephemeral_range() -> None:
    low = int(stack.EPHEMERAL_RANGE.read_text().split()[0])
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(20000 <= port < low for port in ports)
    with contextlib.ExitStack() as held:
        for port in ports:
            held.enter_context(socket.socket()).bind(("127.0.0.1", port))
    placement = loopback_placement()
    assert placement.server_port != placement.agent_port
    assert {placement.server_port, placement.agent_port} <= set(range(20000, low))


def test_taken_ports_are_passed_over_none_is_handed_out_twice_and_running_out_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ephemeral = tmp_path / "ip_local_port_range"
    ephemeral.write_text("21000\t60999\n")  # leaves 20000-20999
    monkeypatch.setattr(stack, "EPHEMERAL_RANGE", ephemeral)
    monkeypatch.setattr(stack, "_HANDED_OUT", set())  # whatever other tests were given
    left = {20123, 20777}
    with contextlib.ExitStack() as held:
        for port in set(range(20000, 21000)) - left:
            with contextlib.suppress(OSError):  # one in use already is taken all the same
                held.enter_context(socket.socket()).bind(("127.0.0.1", port))
        with pytest.raises(HarnessError, match=r"no 3 free ports on 127\.0\.0\.1 in 20000-20999"):
            free_ports(3)
        # one at a time, neither bound in between: still two different ports
        assert {free_port(), free_port()} == left
        with pytest.raises(HarnessError, match="no 1 free ports"):
            free_port()


def test_an_ephemeral_range_with_no_room_below_it_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ephemeral = tmp_path / "ip_local_port_range"
    ephemeral.write_text("20500 60999\n")
    monkeypatch.setattr(stack, "EPHEMERAL_RANGE", ephemeral)
    with pytest.raises(HarnessError, match="the ephemeral range starts at 20500"):
        free_ports(1)
