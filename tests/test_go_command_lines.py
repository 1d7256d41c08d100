"""Go Kiam's chart's command lines run our processes (tests/go_kiam.py: CHART_ARGV).

For each case the server, its exec probe and the agent are started with exactly the
flags the chart renders; only file paths (the TLS files), ports, listen addresses and
endpoints (kubeconfig, STS, the metadata service) are swapped for the test's. ``/kiam``
is run as the ``kiam`` console script (the image's ``/kiam`` is the same program:
tests/test_image.py). Then: the server's caches sync, the probe says healthy, the agent
is ready, a pod (a loopback source address) gets its role's credentials, and both
``/metrics`` answer.

The agent command lines with ``--iptables`` run in the network-namespace test bed's
node namespace, where the DNAT rule is real (and checked); they skip as a normal user.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from kiam.certs import CertPaths
from kiam_testbed import netns
from kiam_testbed.child import Child, HarnessError
from kiam_testbed.commands import aws_test_env, isolated_env, kiam_command
from kiam_testbed.stack import Placement, Stack, free_port, node_placement
from tests.go_kiam import CHART_ARGV

POD_IP = "127.0.3.40"
ROLE = "reader"
CREDS = "/latest/meta-data/iam/security-credentials/"

# The metadata service for --role-base-arn-autodetect: an instance profile in the STS
# stand-in's account. Prints its URL first, as the other stand-ins do.
_IMDS = """
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def _send(self, body):
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_PUT(self): self._send(b"token")
    def do_GET(self):
        if self.path == "/latest/meta-data/iam/info":
            self._send(json.dumps({"Code": "Success", "InstanceProfileArn":
                "arn:aws:iam::123456789012:instance-profile/nodes"}).encode())
        else:
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers()
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(f"http://127.0.0.1:{s.server_address[1]}", flush=True)
s.serve_forever()
"""

# A pod's SDK: the role list, then the role's credentials, from the pod's own address.
_POD = """
import http.client, json, sys
port, source, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def get(p):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    c.request("GET", p); r = c.getresponse(); return r.status, r.read().decode()
status, role = get(path)
out = {"list": status, "role": role}
if status == 200:
    out["creds"], body = get(path + role.strip())
    out["code"] = json.loads(body).get("Code") if out["creds"] == 200 else body
print(json.dumps(out))
"""

# ci/test-values.yaml sets --role-base-arn=arn:aws:iam::0123456789:role/, a 10-digit
# account. AWS account IDs have 12 digits, so no pod could ever be served under it: we
# refuse it at start-up (test_a_base_arn_with_a_ten_digit_account_is_refused_at_start_up,
# docs/MIGRATING.md) where Go Kiam starts and fails every AssumeRole. To run the
# rest of that set, its account is made 12 digits; nothing else changes.
TEN_DIGIT_BASE = "arn:aws:iam::0123456789:role/"
TWELVE_DIGIT_BASE = "arn:aws:iam::000123456789:role/"


def _cases() -> Iterator[object]:
    for name in CHART_ARGV:
        yield pytest.param(name, id=name.replace(" ", "-"))


def test_a_base_arn_with_a_ten_digit_account_is_refused_at_start_up(tmp_path: Path) -> None:
    certs = CertPaths(directory=Stack(tmp_path, certs=tmp_path / "pki").make_certs())
    server = CHART_ARGV["chart ci/test-values.yaml"]["server"]
    assert f"--role-base-arn={TEN_DIGIT_BASE}" in server
    tls = ("--cert", str(certs.server_cert), "--key", str(certs.server_key), "--ca", str(certs.ca))
    done = subprocess.run(
        kiam_command("server", f"--role-base-arn={TEN_DIGIT_BASE}", *tls,
                     "--kubeconfig", str(tmp_path / "none")),
        env=isolated_env(), capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert (
        f"invalid base role ARN '{TEN_DIGIT_BASE}': "
        "expected arn:<partition>:iam::<12-digit account>:role/"
    ) in done.stderr
    assert "Traceback" not in done.stderr


def _swap(
    argv: Sequence[str], *, who: str, certs: Path, ports: dict[str, int]
) -> list[str]:
    """The chart's command line with our files, ports and addresses; ``/kiam`` dropped."""
    assert argv[0] == "/kiam"
    tls = {
        "--cert": certs / f"{who}.pem",
        "--key": certs / f"{who}-key.pem",
        "--ca": certs / "ca.pem",
    }
    swapped = {
        "--bind": f"127.0.0.1:{ports['server']}",
        "--server-address": f"127.0.0.1:{ports['server']}",
        "--prometheus-listen-addr": f"127.0.0.1:{ports[who + '-metrics']}",
        "--port": str(ports["agent"]),
        **{name: str(path) for name, path in tls.items()},
    }
    out: list[str] = []
    for given in argv[1:]:
        # see TEN_DIGIT_BASE
        arg = given.replace(TEN_DIGIT_BASE, TWELVE_DIGIT_BASE)
        name, _, _ = arg.partition("=")
        out.append(f"{name}={swapped[name]}" if name in swapped else arg)
    return out


