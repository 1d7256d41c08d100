"""``python -m bench [agent|replica|token_credentials|fairness|sync|watch|coldstart|
stsbudget|emulator|node_streams ...] [--quick]``: run them.

Every figure is printed next to a baseline measured in the same run, with the ratio
kiam / baseline. Exit status: non-zero when a benchmark's correctness check failed (e.g.
the cold start's STS call count), never because of a timing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import (
    agent,
    coldstart,
    emulator,
    fairness,
    node_streams,
    replica,
    stsbudget,
    sync,
    token_credentials,
    watch,
)

Bench = Callable[..., int]
BENCHMARKS: dict[str, Bench] = {
    "agent": agent.run,
    "replica": replica.run,
    "token_credentials": token_credentials.run,
    "fairness": fairness.run,
    "sync": sync.run,
    "watch": watch.run,
    "coldstart": coldstart.run,
    "stsbudget": stsbudget.run,
    "emulator": emulator.run,
    "node_streams": node_streams.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="reduced sizes (smoke runs)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# kiam benchmarks ({'quick' if args.quick else 'full'}): {', '.join(names)}")
    print(f"# {now}; {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}); "
          f"Python {platform.python_version()}; {platform.machine()}", flush=True)
    status = 0
    with tempfile.TemporaryDirectory(prefix="kiam-bench-") as tmp:
        for name in names:
            workdir = Path(tmp) / name
            workdir.mkdir()
            status = max(status, BENCHMARKS[name](quick=args.quick, workdir=workdir))
    return status


if __name__ == "__main__":
    sys.exit(main())
