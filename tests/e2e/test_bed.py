"""The test bed itself: pods reach the node and each other, the host is never touched,
teardown and the leftover sweep leave nothing; and reading the SDK clients' output."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kiam_testbed import netns
from kiam_testbed.sdk_clients import parse_result, pod_command
from tests.e2e.conftest import require_bed


def _host_traces(bed: netns.Bed) -> list[str]:
    """Anything of the bed's in the host's own namespace: links, addresses, nat rules."""
    host = netns.run(["ip", "-o", "link", "show"]) + netns.run(["ip", "-4", "-o", "addr", "show"])
    host += netns.run(["iptables", "-w", "-t", "nat", "-S"])
    prefix = bed.subnet.rsplit(".", 1)[0] + "."
    return [
        line
        for line in host.splitlines()
        if bed.bed_id in line or bed.bridge in line or prefix in line
    ]


@pytest.mark.netns
def test_pods_reach_the_node_and_the_host_is_untouched() -> None:
    require_bed()
    with netns.network_bed(pods=3) as bed:
        server = subprocess.Popen(
            bed.node_argv([sys.executable, "-m", "http.server", "-b", bed.bridge_ip, "8080"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://{bed.bridge_ip}:8080/"
            # the server may still be starting: curl retries refused connections
            retry = ["--retry", "50", "--retry-connrefused", "--retry-delay", "0"]
            curl = ["curl", "-sS", *retry, "-o", "/dev/null", "-w", "%{http_code}", url]
            for pod in bed.pods:
                out = netns.run(pod.argv(curl))
                assert out == "200"
                routes = netns.run(pod.argv(["ip", "-4", "route", "show", "default"]))
                assert f"via {bed.bridge_ip}" in routes
            assert len({pod.ip for pod in bed.pods}) == 3
            assert all(len(name) <= 15 for name in (*bed.namespaces, bed.bridge))
            assert _host_traces(bed) == []
        finally:
            server.terminate()
            server.wait()
    assert not set(bed.namespaces) & set(netns.list_namespaces())
    assert _host_traces(bed) == []


@pytest.mark.netns
def test_teardown_kills_processes_left_inside() -> None:
    require_bed()
    with netns.network_bed(pods=1) as bed:
        sleeper = subprocess.Popen(bed.pods[0].argv(["sleep", "300"]))
        try:
            # `ip netns exec` enters the namespace, then execs: wait until it has
            while not netns.namespace_pids(bed.pods[0].name):
                assert sleeper.poll() is None
            assert netns.namespace_pids(bed.pods[0].name) == [sleeper.pid]
        except BaseException:
            sleeper.kill()
            sleeper.wait()
            raise
    assert sleeper.wait(timeout=10) != 0
    assert not set(bed.namespaces) & set(netns.list_namespaces())


@pytest.mark.netns
def test_leftovers_of_a_dead_owner_are_swept_but_a_live_owners_are_kept() -> None:
    require_bed()
    bed = netns.create_bed(pods=1)
    try:
        # our own bed: the owner is alive (another run's dead beds may go meanwhile)
        assert not set(netns.cleanup_leftovers()) & set(bed.namespaces)
        assert set(bed.namespaces) <= set(netns.list_namespaces())
        dead = subprocess.Popen(["true"])
        dead.wait()
        owner = netns.STATE_DIR / f"{bed.bed_id}.owner"
        owner.write_text(f"{dead.pid} {bed.subnet}\n")
        removed = netns.cleanup_leftovers()
        assert set(bed.namespaces) <= set(removed)
        assert not set(bed.namespaces) & set(netns.list_namespaces())
        assert not owner.exists()
    finally:
        netns.destroy_bed(bed)


def test_unavailable_reason_names_root_when_not_root() -> None:
    reason = netns.unavailable_reason()
    if reason is None:
        assert netns.os.geteuid() == 0
    else:
        assert "needs" in reason


def test_pick_subnet_avoids_networks_in_use() -> None:
    import os
    import random
    import secrets
    import shutil

    if shutil.which("ip") is None:
        pytest.skip("pick_subnet reads the host's networks with 'ip' (Debian package iproute2)")
    first = netns.pick_subnet(random.Random(7))
    assert first.prefixlen == 24
    assert str(first).startswith("10.")
    assert not any(first.overlaps(used) for used in netns._used_networks())
    # A live bed holding that subnet (this process is its owner): the same draw avoids it.
    netns.STATE_DIR.mkdir(parents=True, exist_ok=True)
    owner = netns.STATE_DIR / f"{secrets.token_hex(3)}.owner"
    owner.write_text(f"{os.getpid()} {first}\n")
    try:
        second = netns.pick_subnet(random.Random(7))
    finally:
        owner.unlink()
    assert not second.overlaps(first)


def test_pod_command_clears_the_environment(tmp_path: object) -> None:
    argv = pod_command(["aws", "sts"], home=tmp_path)  # type: ignore[arg-type]
    assert argv[:2] == ["env", "-i"]
    assert f"HOME={tmp_path}" in argv
    assert "AWS_DEFAULT_REGION=us-east-1" in argv
    assert not [a for a in argv if a.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_PROFILE"))]
    assert argv[-2:] == ["aws", "sts"]


@pytest.mark.parametrize(
    ("stdout", "ok", "key", "arn"),
    [
        ('{"ok": true, "access_key_id": "ASIA1", "arn": "arn:x"}\n', True, "ASIA1", "arn:x"),
        ('noise\n{"ok": false, "error": "NoCredentials"}\n', False, "", ""),
        (
            '{\n  "UserId": "A:kiam-x",\n  "Arn": "arn:aws:sts::1:assumed-role/r/kiam-x"\n}\n',
            True,
            "",
            "arn:aws:sts::1:assumed-role/r/kiam-x",
        ),
        ("", False, "", ""),
        ("Traceback ...", False, "", ""),
    ],
)
def test_parse_result(stdout: str, ok: bool, key: str, arn: str) -> None:
    result = parse_result(stdout, stderr="boom")
    assert (result.ok, result.access_key_id, result.arn) == (ok, key, arn)
    if not ok:
        assert result.error


@pytest.mark.netns
def test_teardown_leaves_no_state_file() -> None:
    require_bed()
    bed = netns.create_bed(pods=1)
    owner = netns.STATE_DIR / f"{bed.bed_id}.owner"
    assert owner.is_file()
    netns.destroy_bed(bed)
    assert not owner.exists()
    # The directory goes with the last bed (another run's beds may still be alive).
    assert not netns.STATE_DIR.exists() or list(netns.STATE_DIR.glob("*.owner"))
