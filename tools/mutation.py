"""``make mutation``: mutation testing of the code that decides who gets which role.

Each module in :data:`MODULES` is mutated by mutmut (pinned in the ``test`` extra) and
every mutant is run against that module's *own* unit tests only, so a module is not
credited with kills that some other module's tests happen to make. Each run happens in a
scratch copy under ``build/mutation/``; the repository is never touched.

A mutant that survives is a missing test, unless it is equivalent (no test could tell it
from the code). Equivalent mutants are listed, each with a one-line reason, in
``tools/mutation_equivalents.toml``, identified by the function mutmut mutated and the
lines its diff removes and adds (not by mutmut's numbering, which shifts whenever a
function changes). The run prints a table and exits 1 when any module has an unlisted
survivor, or when a listed equivalent no longer occurs (so the list cannot go stale).
Why by hand: mutmut has no notion of per-module test selection or of a reviewed list of
equivalent mutants; this is the thin layer that adds both.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "build" / "mutation"
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.toml")

MODULES: dict[str, tuple[str, ...]] = {
    "kiam/server/policy.py": (
        "tests/server/test_policy.py",
        "tests/server/test_policy_properties.py",
    ),
    "kiam/k8s/ownership.py": ("tests/k8s/test_ownership.py",),
    "kiam/agent/paths.py": ("tests/agent/test_paths.py",),
    "kiam/agent/fairness.py": ("tests/agent/test_fairness.py",),
    "kiam/aws/arn.py": ("tests/aws/test_arn.py",),
    "kiam/aws/session_names.py": ("tests/aws/test_session_names.py",),
    "kiam/server/prefetch.py": ("tests/server/test_prefetch.py",),
    "kiam/aws/refusals.py": ("tests/aws/test_refusals.py",),
    "kiam/aws/backoff.py": ("tests/aws/test_backoff.py",),
    "kiam/aws/budget.py": ("tests/aws/test_budget.py",),
    "kiam/agent/token_answers.py": ("tests/agent/test_token_answers.py",),
}
"""Security-critical pure module -> its own unit tests."""

# mutmut's exit codes for a mutant (mutmut/stats.py); anything else is not a kill
_KILLED = {1: "killed", 3: "killed", 36: "timeout", -24: "timeout", 24: "timeout",
           152: "timeout", 255: "timeout", -11: "crashed", -9: "crashed"}
_NAME = re.compile(r"^(?P<module>[\w.]+)\.(?P<function>x\S+?)__mutmut_\d+$")


@dataclass(frozen=True, slots=True)
class Mutant:
    name: str
    function: str
    removed: tuple[str, ...]
    added: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Equivalent:
    module: str
    function: str
    removed: tuple[str, ...]
    added: tuple[str, ...]
    reason: str

    def matches(self, module: str, mutant: Mutant) -> bool:
        return (self.module, self.function, self.removed, self.added) == (
            module, mutant.function, mutant.removed, mutant.added,
        )


@dataclass(frozen=True, slots=True)
class ModuleResult:
    module: str
    total: int
    killed: int
    equivalent: list[Mutant]
    unexplained: list[tuple[Mutant, str]]


def load_equivalents(path: Path = EQUIVALENTS) -> list[Equivalent]:
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    found = []
    for entry in data.get("equivalent", []):
        reason = str(entry.get("reason", "")).strip()
        if not reason or "\n" in reason:
            raise SystemExit(f"{path}: every equivalent needs a one-line reason: {entry}")
        found.append(
            Equivalent(
                module=entry["module"],
                function=entry["function"],
                removed=tuple(entry.get("removed", [])),
                added=tuple(entry.get("added", [])),
                reason=reason,
            )
        )
    return found


def _scratch_for(module: str, tests: tuple[str, ...]) -> Path:
    work = SCRATCH / module.replace("/", "_").removesuffix(".py")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    shutil.copytree(ROOT / "kiam", work / "kiam", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    pyproject = (ROOT / "pyproject.toml").read_text()
    # the repository's pyproject has no [tool.mutmut]: this run's settings are appended
    pyproject += "\n[tool.mutmut]\n" + "\n".join(
        [
            'source_paths = ["kiam"]',
            f"only_mutate = {json.dumps([module])}",
            f"pytest_add_cli_args_test_selection = {json.dumps(list(tests))}",
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]',
        ]
    ) + "\n"
    (work / "pyproject.toml").write_text(pyproject)
    return work


def _mutmut(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    mutmut = Path(sys.executable).with_name("mutmut")
    return subprocess.run(
        [str(mutmut), *args], cwd=work, capture_output=True, text=True, check=False
    )


def _diff_lines(diff: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    removed, added = [], []
    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            removed.append(line[1:].strip())
        elif line.startswith("+"):
            added.append(line[1:].strip())
    return tuple(removed), tuple(added)


def run_module(module: str, tests: tuple[str, ...], equivalents: list[Equivalent]) -> ModuleResult:
    work = _scratch_for(module, tests)
    done = _mutmut(work, "run")
    meta = work / "mutants" / (module + ".meta")
    if not meta.exists():
        tail = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        raise SystemExit(f"mutmut failed on {module}:\n{tail}")
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    killed = 0
    equivalent: list[Mutant] = []
    unexplained: list[tuple[Mutant, str]] = []
    for name, code in sorted(codes.items()):
        if code in _KILLED:
            killed += 1
            continue
        match = _NAME.match(name)
        function = match["function"] if match else name
        removed, added = _diff_lines(_mutmut(work, "show", name).stdout)
        mutant = Mutant(name=name, function=function, removed=removed, added=added)
        if any(e.matches(module, mutant) for e in equivalents):
            equivalent.append(mutant)
        else:
            status = {0: "survived", 5: "no tests", 33: "no tests", None: "not checked"}
            unexplained.append((mutant, status.get(code, f"exit code {code}")))
    return ModuleResult(module, len(codes), killed, equivalent, unexplained)


def stale(equivalents: list[Equivalent], results: list[ModuleResult]) -> list[Equivalent]:
    """Listed equivalents that no surviving mutant matched."""
    seen = {r.module: r for r in results}
    out = []
    for e in equivalents:
        result = seen.get(e.module)
        if result is not None and not any(e.matches(e.module, m) for m in result.equivalent):
            out.append(e)
    return out


def report(results: list[ModuleResult], stale_entries: list[Equivalent]) -> int:
    print(f"{'module':<28} {'mutants':>8} {'killed':>7} {'equivalent':>11} {'survived':>9} "
          f"{'score':>7}")
    for r in results:
        relevant = r.total - len(r.equivalent)
        score = 100.0 * r.killed / relevant if relevant else 100.0
        print(f"{r.module:<28} {r.total:>8} {r.killed:>7} {len(r.equivalent):>11} "
              f"{len(r.unexplained):>9} {score:>6.1f}%")
    failed = False
    for r in results:
        for mutant, status in r.unexplained:
            failed = True
            print(f"\n{status}: {mutant.name} ({r.module})")
            for line in mutant.removed:
                print(f"  - {line}")
            for line in mutant.added:
                print(f"  + {line}")
    for e in stale_entries:
        failed = True
        print(f"\nlisted as equivalent but no longer a survivor: {e.module} {e.function}: "
              f"{e.reason}")
    if failed:
        print(f"\nA survivor is a missing test, or an equivalent mutant to list in "
              f"{EQUIVALENTS.relative_to(ROOT)} with its reason.")
        return 1
    print("\nevery non-equivalent mutant was killed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mutation", description=__doc__)
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"only these modules (default: all of {', '.join(MODULES)})")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"not a mutation-tested module: {', '.join(unknown)}")
    chosen = args.modules or list(MODULES)
    equivalents = load_equivalents()
    results = []
    for module in chosen:
        print(f"mutating {module} against {', '.join(MODULES[module])}", flush=True)
        results.append(run_module(module, MODULES[module], equivalents))
    return report(results, stale([e for e in equivalents if e.module in chosen], results))


if __name__ == "__main__":
    sys.exit(main())
