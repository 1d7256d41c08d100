"""The DNAT rule's arguments (pure) and a clear error when iptables is missing."""

from __future__ import annotations

import pytest

from kiam.agent.iptables import DnatRule, Iptables, IptablesError

BASE = ["-p", "tcp", "-d", "169.254.169.254", "--dport", "80"]
TARGET = ["-j", "DNAT", "--to-destination", "10.0.0.5:3100"]


def test_plain_interface() -> None:
    rule = DnatRule(host="10.0.0.5", port=3100, interface="docker0")
    assert rule.spec() == [*BASE, "-i", "docker0", *TARGET]


def test_inverted_interface() -> None:
    rule = DnatRule(host="10.0.0.5", port=3100, interface="!eth0")
    assert rule.spec() == [*BASE, "!", "-i", "eth0", *TARGET]


def test_wildcard_interface_is_passed_through() -> None:
    assert DnatRule(host="10.0.0.5", port=3100, interface="cali+").spec()[6:8] == ["-i", "cali+"]
    inverted = DnatRule(host="10.0.0.5", port=3100, interface="!veth+").spec()
    assert inverted[6:9] == ["!", "-i", "veth+"]


def test_empty_interface_matches_any() -> None:
    assert DnatRule(host="10.0.0.5", port=3100, interface="").spec() == [*BASE, *TARGET]


def test_commands_use_the_xtables_lock_and_nat_prerouting() -> None:
    rule = DnatRule(host="10.0.0.5", port=3100, interface="docker0")
    for action in ("-C", "-A", "-D"):
        command = rule.command(action)
        assert command[:6] == ["-w", "5", "-t", "nat", action, "PREROUTING"]
        assert command[6:] == rule.spec()


@pytest.mark.parametrize(
    ("host", "port", "interface"),
    [
        ("node-1", 3100, "eth0"),
        ("fd00::1", 3100, "eth0"),
        ("10.0.0.5", 0, "eth0"),
        ("10.0.0.5", 70000, "eth0"),
        ("10.0.0.5", 3100, "!"),
        ("10.0.0.5", 3100, "eth0 -j ACCEPT"),
    ],
)
def test_invalid_rules_are_refused(host: str, port: int, interface: str) -> None:
    with pytest.raises(IptablesError):
        DnatRule(host=host, port=port, interface=interface)


def test_missing_binary_is_a_clear_error() -> None:
    with pytest.raises(IptablesError, match="not found on PATH"):
        Iptables(binary="kiam-no-such-iptables")
