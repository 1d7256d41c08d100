"""Processes for the agent's namespace tests, where the test process cannot listen or
connect itself: the scripted :mod:`tests.agent.named_server` and the test bed's HTTP client.

``wrap`` is the command prefix that runs a command in the namespace
(``ip netns exec NAME ...``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from kiam.certs import CertPaths
from kiam_testbed.child import Child
from kiam_testbed.commands import isolated_env
from kiam_testbed.stack import HTTP_LINES, Placement, Stack

REPO = Path(__file__).resolve().parents[2]
CREDS = "/latest/meta-data/iam/security-credentials/"

def start_named_server(
    wrap: Sequence[str],
    certs: CertPaths,
    *,
    bind: str,
    name: str,
    log_dir: Path,
    hold_file: Path | None = None,
) -> Child:
    """Start a named server at ``bind`` (``host:port``) and wait until it listens."""
    command = [sys.executable, "-m", "tests.agent.named_server", "--bind", bind,
               "--certs", str(certs.directory), "--name", name]
    if hold_file is not None:
        command += ["--hold-file", str(hold_file)]
    stack = Stack(log_dir, Placement(wrap=lambda argv: [*wrap, *argv]))
    server = stack.spawn(f"named-{name}", command, env=isolated_env(), cwd=REPO)
    try:
        server.wait_for("^ready$")
    except BaseException:
        server.stop()
        raise
    return server


def start_client(
    wrap: Sequence[str], port: int, count: int, *, path: str = CREDS
) -> subprocess.Popen[bytes]:
    """``count`` GETs of ``path`` (the role list) from the agent on 127.0.0.1:``port``, one
    connection each (:mod:`kiam_testbed.http_lines`); a :class:`Child`'s process (it dies
    with the test), answers on its stdout as they come."""
    client = Child.start("client", [*wrap, *HTTP_LINES], log_path=Path(os.devnull),
                         env=isolated_env(), pipes=True)
    assert client.popen.stdin is not None
    request = json.dumps({"url": f"http://127.0.0.1:{port}{path}"}) + "\n"
    client.popen.stdin.write(request.encode() * count)
    client.popen.stdin.close()
    return client.popen


def read_answers(
    client: subprocess.Popen[bytes], count: int | None = None
) -> list[tuple[int, str]]:
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
