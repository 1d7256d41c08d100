"""How the test harnesses and the demo run the real ``kiam`` commands: one place for the
command line of each process and for the environment it gets.

Both builders use it: :mod:`kiam_testbed.processes` (asyncio, stand-ins in-process, for
the server suite) and :mod:`kiam_testbed.stack` (every part a process, on loopback or in
a network namespace, for the demo, the e2e suite and the benchmarks); both start their
processes as :class:`kiam_testbed.child.Child`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

ACCOUNT = "123456789012"
"""moto's default account: the STS stand-in issues credentials for roles in it."""
ROLE_BASE_ARN = f"arn:aws:iam::{ACCOUNT}:role/"
SERVING = r"serving on ([^\s\"]+)"
"""``kiam server``'s log line once it listens (text or ``--json-log``); group 1: address."""


def kiam_command(*args: str) -> list[str]:
    """The ``kiam`` console script of this interpreter's environment, then ``args``."""
    script = Path(sys.executable).parent / "kiam"
    prefix = [str(script)] if script.exists() else [sys.executable, "-m", "kiam"]
    return [*prefix, *args]


def isolated_env(**extra: str) -> dict[str, str]:
    """This process's environment without any AWS setting, unbuffered, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def aws_test_env(**extra: str) -> dict[str, str]:
    """:func:`isolated_env` plus dummy credentials and a region for the stand-ins (which
    check no signature), and nothing that could reach a real profile or metadata service."""
    return isolated_env(
        AWS_ACCESS_KEY_ID="testing-access-key",
        AWS_SECRET_ACCESS_KEY="testing-secret-key",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        **extra,
    )


def tls_args(*, cert: str | os.PathLike[str], key: str | os.PathLike[str],
             ca: str | os.PathLike[str]) -> list[str]:
    return ["--cert", str(cert), "--key", str(key), "--ca", str(ca)]


def server_args(
    *,
    bind: str,
    kubeconfig: str | os.PathLike[str],
    sts_url: str,
    tls: Sequence[str],
    base_arn: str = ROLE_BASE_ARN,
    extra: Sequence[str] = (),
) -> list[str]:
    """``kiam server`` arguments against the stand-ins; ``base_arn=""`` leaves
    ``--role-base-arn`` out (pass ``--role-base-arn-autodetect`` in ``extra`` then)."""
    return [
        "server",
        "--bind",
        bind,
        "--kubeconfig",
        str(kubeconfig),
        "--sts-endpoint",
        sts_url,
        *(("--role-base-arn", base_arn) if base_arn else ()),
        *tls,
        *extra,
    ]
