"""Real AWS SDK clients run inside test pods, and the commands that run them.

Each client finds credentials through its SDK's default chain (ending at the instance
metadata service) and calls STS GetCallerIdentity at an explicit endpoint. They run with
an empty environment (:func:`pod_command`) so no ambient AWS setting can leak in:

- boto3: ``python -m kiam_testbed.sdk_clients.boto3_caller URL``
- the AWS CLI: ``aws sts get-caller-identity --endpoint-url URL``
- the AWS SDK for JavaScript v3: ``node caller.mjs URL``, with the packages pinned by
  ``js/package-lock.json`` installed once into a cache directory (:func:`ensure_js_sdk`).

Every client prints one JSON line that :func:`parse_result` reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import kiam
from kiam_testbed.netns import PodNetns

JS_SOURCE = Path(__file__).resolve().parent / "js"
_JS_FILES = ("package.json", "package-lock.json", "caller.mjs")
REPO_ROOT = Path(kiam.__file__).resolve().parent.parent
REGION = "us-east-1"
_NPM_TIMEOUT = 300.0


class SdkInstallError(Exception):
    """npm could not install the JavaScript SDK (no registry, no npm, a bad lock file)."""


@dataclass(frozen=True, kw_only=True)
class CallerResult:
    """What a client reported: the credentials' key id and STS's view of the caller."""

    ok: bool
    access_key_id: str = ""
    arn: str = ""
    error: str = ""


def parse_result(stdout: str, *, stderr: str = "") -> CallerResult:
    """Read a client's output: our callers' JSON line, or the AWS CLI's JSON document."""
    text = stdout.strip()
    lines = text.splitlines()
    # Our callers print one JSON line last; the AWS CLI prints an indented document.
    for candidate in (lines[-1] if lines else "", text):
        try:
            doc = json.loads(candidate)
            break
        except ValueError:
            continue
    else:
        return CallerResult(ok=False, error=(stderr.strip() or text or "no output")[-2000:])
    if not isinstance(doc, dict):
        return CallerResult(ok=False, error=f"unexpected output: {text[:200]}")
    if "Arn" in doc:  # the AWS CLI prints the GetCallerIdentity response itself
        return CallerResult(ok=True, arn=str(doc["Arn"]))
    return CallerResult(
        ok=bool(doc.get("ok")),
        access_key_id=str(doc.get("access_key_id", "")),
        arn=str(doc.get("arn", "")),
        error=str(doc.get("error", "")),
    )


# ---------------------------------------------------------------- commands


def pod_command(
    command: Sequence[str], *, home: Path, env: Mapping[str, str] | None = None
) -> list[str]:
    """``command`` under ``env -i`` with only HOME (empty), PATH, the region and ``env``
    set (e.g. the two variables the token credentials webhook gives a pod)."""
    path = ":".join(
        dict.fromkeys([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])
    )
    return [
        "env",
        "-i",
        f"HOME={home}",
        f"PATH={path}",
        f"AWS_DEFAULT_REGION={REGION}",
        *(f"{name}={value}" for name, value in (env or {}).items()),
        *command,
    ]


@dataclass(frozen=True, kw_only=True)
class PodRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> CallerResult:
        return parse_result(self.stdout, stderr=self.stderr)


def run_in_pod(pod: PodNetns, command: Sequence[str], *, home: Path,
               timeout: float = 60.0, env: Mapping[str, str] | None = None) -> PodRun:
    """``command`` inside the pod (:func:`pod_command`), with ``home`` made if missing."""
    home.mkdir(parents=True, exist_ok=True)
    argv = pod.argv(pod_command(command, home=home, env=env))
    done = subprocess.run(argv, capture_output=True,
                          text=True, timeout=timeout, check=False)
    return PodRun(returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)


def boto3_command(endpoint: str) -> list[str]:
    return [sys.executable, "-m", "kiam_testbed.sdk_clients.boto3_caller", endpoint]


def awscli_command(endpoint: str) -> list[str]:
    aws = Path(sys.executable).parent / "aws"
    return [
        str(aws),
        "sts",
        "get-caller-identity",
        "--endpoint-url",
        endpoint,
        "--region",
        REGION,
        "--output",
        "json",
    ]


def js_command(js_dir: Path, endpoint: str) -> list[str]:
    node = shutil.which("node") or "node"
    return [node, str(js_dir / "caller.mjs"), endpoint]


def imds_probe_command(
    version: str, url: str = "http://169.254.169.254", *, ask_for: str = ""
) -> list[str]:
    """The metadata walk by hand; ``ask_for`` requests that role's credentials instead."""
    extra = [ask_for] if ask_for else []
    return [sys.executable, "-m", "kiam_testbed.sdk_clients.imds_probe", version, url, *extra]


# ---------------------------------------------------------------- npm


def default_js_cache() -> Path:
    """``<repo>/.cache/node`` (gitignored), shared by every run on this machine."""
    return REPO_ROOT / ".cache" / "node"


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for name in _JS_FILES:
        digest.update((JS_SOURCE / name).read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    # Two test runs installing into one cache at once would corrupt node_modules.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_js_sdk(cache_dir: Path | None = None) -> Path:
    """Install the pinned JavaScript SDK into ``cache_dir`` unless it is already there.

    Returns the directory holding ``caller.mjs`` and its ``node_modules``. The install is
    skipped when a stamp matches the committed package files; it uses ``npm ci`` (the lock
    file, no install scripts) and raises :class:`SdkInstallError` when npm fails.
    """
    target = cache_dir or default_js_cache()
    target.mkdir(parents=True, exist_ok=True)
    stamp = target / ".installed"
    digest = _lock_digest()
    with exclusive(target / ".lock"):
        if stamp.is_file() and stamp.read_text() == digest and (target / "node_modules").is_dir():
            return target
        npm = shutil.which("npm")
        if npm is None:
            raise SdkInstallError("npm is not installed; the JavaScript SDK tests need Node")
        for name in _JS_FILES:
            shutil.copyfile(JS_SOURCE / name, target / name)
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                cwd=target,
                capture_output=True,
                text=True,
                timeout=_NPM_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SdkInstallError(f"npm ci: {exc}") from None
        if done.returncode != 0:
            raise SdkInstallError(f"npm ci failed: {done.stderr.strip()[-2000:]}")
        stamp.write_text(digest)
    return target
