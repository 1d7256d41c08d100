"""``kiam demo``: the whole system on this machine, with stand-ins for AWS and Kubernetes.

Starts, as real processes: the Kubernetes API emulator (a namespace that permits some
roles, and a few annotated pods), the STS stand-in, certificates from ``kiam certs`` in a
temporary directory, ``kiam server`` and ``kiam agent``. Then, for each pod, walks the
metadata API as an AWS SDK would (IMDSv2 token, role, credentials) and calls STS
GetCallerIdentity with the credentials issued.

- Default: the pods are loopback addresses (127.0.0.11, ...). Each pod's requests come
  from its own address (an aiohttp client bound to it), which is how the agent tells the
  pods apart; the agent listens on 127.0.0.1.
- ``--netns`` (root): the pods are network namespaces behind the agent's real iptables
  DNAT rule (:mod:`kiam_testbed.netns`), and boto3 runs inside each pod.

Secret keys and session tokens are never shown. Ctrl-C (or SIGTERM) at any point, like
the normal end, stops every process and removes the namespaces, the rule and the
temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from kiam.common import logs
from kiam.common.settings import LogSettings
from kiam_testbed import netns as netns_bed
from kiam_testbed.child import HarnessError, signals_deferred
from kiam_testbed.commands import ACCOUNT, ROLE_BASE_ARN, kiam_command
from kiam_testbed.sdk_clients import (
    boto3_command,
    imds_probe,
    imds_probe_command,
    run_in_pod,
)
from kiam_testbed.stack import Stack, loopback_placement, node_placement

NAMESPACE = "shop"
PERMITTED = f"arn:aws:iam::{ACCOUNT}:role/shop-.*"
_WIDTH = 20
_EVENT_WAIT = 10.0


@dataclass(frozen=True, kw_only=True)
class DemoPod:
    name: str
    role: str = ""
    session_name: str = ""
    story: str
    """One line telling what this pod shows."""


PODS = (
    DemoPod(name="checkout", role="shop-checkout", story="a pod with a permitted role"),
    DemoPod(
        name="catalog",
        role="shop-catalog",
        session_name="catalog",
        story="another permitted role, with its own session name",
    ),
    DemoPod(name="intruder", role="admin", story="a role its namespace does not permit"),
    DemoPod(name="static-site", story="a pod without a role"),
)


class _Stopped(Exception):
    """SIGTERM arrived: unwind like Ctrl-C does."""


# ---------------------------------------------------------------- output


def mask(secret: str) -> str:
    """Never the value: only that there is one, and its length."""
    return f"******** ({len(secret)} characters, hidden)" if secret else "(none)"


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(3, 76 - len(title)), flush=True)


def row(key: str, value: object) -> None:
    print(f"  {key + ':':<{_WIDTH}} {value}", flush=True)


# ---------------------------------------------------------------- entry point


def run_demo(*, netns: bool, log: LogSettings, hold: bool = False) -> int:
    """Run the demo; 0 when it ran to the end (with ``hold``: when Ctrl-C ended the
    hold), 130 when interrupted, 1 on failure."""
    logs.configure(json_log=log.json_log, level=log.level)
    if netns and (reason := netns_bed.unavailable_reason()):
        print(f"kiam demo --netns: {reason}", file=sys.stderr)
        return 2
    started = _Started(workdir=Path(tempfile.mkdtemp(prefix="kiam-demo-")))
    with _interrupts():
        try:
            try:
                code = _run(started, netns=netns, log=log, hold=hold)
            except (KeyboardInterrupt, _Stopped):
                code = 0 if started.holding else 130
            finally:
                started.close()
        except (KeyboardInterrupt, _Stopped):
            # The one interrupt (see _interrupts) came as the clean-up began: finish it.
            started.close()
            code = 0 if started.holding else 130
    if code == 130:
        print("\ninterrupted: everything the demo started has been stopped", file=sys.stderr)
    elif started.holding:
        print("\nstopped: everything the demo started has been stopped", flush=True)
    return code


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM unwind the demo once; any later one is ignored.

    Raising only once is what lets the clean-up run to the end whenever the signal comes,
    even at the very start of a ``finally`` and with a second Ctrl-C. A SIGINT the demo
    inherited as ignored (a background job) stays ignored, as it does for any program."""

    def fire(signum: int, frame: FrameType | None) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt if signum == signal.SIGINT else _Stopped

    sigs = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        sigs.append(signal.SIGINT)
    previous = {sig: signal.signal(sig, fire) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class _Started:
    """What the demo has started so far; :meth:`close` stops it all and may run twice."""

    workdir: Path
    stack: Stack | None = None
    bed: netns_bed.Bed | None = None
    holding: bool = False
    """The tour is over and the demo waits for Ctrl-C (``--hold``), its normal end."""

    def close(self) -> None:
        # A Ctrl-C meanwhile must not cut the clean-up short: it is acted on at the end.
        with signals_deferred():
            stack, bed, self.stack, self.bed = self.stack, self.bed, None, None
            try:
                if stack is not None:
                    stack.close()
                if bed is not None:
                    netns_bed.destroy_bed(bed)
            except netns_bed.NetnsError as exc:
                print(f"kiam demo: clean-up: {exc}", file=sys.stderr)
            finally:
                shutil.rmtree(self.workdir, ignore_errors=True)


def _run(started: _Started, *, netns: bool, log: LogSettings, hold: bool = False) -> int:
    section("kiam demo")
    row("work directory", started.workdir)
    row("pods are", "network namespaces (iptables DNAT)" if netns else "loopback addresses")
    try:
        if netns:
            netns_bed.cleanup_leftovers()
            bed = started.bed = netns_bed.create_bed(pods=len(PODS))
            row("node namespace", f"{bed.node} (bridge {bed.bridge} {bed.bridge_ip})")
            placement = node_placement(bed)
            ips = [pod.ip for pod in bed.pods]
        else:
            placement = loopback_placement()
            ips = [f"127.0.0.{11 + i}" for i in range(len(PODS))]
        stack = started.stack = Stack(workdir=started.workdir / "stack", placement=placement)
        _start(stack, ips, log=log)
        if started.bed is not None:
            _show_netns(stack, started.bed)
        else:
            _show_pods(stack, ips)
        section("done")
        print("  every pod got exactly its own role, or nothing and a reason.", flush=True)
        if hold:
            started.holding = True
            _hold(stack, netns=started.bed is not None)
        return 0
    except (HarnessError, netns_bed.NetnsError) as exc:
        print(f"\nkiam demo failed: {exc}", file=sys.stderr)
        return 1


def _start(stack: Stack, ips: list[str], *, log: LogSettings) -> None:
    section("starting")
    standins = stack.start_standins()
    row("kubernetes emulator", standins.kube_url)
    row("sts stand-in", standins.sts_url)
    row("certificates", stack.make_certs())
    stack.create_namespace(NAMESPACE, permitted=PERMITTED)
    row(f"namespace {NAMESPACE}", f"iam.amazonaws.com/permitted: {PERMITTED}")
    for pod, ip in zip(PODS, ips, strict=True):
        stack.create_pod(NAMESPACE, pod.name, ip=ip, role=pod.role, session_name=pod.session_name)
        row(f"pod {pod.name}", f"{ip:<15} role: {pod.role or '(none)'}")
    log_flags = ["--level", log.level, *(["--json-log"] if log.json_log else [])]
    server = stack.start_server(extra=log_flags)
    row("kiam server", f"pid {server.pid}, 127.0.0.1:{stack.placement.server_port}")
    agent = stack.start_agent(extra=log_flags)
    where = stack.placement.agent_listen or "every address"
    row("kiam agent", f"pid {agent.pid}, port {stack.placement.agent_port} on {where}")
    stack.wait_agent_ready()
    rule = ", DNAT rule in place" if stack.placement.iptables_host else ""
    row("ready", f"agent healthy, server synced{rule}")


# ---------------------------------------------------------------- the pods


def _show_pods(stack: Stack, ips: list[str]) -> None:
    """Each pod walks the metadata API as an SDK does (IMDSv2 token, role, credentials),
    from its own address, then calls STS with what it got."""
    for pod, ip in zip(PODS, ips, strict=True):
        section(f"pod {NAMESPACE}/{pod.name} ({ip}): {pod.story}")
        # Bound to the pod's address: the agent identifies callers by their source IP.
        walk = imds_probe.probe("v2", stack.agent_url, source=ip)
        creds = walk.pop("credentials", None)
        _show_walk(walk)
        if creds is not None:
            row("SecretAccessKey", mask(str(creds.get("SecretAccessKey", ""))))
            row("Token", mask(str(creds.get("Token", ""))))
            row("Expiration", creds.get("Expiration"))
            row("sts caller identity", caller_identity(creds, stack.sts_url))
        _show_denial_event(stack, pod, walk)


def _show_walk(walk: dict[str, Any]) -> None:
    """What the metadata API answered, step by step (never a secret: none is in it)."""
    row("PUT api/token", walk.get("token_status", "-"))
    if "role_status" in walk:
        row("GET role", f"{walk['role_status']}  {walk.get('role') or walk.get('error', '')}")
    if "credentials_status" in walk:
        shown = "" if walk.get("access_key_id") else walk.get("error", "")
        row(f"GET {walk.get('role')}", f"{walk['credentials_status']}  {shown}".rstrip())
    if 0 in (walk.get(step) for step in ("token_status", "role_status", "credentials_status")):
        raise HarnessError(f"the agent did not answer: {walk.get('error')}")
    if walk.get("access_key_id"):
        row("AccessKeyId", walk["access_key_id"])


def caller_identity(creds: dict[str, Any], endpoint: str) -> str:
    """STS GetCallerIdentity with these credentials, by boto3."""
    import boto3  # type: ignore[import-untyped]
    import botocore.exceptions

    client = boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["Token"],
    )
    try:
        arn: str = client.get_caller_identity()["Arn"]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise HarnessError(f"sts get-caller-identity failed: {exc}") from None
    return arn


