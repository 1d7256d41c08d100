"""The tests docs/ names exist: a threat model that cites a renamed test is not true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
PATH = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")
LISTED = re.compile(r"`(tests/[\w/]+\.py)`\s*\(([^)]*)\)")


def _cited(text: str) -> set[tuple[str, str]]:
    found = {(path, name or "") for path, name in PATH.findall(text)}
    for path, names in LISTED.findall(text):
        found |= {(path, name) for name in re.findall(r"`(test_\w+)`", names)}
    return found


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_cited_test_exists(doc: Path) -> None:
    for path, name in sorted(_cited(doc.read_text())):
        source = ROOT / path
        assert source.is_file(), f"{doc.name} cites {path}, which does not exist"
        if name:
            assert re.search(rf"^(async )?def {name}\(", source.read_text(), re.M), (
                f"{doc.name} cites {path}::{name}, which does not exist"
            )


def test_the_threat_model_cites_tests() -> None:
    assert len(_cited((ROOT / "docs" / "SECURITY.md").read_text())) >= 20
