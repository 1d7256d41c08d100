"""``make mutation``'s own bookkeeping (tools/mutation.py): no mutmut run here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.mutation import (
    EQUIVALENTS,
    MODULES,
    ROOT,
    Equivalent,
    ModuleResult,
    Mutant,
    _diff_lines,
    load_equivalents,
    report,
    stale,
)

DIFF = """--- kiam/x.py
+++ kiam/x.py
@@ -1,3 +1,3 @@
 def f():
-    return a or b
+    return a and b
"""


def test_every_module_and_its_tests_exist() -> None:
    for module, tests in MODULES.items():
        assert (ROOT / module).is_file(), module
        assert tests and all((ROOT / t).is_file() for t in tests), module


def test_the_checked_in_equivalents_parse_and_name_listed_modules() -> None:
    equivalents = load_equivalents(EQUIVALENTS)
    assert equivalents
    assert all(e.module in MODULES and e.reason for e in equivalents)


def test_an_equivalent_needs_a_one_line_reason(tmp_path: Path) -> None:
    listed = tmp_path / "eq.toml"
    listed.write_text('[[equivalent]]\nmodule = "m"\nfunction = "f"\nreason = ""\n')
    with pytest.raises(SystemExit, match="one-line reason"):
        load_equivalents(listed)


def test_diff_lines_are_what_the_mutant_removed_and_added() -> None:
    assert _diff_lines(DIFF) == (("return a or b",), ("return a and b",))


def _mutant() -> Mutant:
    removed, added = _diff_lines(DIFF)
    return Mutant(name="kiam.x.x_f__mutmut_1", function="x_f", removed=removed, added=added)


def test_equivalents_match_by_function_and_lines_not_by_number() -> None:
    listed = Equivalent("kiam/x.py", "x_f", ("return a or b",), ("return a and b",), "why")
    assert listed.matches("kiam/x.py", _mutant())
    assert not listed.matches("kiam/y.py", _mutant())
    other = Equivalent("kiam/x.py", "x_g", ("return a or b",), ("return a and b",), "why")
    assert not other.matches("kiam/x.py", _mutant())


def test_report_fails_on_a_survivor_and_on_a_stale_listing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean = ModuleResult("kiam/x.py", total=3, killed=3, equivalent=[], unexplained=[])
    assert report([clean], []) == 0
    survivor = ModuleResult("kiam/x.py", 3, 2, [], [(_mutant(), "survived")])
    assert report([survivor], []) == 1
    assert "survived: kiam.x.x_f__mutmut_1" in capsys.readouterr().out
    listed = Equivalent("kiam/x.py", "x_f", ("return a or b",), ("return a and b",), "why")
    assert stale([listed], [clean]) == [listed]
    assert report([clean], stale([listed], [clean])) == 1
    matched = ModuleResult("kiam/x.py", 3, 2, [_mutant()], [])
    assert stale([listed], [matched]) == []
    assert report([matched], []) == 0
