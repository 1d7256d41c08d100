"""kiam benchmarks: every figure is printed next to a baseline measured in the same run.

Run with `make bench` (all) or `python -m bench NAME ...` (see `python -m bench --help`).
"""

from pathlib import Path

from kiam_testbed.child import HarnessError

ROOT = Path(__file__).resolve().parents[1]
"""The repository: the working directory of ``python -m bench.*`` children."""


class BenchError(HarnessError):
    """A helper process failed, or a benchmark's precondition did not hold."""