def _show_denial_event(stack: Stack, pod: DemoPod, walk: dict[str, Any]) -> None:
    if not pod.role or walk.get("access_key_id"):
        return
    event = wait_for_event(stack, pod.name)
    if event is None:
        row("event", "(no KiamRoleForbidden event yet)")
    else:
        row("event", f"{event.get('type')} {event.get('reason')}: {event.get('message')}")


def wait_for_event(stack: Stack, pod_name: str) -> dict[str, Any] | None:
    """The pod's KiamRoleForbidden event, once the server has posted it."""
    deadline = time.monotonic() + _EVENT_WAIT
    while True:
        for event in stack.kube.events(NAMESPACE):
            involved = event.get("involvedObject") or {}
            if event.get("reason") == "KiamRoleForbidden" and involved.get("name") == pod_name:
                return dict(event)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


# ---------------------------------------------------------------- network-namespace pods


def _show_netns(stack: Stack, bed: netns_bed.Bed) -> None:
    """The same walk and STS call, by the probe and boto3 inside each pod's namespace."""
    rules = stack.run(["iptables", "-w", "-t", "nat", "-S", "PREROUTING"])
    section(f"iptables in {bed.node}")
    for line in rules.splitlines():
        if "DNAT" in line:
            print(f"  {line}", flush=True)
    homes = stack.workdir / "homes"
    for pod, ns in zip(PODS, bed.pods, strict=True):
        section(f"pod {NAMESPACE}/{pod.name} ({ns.ip}, netns {ns.name}): {pod.story}")
        probe = run_in_pod(ns, imds_probe_command("v2"), home=homes / pod.name).stdout
        walk = json.loads(probe) if probe.strip().startswith("{") else {"error": probe}
        _show_walk(walk)
        result = run_in_pod(ns, boto3_command(stack.sts_url), home=homes / pod.name).result
        if result.ok:
            row("boto3 in the pod", result.arn)
        else:
            reason = (result.error.strip().splitlines() or ["?"])[-1][:90]
            row("boto3 in the pod", f"no credentials ({reason})")
        _show_denial_event(stack, pod, walk)


