"""Processes for the agent's namespace tests, where the test process cannot listen or
connect itself: the scripted :mod:`tests.agent.named_server` and a small HTTP client.

``wrap`` is the command prefix that runs a command in the namespace
(``ip netns exec NAME ...``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from kiam.certs import CertPaths
from kiam_testbed.child import Child
from kiam_testbed.commands import isolated_env

REPO = Path(__file__).resolve().parents[2]
CREDS = "/latest/meta-data/iam/security-credentials/"

# GETs ``path`` ``count`` times, one connection each, printing one JSON line per
# answer as it comes, so the test can act part-way through.
_CLIENT = """
import json, sys, urllib.error, urllib.request
port, count, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for _ in range(count):
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            out = [resp.status, resp.read().decode()]
    except urllib.error.HTTPError as exc:
        out = [exc.code, exc.read().decode()]
    except OSError as exc:
        out = [0, str(exc)]
    print(json.dumps(out), flush=True)
"""


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
    command = [
        *wrap,
        sys.executable,
        "-m",
        "tests.agent.named_server",
        *("--bind", bind, "--certs", str(certs.directory), "--name", name),
    ]
    if hold_file is not None:
        command += ["--hold-file", str(hold_file)]
    server = Child.start(
        f"named server {name}", command, log_path=log_dir / f"named-{name}.log",
        env=isolated_env(), cwd=REPO,
    )
    try:
        server.wait_for("^ready$")
    except BaseException:
        server.stop()
        raise
    return server


def start_client(
    wrap: Sequence[str], port: int, count: int, *, path: str = CREDS
) -> subprocess.Popen[str]:
    """``count`` GETs of ``path`` (the role list) from the agent on 127.0.0.1:``port``."""
    command = [*wrap, sys.executable, "-c", _CLIENT, str(port), str(count), path]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def read_answers(client: subprocess.Popen[str], count: int | None = None) -> list[tuple[int, str]]:
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
