"""The real DNAT rule, only ever inside a network namespace this test creates.

Needs root, ``ip`` and ``iptables``; otherwise every test here skips and says why.
The host's own tables are never touched: every iptables command, and the agent
itself, runs through ``ip netns exec kiamtest-<random>``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from kiam.certs import CertPaths
from tests.agent.netns_helpers import (
    CREDS,
    read_answers,
    start_client,
    start_named_server,
)
from tests.agent.standins import AgentProcess

pytestmark = pytest.mark.netns

HOST = "10.200.0.1"
PORT = "3999"
RULE = f"-j DNAT --to-destination {HOST}:{PORT}"


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command (apt-get install -y iproute2 iptables)"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    reason = _unavailable()
    if reason:
        print(f"skipping the iptables namespace tests: {reason}")
        pytest.skip(reason)
    name = f"kiamtest-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True, timeout=30
        )
        probe = subprocess.run(
            ["ip", "netns", "exec", name, "iptables", "-w", "5", "-t", "nat", "-S"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode != 0:
            reason = f"iptables does not work in a namespace here: {probe.stderr.strip()}"
            print(f"skipping: {reason}")
            pytest.skip(reason)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def in_ns(netns: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dnat_rules(netns: str) -> list[str]:
    listing = in_ns(netns, "iptables", "-w", "5", "-t", "nat", "-S", "PREROUTING")
    assert listing.returncode == 0, listing.stderr
    return [line for line in listing.stdout.splitlines() if "169.254.169.254" in line]


def wait_for_log(agent: AgentProcess, text: str, timeout: float = 20.0) -> None:
    agent.child.wait_for(re.escape(text), timeout=timeout)


def agent_args(*extra: str) -> list[str]:
    return [
        "--iptables",
        "--host",
        HOST,
        "--port",
        PORT,
        "--host-interface",
        "!eth0",
        "--server-address",
        "127.0.0.1:1",
        "--gateway-timeout-creation",
        "100ms",
        *extra,
    ]


def test_agent_adds_the_rule_once_listening_and_removes_it_on_sigterm(
    netns: str, certs: CertPaths, tmp_path: Path
) -> None:
    agent = AgentProcess.start(
        agent_args(), certs=certs, workdir=tmp_path, wrap=["ip", "netns", "exec", netns]
    )
    try:
        wait_for_log(agent, "kiam agent ready")
        log = agent.child.log()
        # ready only once the whole start order is done: listening, then the rule
        assert log.index("listening on") < log.index("added iptables rule")
        assert log.index("added iptables rule") < log.index("kiam agent ready")
        assert log.count("kiam agent ready") == 1
        rules = dnat_rules(netns)
        assert len(rules) == 1
        assert "! -i eth0" in rules[0] and "--dport 80" in rules[0] and RULE in rules[0]
    finally:
        assert agent.stop() == 0
    assert dnat_rules(netns) == []
    log = agent.child.log()
    assert log.index("kiam agent stopped") > log.index("removed iptables rule")


def test_health_is_503_until_the_rule_is_in(netns: str, certs: CertPaths, tmp_path: Path) -> None:
    """iptables kept waiting (for the xtables lock kube-proxy holds; here an ``iptables``
    first on PATH that waits for a gate file, then runs the real one): the agent listens
    meanwhile, but /health answers 503 until the rule is in, so a readiness probe never
    counts a node whose pods are not intercepted yet (docs/architecture.md)."""
    gate, tools = tmp_path / "gate", tmp_path / "bin"
    tools.mkdir()
    waiting = tools / "iptables"
    waiting.write_text(f'#!/bin/sh\nwhile [ ! -e "{gate}" ]; do sleep 0.05; done\n'
                       f'exec "{shutil.which("iptables")}" "$@"\n')
    waiting.chmod(0o755)
    wrap = ["ip", "netns", "exec", netns]
    agent = AgentProcess.start(agent_args(), certs=certs, workdir=tmp_path, ready=False,
                               wrap=[*wrap, "env", f"PATH={tools}:{os.environ['PATH']}"])
    try:
        wait_for_log(agent, "listening on")
        with start_client(wrap, agent.port, 3, path="/health") as client:
            answers = read_answers(client)
        assert [status for status, _ in answers] == [503] * 3, answers
        assert all("starting" in body for _, body in answers), answers
        assert dnat_rules(netns) == []
        gate.touch()
        wait_for_log(agent, "kiam agent ready")
        assert len(dnat_rules(netns)) == 1
        with start_client(wrap, agent.port, 1, path="/health") as client:
            assert read_answers(client) == [(200, "ok")]
    finally:
        assert agent.stop() == 0
    assert dnat_rules(netns) == []


def test_adding_is_idempotent_and_cleanup_removes_a_leftover(
    netns: str, certs: CertPaths, tmp_path: Path
) -> None:
    agent = AgentProcess.start(
        agent_args("--no-iptables-remove"),
        certs=certs,
        workdir=tmp_path,
        wrap=["ip", "netns", "exec", netns],
    )
    try:
        wait_for_log(agent, "added iptables rule")
        # a second add (a restarted agent) finds the rule and adds no copy
        script = (
            "import asyncio\n"
            "from kiam.agent.iptables import DnatRule, Iptables\n"
            f"rule = DnatRule(host={HOST!r}, port={PORT}, interface='!eth0')\n"
            "print(asyncio.run(Iptables().add(rule)))\n"
        )
        again = in_ns(netns, sys.executable, "-c", script)
        assert (again.returncode, again.stdout.strip()) == (0, "False"), again.stderr
        assert len(dnat_rules(netns)) == 1
    finally:
        assert agent.stop() == 0
    assert len(dnat_rules(netns)) == 1  # --no-iptables-remove left it
    certs_args = ["--cert", str(certs.agent_cert), "--key", str(certs.agent_key)]
    cleanup = in_ns(
        netns,
        sys.executable,
        "-m",
        "kiam",
        "agent",
        "--iptables-cleanup",
        *("--host", HOST, "--port", PORT, "--host-interface", "!eth0"),
        *certs_args,
        *("--ca", str(certs.ca)),
    )
    assert cleanup.returncode == 0, cleanup.stderr
    assert dnat_rules(netns) == []


def test_sigterm_lets_an_in_flight_request_finish_before_the_rule_goes(
    netns: str, certs: CertPaths, tmp_path: Path
) -> None:
    wrap = ["ip", "netns", "exec", netns]
    release = tmp_path / "release"
    # 127.0.0.1 of the namespace's own loopback: an address the server certificate names
    server = start_named_server(
        wrap, certs, bind="127.0.0.1:9612", name="a", hold_file=release, log_dir=tmp_path
    )
    try:
        agent = AgentProcess.start(
            agent_args("--server-address", "127.0.0.1:9612", "--gateway-timeout-creation", "10s"),
            certs=certs,
            workdir=tmp_path,
            wrap=wrap,
        )
        try:
            wait_for_log(agent, "added iptables rule")
            with start_client(wrap, agent.port, 1, path=CREDS + "from-a") as client:
                server.wait_for("^held$", timeout=20)
                agent.child.signal(signal.SIGTERM)
                wait_for_log(agent, "received SIGTERM")
                # a request is in flight, so the rule stays, however long we look
                time.sleep(0.5)
                assert len(dnat_rules(netns)) == 1
                release.touch()
                [(status, body)] = read_answers(client)
                assert (status, orjson.loads(body)["AccessKeyId"]) == (200, "ASIAFROMA")
            assert agent.child.popen.wait(timeout=15) == 0
        finally:
            agent.stop()
    finally:
        server.stop()
    assert dnat_rules(netns) == []
    log = agent.child.log()
    assert log.index("served credentials") < log.index("removed iptables rule")


@pytest.mark.parametrize(("interface", "match"), [("veth+", "-i veth+"), ("!cali+", "! -i cali+")])
def test_prefix_wildcards_reach_the_real_iptables(netns: str, interface: str, match: str) -> None:
    script = (
        "import asyncio\n"
        "from kiam.agent.iptables import DnatRule, Iptables\n"
        f"rule = DnatRule(host={HOST!r}, port={PORT}, interface={interface!r})\n"
        "async def main():\n"
        "    print(await Iptables().add(rule), await Iptables().add(rule))\n"
        "asyncio.run(main())\n"
    )
    added = in_ns(netns, sys.executable, "-c", script)
    assert (added.returncode, added.stdout.strip()) == (0, "True False"), added.stderr
    [rule] = dnat_rules(netns)
    assert f"{match} " in rule and RULE in rule
    removal = script.replace(
        "print(await Iptables().add(rule), await Iptables().add(rule))",
        "print(await Iptables().remove(rule))",
    )
    removed = in_ns(netns, sys.executable, "-c", removal)
    assert (removed.returncode, removed.stdout.strip()) == (0, "1"), removed.stderr
    assert dnat_rules(netns) == []
