"""``python -m kiam_testbed.standins`` as a process: URLs first, the stand-ins' own API
called over its stdin and stdout (``Stack.kube``, ``Stack.sts``), real clients on its
HTTP ports, a clean exit on SIGTERM, SIGINT or the end of its input."""

from __future__ import annotations

import json
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import orjson
import pytest
from botocore.config import Config

from kiam_testbed.child import Child, HarnessError
from kiam_testbed.commands import aws_test_env, isolated_env
from kiam_testbed.stack import Stack

ROLE = "arn:aws:iam::123456789012:role/standalone"
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=5)


def _sts(url: str) -> Any:
    env = aws_test_env()
    return boto3.client("sts", region_name="us-east-1", endpoint_url=url, config=NO_RETRIES,
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def test_the_stand_ins_api_by_pipe_and_real_clients_on_http(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        standins = stack.start_standins()
        config = json.loads(stack.kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == standins.kube_url
        stack.create_namespace("team", permitted=".*")
        created = stack.kube.create_pod("team", "web", ip="10.0.0.5")
        assert created["status"]["podIP"] == "10.0.0.5"
        with urllib.request.urlopen(f"{standins.kube_url}/api/v1/namespaces/team/pods") as r:
            assert [p["metadata"]["name"] for p in json.load(r)["items"]] == ["web"]

        stack.sts.queue_fault("throttling")
        sts = _sts(standins.sts_url)
        with pytest.raises(botocore.exceptions.ClientError) as info:
            sts.assume_role(RoleArn=ROLE, RoleSessionName="standalone")
        assert info.value.response["Error"]["Code"] == "Throttling"
        assert sts.assume_role(RoleArn=ROLE, RoleSessionName="standalone")["Credentials"]
        assert (stack.sts.assume_role_calls(), stack.sts.successful_assume_role_calls()) == (2, 1)

        # an error is the caller's, and the process goes on serving
        with pytest.raises(HarnessError, match=r"kube\.get: KubeApiError"):
            stack.kube.get("pods", "team", "nobody")
        assert stack.standins is standins
        with pytest.raises(HarnessError, match=r"no call kube\._store"):
            standins.call("kube", "_store")
        with pytest.raises(AttributeError):
            stack.kube._hidden  # noqa: B018 - the attribute access is what is tested
        late = r"sts\.wait_for_calls: TimeoutError: no answer within 0\.2s"
        with pytest.raises(HarnessError, match=late):
            stack.remote("sts", timeout=0.2).wait_for_calls(5)  # two were made
        # the method's own TimeoutError is its error, not the call's limit running out
        with pytest.raises(HarnessError, match=r"kube\.wait_for_watchers: TimeoutError: $"):
            stack.kube.wait_for_watchers(1, timeout=0.1)
        assert stack.kube.find("pods", "team", "web")["metadata"]["name"] == "web"
        child = stack.processes["standins"]
    finally:
        stack.close()
    assert child.returncode == 0, child.log_tail()


def test_flags_set_the_rate_limit_and_leave_sts_out(tmp_path: Path) -> None:
    limited = Stack(tmp_path / "limited")
    alone = Stack(tmp_path / "alone")
    try:
        sts = _sts(limited.start_standins("--sts-rate-limit", "0.01", "--sts-burst", "1").sts_url)
        sts.assume_role(RoleArn=ROLE, RoleSessionName="standalone")
        with pytest.raises(botocore.exceptions.ClientError) as info:
            sts.assume_role(RoleArn=ROLE, RoleSessionName="standalone")
        assert info.value.response["Error"]["Code"] == "Throttling"
        assert limited.sts.rate_limited_assume_role_calls() == 1

        assert alone.start_standins("--no-sts").sts_url == ""
        with pytest.raises(HarnessError, match=r"no call sts\.assume_role_calls"):
            alone.sts.assume_role_calls()
    finally:
        limited.close()
        alone.close()


@pytest.mark.parametrize("ending", ["SIGTERM", "SIGINT", "end of input"])
def test_it_exits_cleanly(tmp_path: Path, ending: str) -> None:
    command = [sys.executable, "-m", "kiam_testbed.standins", "--no-sts",
               "--kubeconfig", str(tmp_path / "kubeconfig")]
    child = Child.start("standins", command, log_path=tmp_path / "standins.log",
                        env=isolated_env(), pipes=True)
    try:
        stdin, stdout = child.popen.stdin, child.popen.stdout
        assert stdin is not None and stdout is not None
        assert orjson.loads(stdout.readline())["kube"].startswith("http://127.0.0.1:")
        stdin.write(b'{"target": "kube", "method": "resource_version"}\n')
        stdin.write(b"not json\n")
        stdin.flush()
        assert "error" in orjson.loads(stdout.readline())  # a property, not a call
        assert orjson.loads(stdout.readline())["error"].startswith("JSONDecodeError")
        if ending == "end of input":
            stdin.close()
        else:
            child.signal(getattr(signal, ending))
        assert child.popen.wait(timeout=20) == 0, child.log()
    finally:
        child.stop()
