"""``--server-address`` as one DNS name with several addresses, behind the real agent.

The name ``kiam-server`` (in the server certificate) is made to resolve to 127.0.0.2 and
127.0.0.3 by bind-mounting a hosts file over /etc/hosts inside a network namespace this
test creates (``ip netns exec`` gives each command its own mount namespace, so the
host's /etc/hosts is never touched). Two scripted servers listen on one port at those
two addresses, each putting its name in its answers; the real ``kiam agent`` dials
``kiam-server:PORT`` over mTLS; a client in the namespace plays the pods.

Needs root and ``ip``; otherwise the test skips and says why.
"""

from __future__ import annotations

import json
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
from tests.agent.standins import AgentProcess

pytestmark = pytest.mark.netns

NAME = "kiam-server"
ADDRESSES = ("127.0.0.2", "127.0.0.3")
PORT = 9611
CREDS = "/latest/meta-data/iam/security-credentials/"
REPO = Path(__file__).resolve().parents[2]

# GETs the role list ``count`` times, one connection each, printing one JSON line per
# answer as it comes, so the test can act part-way through.
_CLIENT = """
import json, sys, urllib.error, urllib.request
port, count = int(sys.argv[1]), int(sys.argv[2])
for _ in range(count):
    url = f"http://127.0.0.1:{port}/latest/meta-data/iam/security-credentials/"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            out = [resp.status, resp.read().decode()]
    except urllib.error.HTTPError as exc:
        out = [exc.code, exc.read().decode()]
    except OSError as exc:
        out = [0, str(exc)]
    print(json.dumps(out), flush=True)
"""


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


def _start_server(
    wrap: list[str], certs: CertPaths, address: str, name: str
) -> subprocess.Popen[str]:
    command = [
        *wrap,
        sys.executable,
        "-m",
        "tests.agent.named_server",
        *("--bind", f"{address}:{PORT}", "--certs", str(certs.directory), "--name", name),
    ]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline().strip()
    if line != "ready":
        server.kill()
        _stop(server)
        pytest.fail(f"scripted server {name} did not start (exit {server.poll()})")
    return server


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _client(wrap: list[str], port: int, count: int) -> subprocess.Popen[str]:
    command = [*wrap, sys.executable, "-c", _CLIENT, str(port), str(count)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def _answers(client: subprocess.Popen[str], count: int | None = None) -> list[tuple[int, str]]:
    """Read ``count`` answers (all of them when None) as (status, body)."""
    assert client.stdout is not None
    answers: list[tuple[int, str]] = []
    while count is None or len(answers) < count:
        line = client.stdout.readline()
        if not line:
            break
        status, body = json.loads(line)
        answers.append((int(status), str(body)))
    return answers


def test_a_dns_name_with_two_addresses_spreads_and_survives_losing_one(
    netns: list[str], certs: CertPaths, tmp_path: Path
) -> None:
    servers: dict[str, subprocess.Popen[str]] = {}
    try:
        for name, address in zip(("a", "b"), ADDRESSES, strict=True):
            servers[name] = _start_server(netns, certs, address, name)
        agent = AgentProcess.start(
            ["--server-address", f"{NAME}:{PORT}", "--gateway-timeout-creation", "10s"],
            certs=certs,
            workdir=tmp_path,
            wrap=netns,
        )
    except BaseException:
        for server in servers.values():
            _stop(server)
        raise
    try:
        # both addresses behind the one name serve requests (round_robin)
        with _client(netns, agent.port, 40) as warm:
            before = _answers(warm)
            assert warm.wait(timeout=30) == 0
        assert {status for status, _ in before} == {200}, before[:5]
        assert {body for _, body in before} == {"from-a", "from-b"}, agent.log()

        # kill one server while a pod keeps asking: no request fails
        with _client(netns, agent.port, 300) as load:
            during = _answers(load, 30)
            servers["a"].send_signal(signal.SIGKILL)
            servers["a"].wait(timeout=10)
            during += _answers(load)
            assert load.wait(timeout=60) == 0
        assert len(during) == 300
        failures = [answer for answer in during if answer[0] != 200]
        assert not failures, (failures[:5], agent.log())
        # the survivor took over (the last answers can only have come from it)
        assert {body for _, body in during[-50:]} == {"from-b"}
    finally:
        agent.stop()
        for server in servers.values():
            _stop(server)
