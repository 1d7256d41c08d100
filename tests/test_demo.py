"""``kiam demo`` as a user runs it: a subprocess, its output, its exit code, and nothing
left behind afterwards (processes, temporary files, namespaces, iptables rules)."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kiam_testbed import netns
from kiam_testbed.demo import mask
from kiam_testbed.sdk_clients import imds_probe

DEMO = [sys.executable, "-m", "kiam", "demo"]
DEMO_TIMEOUT = 90


def _workdir(output: str) -> Path:
    match = re.search(r"work directory:\s+(\S+)", output)
    assert match, output
    return Path(match.group(1))


def _processes_using(path: Path) -> list[int]:
    """PIDs whose working directory or command line mentions ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if cwd.startswith(str(path)) or str(path) in cmdline:
            found.append(int(entry.name))
    return found


def _assert_no_secrets(text: str) -> None:
    """No secret access key (40 characters) or session token printed, whole or in part."""
    assert not re.findall(r"[A-Za-z0-9/+]{40,}", text)


def _assert_nothing_left(workdir: Path) -> None:
    assert not workdir.exists(), f"{workdir} was left behind"
    assert _processes_using(workdir) == []


def _assert_host_untouched(output: str) -> None:
    """The host's own nat table never had the demo's rule (it lives in the node netns)."""
    bridge = re.search(r"\(bridge (\S+) ", output)
    assert bridge, output
    rules = netns.run(["iptables", "-w", "-t", "nat", "-S"])
    assert bridge.group(1) not in rules


def test_mask_never_shows_the_value() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert secret not in mask(secret)
    assert "40" in mask(secret)
    assert mask("") == "(none)"


def test_demo_on_loopback_shows_every_case_and_cleans_up() -> None:
    done = subprocess.run(DEMO, capture_output=True, text=True, timeout=DEMO_TIMEOUT, check=False)
    out = done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    for title in ("== starting", "== pod shop/checkout", "== pod shop/intruder", "== done"):
        assert title in out
    assert "arn:aws:sts::123456789012:assumed-role/shop-checkout/kiam-kiam" in out
    assert "arn:aws:sts::123456789012:assumed-role/shop-catalog/kiam-catalog" in out
    assert re.search(r"GET admin:\s+403 .*does not permit", out), out
    assert "Warning KiamRoleForbidden" in out
    assert re.search(r"GET role:\s+404 .*no iam.amazonaws.com/role annotation", out), out
    assert len(re.findall(r"AccessKeyId:\s+ASIA\w+", out)) == 2
    assert 'SecretAccessKey"' not in out and "hidden" in out
    _assert_no_secrets(out + done.stderr)
    _assert_nothing_left(_workdir(out))


def _start_demo(args: list[str]) -> subprocess.Popen[bytes]:
    """The demo with Ctrl-C at its default disposition, whatever this process has.

    A test runner started as a background job without job control ignores SIGINT, and a
    child would inherit that; a handler installed here is reset to the default at exec."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # Its own process group: if the demo must be killed, its children go with it.
        return subprocess.Popen(
            [*DEMO, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, *, timeout: float) -> bytes:
    """Read the demo's stdout until ``marker`` ends a line, it exits, or ``timeout`` passes.

    Raw reads (no buffered file object), so that ``communicate`` later gets the rest."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen.rpartition(b"\n")[0]:  # only whole lines count
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        seen += chunk
    return seen


@pytest.mark.parametrize(
    ("args", "whole_group"),
    [([], False), (["--netns"], False), ([], True)],
    # "terminal": Ctrl-C in a terminal reaches the demo's children at the same moment
    ids=["loopback", "netns", "loopback-terminal"],
)
def test_ctrl_c_stops_everything(args: list[str], whole_group: bool) -> None:
    if args and (reason := netns.unavailable_reason()):
        pytest.skip(f"kiam demo --netns skipped: {reason}")
    demo = _start_demo(args)
    try:
        # interrupt once the server and agent are running
        head = _read_until(demo, b"kiam agent:", timeout=DEMO_TIMEOUT)
        assert b"kiam agent:" in head, head.decode(errors="replace")
        if whole_group:
            os.killpg(demo.pid, signal.SIGINT)
        else:
            demo.send_signal(signal.SIGINT)
        rest, err = demo.communicate(timeout=DEMO_TIMEOUT)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    output = (head + rest).decode(errors="replace")
    errors = err.decode(errors="replace")
    assert demo.returncode == 130, output + errors
    assert "interrupted" in errors
    _assert_nothing_left(_workdir(output))
    if args:
        _assert_bed_gone(output)
        _assert_host_untouched(output)