# ---------------------------------------------------------------- --hold

HOLD_POD = "mine"
HOLD_IP = "127.0.0.20"
HOLDING = "holding: everything keeps running; Ctrl-C stops it and removes it all"


def hold_instructions(stack: Stack, *, netns: bool) -> list[str]:
    """What to paste into another shell to try a pod of one's own."""
    kubeconfig = stack.kubeconfig
    # the STS stand-in checks no signature, but botocore wants some credentials to sign
    explain = " ".join([
        "AWS_ACCESS_KEY_ID=demo", "AWS_SECRET_ACCESS_KEY=demo",
        *kiam_command("explain", f"{NAMESPACE}/{HOLD_POD}", "--kubeconfig", str(kubeconfig),
                      "--role-base-arn", ROLE_BASE_ARN, "--sts-endpoint", stack.sts_url,
                      "--assume")])
    agent = stack.agent_url
    if netns:
        ask = [
            "# from inside a pod's network namespace (ip netns list), as the demo's pods do:",
            f"ip netns exec <pod namespace> curl -s {agent}/latest/meta-data/iam/"
            "security-credentials/",
        ]
    else:
        curl = f"curl -s --interface {HOLD_IP}"
        ask = [
            f"# ask the agent as that pod: its requests come from {HOLD_IP}",
            f"TOKEN=$({curl} -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "
            f"{agent}/latest/api/token)",
            f'{curl} -H "X-aws-ec2-metadata-token: $TOKEN" '
            f"{agent}/latest/meta-data/iam/security-credentials/",
            f'{curl} -H "X-aws-ec2-metadata-token: $TOKEN" '
            f"{agent}/latest/meta-data/iam/security-credentials/shop-mine",
        ]
    return [
        f"export KUBECONFIG={kubeconfig}",
        f"kubectl get pods,events -n {NAMESPACE}",
        "# a pod of your own with a role the namespace permits:",
        f"kubectl run {HOLD_POD} -n {NAMESPACE} --image=app:1 "
        "--annotations=iam.amazonaws.com/role=shop-mine",
        "# there is no kubelet: give it an IP as one would",
        f"{sys.executable} -m kiam_testbed.kubelet {NAMESPACE}/{HOLD_POD} {HOLD_IP}",
        *ask,
        "# why it does (or, after `kubectl annotate pod ... --overwrite`, does not) get "
        "credentials:",
        explain,
        f"kubectl get events -n {NAMESPACE}",
    ]


def _hold(stack: Stack, *, netns: bool) -> None:
    section(HOLDING)
    for line in hold_instructions(stack, netns=netns):
        print(f"  {line}", flush=True)
    while True:  # until Ctrl-C or SIGTERM (see _interrupts)
        time.sleep(3600)
