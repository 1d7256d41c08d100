"""``--server-address`` as one DNS name with several addresses, behind the real agent,
and as a name without a port, for ``kiam health``.

The name ``kiam-server`` (in the server certificate) is made to resolve to 127.0.0.2 and
127.0.0.3 by bind-mounting a hosts file over /etc/hosts inside a network namespace this
test creates (``ip netns exec`` gives each command its own mount namespace, so the
host's /etc/hosts is never touched). Two scripted servers listen on one port at those
two addresses, each putting its name in its answers; the real ``kiam agent`` dials
``kiam-server:PORT`` over mTLS; a client in the namespace plays the pods.

The port-less case needs the default port (9610) free; a namespace of its own gives
that, whatever else runs on the machine.

Needs root and ``ip``; otherwise the test skips and says why.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiam.certs import CertPaths
from kiam.wire.client import DEFAULT_PORT
from kiam_testbed.child import Child
from tests.agent.netns_helpers import read_answers, start_client, start_named_server
from tests.agent.standins import AgentProcess

pytestmark = pytest.mark.netns

NAME = "kiam-server"
ADDRESSES = ("127.0.0.2", "127.0.0.3")
PORT = 9611


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "needs the ip command (apt-get install -y iproute2)"
    return None


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[list[str]]:
    """The command prefix that runs a command in the namespace with our hosts file."""
    reason = _unavailable()
    if reason:
        print(f"skipping the DNS namespace test: {reason}")
        pytest.skip(reason)
    name = f"kiamdns-{secrets.token_hex(4)}"
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{a} {NAME}\n" for a in ADDRESSES))
    created = _run("ip", "netns", "add", name)
    assert created.returncode == 0, created.stderr
    try:
        up = _run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        assert up.returncode == 0, up.stderr
        wrap = [
            "ip",
            "netns",
            "exec",
            name,
            "sh",
            "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"',
        ]
        probe = _run(*wrap, str(hosts), "getent", "ahosts", NAME)
        found = {line.split()[0] for line in probe.stdout.splitlines()}
        if found != set(ADDRESSES):
            reason = f"cannot give {NAME} two addresses in a namespace: {probe.stderr.strip()}"
            print(f"skipping: {reason}")
            pytest.skip(reason)
        yield [*wrap, str(hosts)]
    finally:
        _run("ip", "netns", "del", name)


def test_a_dns_name_with_two_addresses_spreads_and_survives_losing_one(
    netns: list[str], certs: CertPaths, tmp_path: Path
) -> None:
    servers: dict[str, Child] = {}
    try:
        for name, address in zip(("a", "b"), ADDRESSES, strict=True):
            bind = f"{address}:{PORT}"
            servers[name] = start_named_server(netns, certs, bind=bind, name=name, log_dir=tmp_path)
        agent = AgentProcess.start(
            # the pod asks as fast as it can, far above --pod-rate: not what is tested here
            ["--server-address", f"{NAME}:{PORT}", "--gateway-timeout-creation", "10s",
             "--pod-rate", "0"],
            certs=certs,
            workdir=tmp_path,
            wrap=netns,
        )
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    try:
        # both addresses behind the one name serve requests (round_robin)
        with start_client(netns, agent.port, 40) as warm:
            before = read_answers(warm)
            assert warm.wait(timeout=30) == 0
        assert {status for status, _ in before} == {200}, before[:5]
        assert {body for _, body in before} == {"from-a", "from-b"}, agent.child.log()

        # kill one server while a pod keeps asking: no request fails
        with start_client(netns, agent.port, 300) as load:
            during = read_answers(load, 30)
            servers["a"].signal(signal.SIGKILL)
            servers["a"].popen.wait(timeout=10)
            during += read_answers(load)
            assert load.wait(timeout=60) == 0
        assert len(during) == 300
        failures = [answer for answer in during if answer[0] != 200]
        assert not failures, (failures[:5], agent.child.log())
        # the survivor took over (the last answers can only have come from it)
        assert {body for _, body in during[-50:]} == {"from-b"}
    finally:
        agent.stop()
        for server in servers.values():
            server.stop()


def test_kiam_health_reaches_a_server_by_a_name_without_a_port(
    netns: list[str], certs: CertPaths, tmp_path: Path
) -> None:
    # Only the name is given: the port is the default, as it is for the agent.
    server = start_named_server(
        netns, certs, bind=f"{ADDRESSES[0]}:{DEFAULT_PORT}", name="a", log_dir=tmp_path
    )
    try:
        probe = _run(
            *netns,
            str(Path(sys.executable).parent / "kiam"),
            "health",
            *("--cert", str(certs.agent_cert), "--key", str(certs.agent_key)),
            *("--ca", str(certs.ca), "--server-address", NAME, "--timeout", "10s"),
        )
    finally:
        server.stop()
    assert (probe.returncode, probe.stdout) == (0, "healthy: ok from a\n"), probe.stderr
