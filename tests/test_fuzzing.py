"""The knobs of the randomised tests (tests/fuzzing.py), and that ``make fuzz`` reaches
every one of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import fuzzing

ROOT = Path(__file__).resolve().parents[1]


def test_make_test_runs_the_fixed_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(fuzzing.SCALE_ENV, raising=False)
    monkeypatch.delenv(fuzzing.SEED_ENV, raising=False)
    assert fuzzing.scale() == 1
    assert fuzzing.count(1500) == 1500
    assert fuzzing.fuzz(300).max_examples == 300
    assert fuzzing.fuzz(300).deadline is None
    assert fuzzing.seed(7) == 7


def test_the_scale_multiplies_and_draws_a_fresh_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fuzzing.SCALE_ENV, "20")
    monkeypatch.delenv(fuzzing.SEED_ENV, raising=False)
    assert fuzzing.count(1500) == 30_000
    assert fuzzing.fuzz(300).max_examples == 6000
    seeds = {fuzzing.seed(7) for _ in range(5)}
    assert len(seeds) > 1
    monkeypatch.setenv(fuzzing.SEED_ENV, "12345")
    assert fuzzing.seed(7) == 12345


@pytest.mark.parametrize("value", ["0", "-3", "many", "1.5"])
def test_a_bad_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(fuzzing.SCALE_ENV, value)
    with pytest.raises(ValueError, match=fuzzing.SCALE_ENV):
        fuzzing.scale()


def test_every_randomised_test_module_is_marked_for_make_fuzz() -> None:
    randomised = [
        path
        for path in ROOT.glob("tests/**/test_*.py")
        if re.search(r"^from hypothesis import|^from tests import fuzzing", path.read_text(), re.M)
    ]
    assert len(randomised) >= 5
    unmarked = [
        str(path.relative_to(ROOT))
        for path in randomised
        if "pytestmark = pytest.mark.fuzz" not in path.read_text()
    ]
    assert unmarked == []


def test_make_fuzz_selects_the_marker_and_scales() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nfuzz:", 1)[1].split("\n\n", 1)[0]
    assert "-m fuzz" in recipe
    assert f"{fuzzing.SCALE_ENV}=$(FUZZ_SCALE)" in recipe
