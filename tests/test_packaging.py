"""What ``pip install kiam`` and the image get: the product, not the test bed.

The wheel is built from exactly the Docker build context (pyproject.toml, README.md,
kiam/; see the Dockerfile), so what it lists is what the image installs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kiam import cli

ROOT = Path(__file__).resolve().parent.parent
# Dependencies of the stand-ins: in testbed/pyproject.toml, never the product's.
TESTBED_ONLY = ("moto", "boto3", "awscli")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    context = tmp_path_factory.mktemp("context")
    shutil.copy(ROOT / "pyproject.toml", context)
    shutil.copy(ROOT / "README.md", context)
    shutil.copytree(ROOT / "kiam", context / "kiam",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out),
         str(context)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [built] = out.glob("kiam-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_the_product_without_the_test_bed(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "kiam/agent/main.py" in names and "kiam/server/main.py" in names
    packages = {name.split("/")[0] for name in names if not name.startswith("kiam-")}
    assert packages == {"kiam"}, packages
    assert not [n for n in names if n.startswith(("kiam/testing/", "kiam/demo"))]


def test_the_wheel_requires_no_stand_in_dependency(wheel: zipfile.ZipFile) -> None:
    [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [
        line.split(":", 1)[1].strip()
        for line in wheel.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    assert any(r.startswith("aiohttp") for r in requires), requires
    names = {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requires}
    assert not names & set(TESTBED_ONLY), requires


def test_kiam_demo_without_the_test_bed_says_how_to_get_it() -> None:
    # None in sys.modules makes the import fail as it does where the test bed is absent.
    code = ("import sys; sys.modules['kiam_testbed'] = None\n"
            "from kiam.cli import main; sys.exit(main(['demo']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == cli.DEMO_MISSING + "\n"
    assert "make demo" in done.stderr
