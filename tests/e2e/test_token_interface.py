"""The token credentials interface (kiam/agent/link_local.py) in the bed's node namespace:
made with the addresses, never an interface kiam did not make, removed by
``kiam agent --iptables-cleanup`` (docs/token-credentials.md, "On the agent")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kiam.certs import CertPaths, generate_certificates
from kiam_testbed import netns
from kiam_testbed.commands import isolated_env, kiam_command

pytestmark = pytest.mark.netns

_USE = """
import asyncio, sys
from kiam.agent.link_local import InterfaceError, LinkLocalInterface
action, name = sys.argv[1], sys.argv[2]
interface = LinkLocalInterface(name, ["169.254.170.23", "fd00:ec2::23"])
try:
    print(asyncio.run(getattr(interface, action)()))
except InterfaceError as exc:
    print(f"InterfaceError: {exc}")
"""


def _use(bed: netns.Bed, action: str, name: str) -> str:
    done = subprocess.run(bed.node_argv([sys.executable, "-c", _USE, action, name]),
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def _link(bed: netns.Bed, name: str) -> str:
    return netns.run(bed.node_argv(["ip", "-o", "link", "show", "dev", name]), check=False)


def test_made_again_it_stays_one_interface_with_both_addresses(bed: netns.Bed) -> None:
    assert _use(bed, "add", "kiamt0") == "('169.254.170.23', 'fd00:ec2::23')"
    assert _use(bed, "add", "kiamt0") == "('169.254.170.23', 'fd00:ec2::23')"
    shown = netns.run(bed.node_argv(["ip", "-o", "addr", "show", "dev", "kiamt0"]))
    assert shown.count("169.254.170.23/32") == 1 and shown.count("fd00:ec2::23/128") == 1
    assert "alias kiam-token-credentials" in _link(bed, "kiamt0")
    assert _use(bed, "remove", "kiamt0") == "True"
    assert _link(bed, "kiamt0") == ""
    assert _use(bed, "remove", "kiamt0") == "False"


def test_an_interface_kiam_did_not_make_is_left_alone(bed: netns.Bed) -> None:
    netns.run(bed.node_argv(["ip", "link", "add", "kforeign", "type", "bridge"]))
    try:
        answer = _use(bed, "add", "kforeign")
        assert answer.startswith("InterfaceError: interface kforeign exists and was not made"), (
            answer)
        assert _use(bed, "remove", "kforeign") == "False"
        assert "kforeign" in _link(bed, "kforeign")
        shown = netns.run(bed.node_argv(["ip", "-o", "addr", "show", "dev", "kforeign"]))
        assert "169.254.170.23" not in shown
    finally:
        netns.run(bed.node_argv(["ip", "link", "del", "kforeign"]), check=False)


def test_iptables_cleanup_removes_a_leftover_interface(bed: netns.Bed, tmp_path: Path) -> None:
    _use(bed, "add", "kiam0")  # what an agent killed with SIGKILL leaves behind
    assert "kiam0" in _link(bed, "kiam0")
    generate_certificates(tmp_path)
    certs = CertPaths(directory=tmp_path)
    command = kiam_command("agent", "--iptables-cleanup", "--host", bed.bridge_ip,
                           "--cert", str(certs.agent_cert), "--key", str(certs.agent_key),
                           "--ca", str(certs.ca))
    done = subprocess.run(bed.node_argv(command), capture_output=True, text=True,
                          timeout=60, check=False, env=isolated_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "interface_removed" in done.stdout + done.stderr
    assert _link(bed, "kiam0") == ""