def _assert_bed_gone(output: str) -> None:
    node = re.search(r"node namespace:\s+(\S+)", output)
    assert node, output
    bed_prefix = node.group(1)[:-1]
    assert [n for n in netns.list_namespaces() if n.startswith(bed_prefix)] == []


@pytest.mark.netns
def test_demo_with_network_namespaces() -> None:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"kiam demo --netns skipped: {reason}")
    done = subprocess.run(
        [*DEMO, "--netns"], capture_output=True, text=True, timeout=DEMO_TIMEOUT, check=False
    )
    out = done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    assert "-j DNAT --to-destination" in out
    assert re.search(r"boto3 in the pod:\s+arn:aws:sts::\d+:assumed-role/shop-checkout/", out)
    assert re.search(r"boto3 in the pod:\s+arn:aws:sts::\d+:assumed-role/shop-catalog/", out)
    assert out.count("boto3 in the pod:    no credentials") == 2
    assert "Warning KiamRoleForbidden" in out
    _assert_no_secrets(out + done.stderr)
    _assert_bed_gone(out)
    _assert_host_untouched(out)
    _assert_nothing_left(_workdir(out))


def test_hold_keeps_everything_up_for_your_own_pods_until_ctrl_c() -> None:
    """``kiam demo --hold``: the printed commands work as pasted (a pod of one's own, its
    IP set as a kubelet would, the agent asked as that pod, ``kiam explain`` on it), and
    Ctrl-C then ends the demo normally, leaving nothing behind."""
    demo = _start_demo(["--hold"])
    try:
        head = _read_until(demo, b"kubectl get events", timeout=DEMO_TIMEOUT)
        output = head.decode(errors="replace")
        assert "holding: everything keeps running" in output, output
        lines = [line.strip() for line in output.splitlines()]
        kubeconfig = next(line for line in lines if line.startswith("export KUBECONFIG="))
        env = {**os.environ, "KUBECONFIG": kubeconfig.partition("=")[2]}
        kubelet = next(line for line in lines if "-m kiam_testbed.kubelet" in line)
        explain = next(line for line in lines if " explain shop/mine " in line)
        agent = re.search(r"(http://127\.0\.0\.1:\d+)/latest/api/token", output)
        assert agent, output
        # the pod as `kubectl run` makes it (no kubectl needed here: the same API call)
        pod = {"metadata": {"name": "mine", "namespace": "shop",
                            "annotations": {"iam.amazonaws.com/role": "shop-mine"}},
               "spec": {"containers": [{"name": "mine", "image": "app:1"}]}}
        kube_url = json.loads(Path(env["KUBECONFIG"]).read_text())["clusters"][0]["cluster"][
            "server"]
        request = urllib.request.Request(f"{kube_url}/api/v1/namespaces/shop/pods",
                                         data=json.dumps(pod).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()
        set_ip = subprocess.run(shlex.split(kubelet), env=env, capture_output=True,
                                text=True, timeout=30, check=False)
        assert set_ip.returncode == 0, set_ip.stderr
        walk = imds_probe.probe("v2", agent.group(1), source="127.0.0.20")
        assert walk.get("role") == "shop-mine", walk
        assert walk.get("access_key_id"), walk
        explained = subprocess.run(["sh", "-c", explain], env=env, capture_output=True,
                                   text=True, timeout=60, check=False)
        assert explained.returncode == 0, explained.stdout + explained.stderr
        assert "would get credentials for" in explained.stdout
        _assert_no_secrets(explained.stdout)
        demo.send_signal(signal.SIGINT)
        rest, err = demo.communicate(timeout=DEMO_TIMEOUT)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert demo.returncode == 0, err.decode(errors="replace")
    assert b"stopped: everything the demo started has been stopped" in rest
    _assert_nothing_left(_workdir(output))
