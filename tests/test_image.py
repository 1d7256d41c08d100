"""The image answers to ``/kiam`` as Go Kiam's does (a chart's ``command: [/kiam, agent]``
and its ``/kiam health`` probes), and to ``kiam`` (our ENTRYPOINT). No Docker engine here:
the Dockerfile is read, and the console script is run through a symlink, as ``/kiam`` is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def _final_stage() -> list[str]:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    steps = [line for line in lines if line and not line.startswith("#")]
    last_from = max(i for i, line in enumerate(steps) if line.startswith("FROM "))
    return steps[last_from:]


def test_the_image_links_slash_kiam_to_the_console_script() -> None:
    steps = _final_stage()
    copy = steps.index("COPY --from=build /install /usr/local")  # console script: bin/kiam
    link = steps.index("RUN ln -s /usr/local/bin/kiam /kiam")
    assert copy < link


def test_the_entrypoint_is_still_kiam() -> None:
    entrypoints = [s for s in _final_stage() if s.startswith("ENTRYPOINT ")]
    assert [json.loads(e.removeprefix("ENTRYPOINT ")) for e in entrypoints] == [["kiam"]]


def test_the_console_script_runs_through_a_symlink_elsewhere(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "kiam"
    assert script.exists(), "the kiam console script is not installed (make install)"
    link = tmp_path / "root" / "kiam"  # as /kiam -> /usr/local/bin/kiam
    link.parent.mkdir()
    link.symlink_to(script)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"  # not the venv: the link alone must find its program
    version = subprocess.run(
        [str(link), "--version"], capture_output=True, text=True, env=env, check=False
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("kiam ")
    # a Go probe's flags, against nothing: parsed, warned about, then unhealthy (exit 1)
    for name in ("cert", "key", "ca"):
        (tmp_path / name).write_text("x")
    probe = subprocess.run(
        [str(link), "health", f"--cert={tmp_path / 'cert'}", f"--key={tmp_path / 'key'}",
         f"--ca={tmp_path / 'ca'}", "--server-address=127.0.0.1:1",
         "--server-address-refresh=2s", "--timeout=100ms", "--gateway-timeout-creation=1s"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert probe.returncode == 1, probe.stderr
    assert "unhealthy" in probe.stderr


def test_the_image_has_the_agents_network_tools() -> None:
    # iptables for --iptables, iproute2's `ip` for --token-credentials (kiam/agent/link_local.py)
    installs = [s for s in _final_stage() if "apt-get install" in s]
    assert installs, "the final stage installs no Debian package"
    packages = installs[0].split("--no-install-recommends", 1)[1].split("&&")[0].split()
    assert {"iptables", "iproute2"} <= set(packages), packages
