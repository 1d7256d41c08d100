"""Smoke tests of the benchmarks: each runs at a tiny size (``--quick``) as its own process
and must print its table(s) with a baseline and a ratio per figure. Never timings."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import Figure, print_table

ROOT = Path(__file__).resolve().parents[1]
_TABLE = re.compile(r"^## (?P<title>.+)  \(baseline: (?P<baseline>.+)\)$")
_ROW = re.compile(r"^(?P<name>.+?)\s+(?P<kiam>\S+)\s+(?P<base>\S+)\s+(?P<ratio>\d+\.\d\dx)"
                  r"\s+(?:higher|lower)$")


@functools.cache  # each benchmark runs once per session, however many tests read it
def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=110, check=False)


def _tables(output: str) -> dict[str, list[re.Match[str]]]:
    """Title -> its rows; a row that does not parse ends the table."""
    tables: dict[str, list[re.Match[str]]] = {}
    rows: list[re.Match[str]] | None = None
    for line in output.splitlines():
        if header := _TABLE.match(line):
            rows = tables.setdefault(header["title"], [])
        elif rows is not None and (row := _ROW.match(line)):
            rows.append(row)
        elif not line.startswith("figure "):
            rows = None
    return tables


@pytest.mark.parametrize(
    ("name", "titles"),
    [
        ("agent", ["Agent"]),
        ("replica", ["Replica: wrk"]),
        ("token_credentials", ["Token credentials: wrk"]),
        ("fairness", ["Fairness: neighbour", "Fairness: the generators"]),
        ("sync", ["Server sync"]),
        ("watch", ["Watch ingest"]),
        ("coldstart", ["Cold start"]),
        ("stsbudget", ["STS budget: cold start"]),
        ("emulator", ["Emulator endurance"]),
        ("node_streams", ["Node streams: pod event"]),
    ],
)
def test_benchmark_prints_figures_with_baseline_and_ratio(name: str, titles: list[str]) -> None:
    done = _bench(name, "--quick")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    tables = _tables(done.stdout)
    for title in titles:
        found = [rows for t, rows in tables.items() if t.startswith(title)]
        assert found, f"no {title!r} table in:\n{done.stdout}"
        assert found[0], f"{title!r} table has no figure rows:\n{done.stdout}"


def test_agent_reports_both_routes() -> None:
    done = _bench("agent", "--quick")
    assert done.returncode == 0, done.stderr[-3000:]
    names = [row["name"] for rows in _tables(done.stdout).values() for row in rows]
    assert any(n.startswith("credentials") and "requests/s" in n for n in names), names
    assert any(n.startswith("role list") and "p99" in n for n in names), names


def test_coldstart_counts_sts_calls() -> None:
    done = _bench("coldstart", "--quick")
    assert done.returncode == 0, done.stderr[-3000:]
    match = re.search(r"^STS calls: (\d+) \(expected (\d+)\)$", done.stdout, re.MULTILINE)
    assert match is not None, done.stdout
    assert match[1] == match[2]


def test_stsbudget_paced_at_the_limit_is_never_throttled() -> None:
    done = _bench("stsbudget", "--quick")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    found = re.findall(r"^STS budget --sts-qps (\d+): fill [\d.]+s, ideal [\d.]+s, "
                       r"ratio [\d.]+x, throttled (\d+)$", done.stdout, re.MULTILINE)
    assert [qps for qps, _ in found] == ["50", "100"], done.stdout
    assert found[0][1] == "0"


def test_sync_reports_memory_per_pod() -> None:
    done = _bench("sync", "--quick")
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^memory per cached pod .*\d", done.stdout, re.MULTILINE), done.stdout


def test_unknown_benchmark_is_refused() -> None:
    done = _bench("nosuch")
    assert done.returncode == 2
    assert "unknown benchmark" in done.stderr


def test_table_rows_carry_ratio_and_direction(capsys: pytest.CaptureFixture[str]) -> None:
    print_table("T", "B", [Figure("rps", 50.0, 200.0, "/s", True),
                           Figure("p50", 0.004, 0.001, "s", False)])
    rows = _tables(capsys.readouterr().out)["T"]
    assert [(r["ratio"], r.group(0).split()[-1]) for r in rows] == [
        ("0.25x", "higher"), ("4.00x", "lower")]