def _needs_bed(name: str) -> bool:
    return "--iptables" in CHART_ARGV[name]["agent"]


@pytest.mark.parametrize("name", list(_cases()))
def test_go_kiams_command_lines_run_us(name: str, tmp_path: Path) -> None:
    if _needs_bed(name):
        reason = netns.unavailable_reason()
        if reason:
            pytest.skip(f"the agent's --iptables needs the netns test bed: {reason}")
        with netns.network_bed(pods=1) as bed:
            _run(name, tmp_path, node_placement(bed), host_ip=bed.bridge_ip)
    else:
        _run(name, tmp_path, Placement(), host_ip="127.0.0.1")


def _probe_passes(stack: Stack, server: Child, command: list[str], *, attempts: int = 6) -> str:
    for attempt in range(attempts):
        if server.returncode is not None:
            raise HarnessError(f"the server exited: {server.diagnostics()}")
        try:
            return stack.run(command)
        except HarnessError:
            if attempt == attempts - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def _run(name: str, tmp_path: Path, where: Placement, *, host_ip: str) -> None:
    lines = CHART_ARGV[name]
    ports = {k: free_port() for k in ("server", "server-metrics", "agent", "agent-metrics")}
    placement = Placement(
        wrap=where.wrap,
        sts_host=where.sts_host,
        server_port=ports["server"],
        agent_listen="127.0.0.1",
        agent_port=ports["agent"],
        iptables_host=host_ip if "--iptables" in lines["agent"] else "",
    )
    stack = Stack(tmp_path / "stack", placement)
    try:
        stack.start_standins()
        certs = stack.make_certs()
        imds = stack.spawn("imds", [sys.executable, "-c", _IMDS], env=isolated_env())
        imds_url = imds.wait_for(r"^(http://\S+)$")[1]
        stack.create_namespace("team", permitted=".*")
        stack.create_pod("team", "web", ip=POD_IP, role=ROLE)

        server_argv = _swap(lines["server"], who="server", certs=certs, ports=ports)
        server_argv += ["--kubeconfig", str(stack.kubeconfig), "--sts-endpoint", stack.sts_url]
        server_argv += ["--metadata-endpoint", imds_url]
        server = stack.spawn("server", kiam_command(*server_argv), env=aws_test_env())

        # the probe, as the kubelet runs it: every few seconds until it passes
        probe = _swap(lines["probe"], who="server", certs=certs, ports=ports)
        assert _probe_passes(stack, server, kiam_command(*probe)).startswith("healthy: ")

        agent_argv = _swap(lines["agent"], who="agent", certs=certs, ports=ports)
        agent_argv += ["--listen-address", "127.0.0.1", "--metadata-endpoint", imds_url]
        stack.spawn("agent", kiam_command(*agent_argv), env=isolated_env(HOST_IP=host_ip))
        stack.wait_agent_ready()  # with --iptables: its DNAT rule is in place too
        # the chart's agent liveness probes: httpGet /ping, or /health?deep=1 (deepLivenessProbe)
        for path in ("/ping", "/health?deep=1"):
            assert stack.http("GET", stack.agent_url + path)[0] == 200, path

        answer = json.loads(
            stack.run([sys.executable, "-c", _POD, str(ports["agent"]), POD_IP, CREDS])
        )
        assert answer == {"list": 200, "role": ROLE, "creds": 200, "code": "Success"}

        for who in ("server", "agent"):
            status, text = stack.http("GET", f"http://127.0.0.1:{ports[who + '-metrics']}/metrics")
            assert status == 200, text
            assert "kiam_" in text
    finally:
        stack.close()
