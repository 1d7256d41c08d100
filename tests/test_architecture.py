"""The layering in kiam/__init__.py, enforced: the agent never imports the server and
the other way round; no product module imports the test bed; lower layers never import
upper ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kiam"

TESTBED = "kiam_testbed"
"""The test bed (testbed/): no product module may import it; ``kiam demo`` loads it by
name (importlib) when it is installed, and says how to get it when it is not."""

# layer -> packages it must never import
FORBIDDEN = {
    "kiam": (TESTBED,),
    "kiam.common": ("kiam.wire", "kiam.aws", "kiam.k8s", "kiam.server", "kiam.agent", "kiam.cli"),
    "kiam.wire": ("kiam.aws", "kiam.k8s", "kiam.server", "kiam.agent", "kiam.cli"),
    "kiam.aws": ("kiam.k8s", "kiam.server", "kiam.agent", "kiam.cli"),
    "kiam.k8s": ("kiam.aws", "kiam.server", "kiam.agent", "kiam.cli"),
    "kiam.server": ("kiam.agent", "kiam.cli"),
    "kiam.agent": ("kiam.server", "kiam.aws", "kiam.k8s", "kiam.cli"),
    "kiam.health": ("kiam.server", "kiam.agent"),
    "kiam.certs": ("kiam.server", "kiam.agent"),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_pb2" not in p.name)


@pytest.mark.parametrize("path", _modules(), ids=_module_name)
def test_layering(path: Path) -> None:
    module = _module_name(path)
    for layer, forbidden in FORBIDDEN.items():
        if module == layer or module.startswith(layer + "."):
            bad = [
                imp
                for imp in _imports(path)
                if any(imp == f or imp.startswith(f + ".") for f in forbidden)
            ]
            assert not bad, f"{module} imports {bad}, which its layer ({layer}) must not"


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from kiam.server.main import run_server\nimport kiam_testbed.demo\n")
    assert {"kiam.server.main", "kiam_testbed.demo"} <= _imports(sample)
