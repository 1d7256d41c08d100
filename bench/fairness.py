"""Fairness: the p50/p99 of a well-behaved pod's credential requests (one at a time)
while another pod on the same agent floods it at 64 in flight, beside the same pod's
figures with no flood, same agent, same run. The agent runs with its default per-pod
limits (docs/architecture.md, "Fairness between pods"), so the flood is answered
mostly 429; the neighbour must get every answer right (any other answer fails the run).

That the generators are not what slows the neighbour: the same two load generators,
same sizes, against ``bench/bare_server.py`` (the same bytes from memory, no limit)
give the neighbour's p99 under the same flood, printed as a second table.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench import ROOT, BenchError
from bench.agent import CREDENTIALS_PATH, ROLE, fetch
from bench.report import Figure, print_table, print_values
from bench.standins import standins_stack
from kiam_testbed.commands import isolated_env

NAMESPACE = "fair"
NEIGHBOUR = "127.0.0.2"
FLOODER = "127.0.0.3"
FLOOD = 64
"""Requests the flooding pod keeps in flight."""
PACE = 50.0
"""The neighbour's requests per second, half of --pod-rate: busy, but well-behaved."""
RAMP = 0.5
"""Seconds the flood runs before the neighbour starts, and after it ends."""


@dataclass(frozen=True, kw_only=True)
class FairSizes:
    seconds: float
    rounds: int


FULL = FairSizes(seconds=5.0, rounds=3)
QUICK = FairSizes(seconds=1.0, rounds=1)


def _loadgen(url: str, *, source: str, concurrency: int, seconds: float,
             pace: float = 0.0) -> list[str]:
    return [sys.executable, "-m", "bench.loadgen", url, "--concurrency", str(concurrency),
            "--requests", "100000000", "--seconds", str(seconds), "--local-addr", source,
            "--pace", str(pace)]


def _result(done: subprocess.CompletedProcess[str], who: str) -> dict[str, float]:
    if done.returncode != 0:
        raise BenchError(f"{who} loadgen failed: {done.stderr[-2000:]}")
    result: dict[str, float] = orjson.loads(done.stdout)
    return result


def measure(url: str, *, seconds: float, flood: bool) -> tuple[dict[str, float], dict[str, float]]:
    """The neighbour's result and (with ``flood``) the flooder's."""
    flooder = None
    if flood:
        flooder = subprocess.Popen(
            _loadgen(url, source=FLOODER, concurrency=FLOOD, seconds=seconds + 2 * RAMP),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env=isolated_env())
        time.sleep(RAMP)
    try:
        command = _loadgen(url, source=NEIGHBOUR, concurrency=1, seconds=seconds, pace=PACE)
        done = subprocess.run(command,
                              capture_output=True, text=True, timeout=600, check=False,
                              cwd=ROOT, env=isolated_env())
        neighbour = _result(done, "neighbour")
        flooded: dict[str, float] = {}
        if flooder is not None:
            out, err = flooder.communicate(timeout=600)
            flooded = _result(subprocess.CompletedProcess([], flooder.returncode, out, err),
                              "flooder")
    finally:
        if flooder is not None and flooder.poll() is None:
            flooder.kill()
            flooder.wait()
    failed = neighbour["errors"] + neighbour["refused"]
    if failed:
        raise BenchError(f"{url}: the neighbour got {failed:.0f} wrong or refused answers")
    return neighbour, flooded


def run(*, quick: bool, workdir: Path) -> int:
    sizes = QUICK if quick else FULL
    url_path = CREDENTIALS_PATH + ROLE
    quiet: list[dict[str, float]] = []
    loud: list[dict[str, float]] = []
    floods: list[dict[str, float]] = []
    bare_loud: list[dict[str, float]] = []
    with standins_stack(workdir) as stack:
        stack.create_namespace(NAMESPACE, permitted=".*")
        stack.remote("bench").pods(namespace=NAMESPACE, count=2, ips=[NEIGHBOUR, FLOODER],
                                   role=ROLE)
        stack.start_server()
        stack.start_agent()  # the default per-pod limits
        stack.wait_agent_ready()
        port = stack.placement.agent_port
        for source in (NEIGHBOUR, FLOODER):
            status, body = fetch("127.0.0.1", port, url_path, source=source)
            if status != 200:
                raise BenchError(f"agent answered {status} for {source}: {body[:200]!r}")
        (workdir / "body.json").write_bytes(body)
        bare = stack.spawn("bare-server", [sys.executable, "-m", "bench.bare_server",
                                           "--body-file", str(workdir / "body.json"),
                                           "--role", ROLE], env=isolated_env(), cwd=ROOT)
        bare_url = bare.wait_for(r"^(http://\S+)$")[1]
        for i in range(sizes.rounds):
            steps = [False, True] if i % 2 == 0 else [True, False]
            for flood in steps:
                neighbour, flooded = measure(stack.agent_url + url_path,
                                             seconds=sizes.seconds, flood=flood)
                (loud if flood else quiet).append(neighbour)
                if flood:
                    floods.append(flooded)
            bare_loud.append(measure(bare_url + url_path, seconds=sizes.seconds, flood=True)[0])

    def best(runs: list[dict[str, float]], key: str) -> float:
        return min(r[key] for r in runs)

    print_table("Fairness: neighbour (1 in flight) while a pod floods at 64",
                "the same neighbour with no flood, same agent", [
                    Figure("neighbour p50, flood vs none", best(loud, "p50"),
                           best(quiet, "p50"), "s", False),
                    Figure("neighbour p99, flood vs none", best(loud, "p99"),
                           best(quiet, "p99"), "s", False),
                ])
    print_table("Fairness: the generators are not the bottleneck",
                "bare aiohttp server, same bytes, same two generators", [
                    Figure("neighbour p99 under the flood", best(loud, "p99"),
                           best(bare_loud, "p99"), "s", False),
                ])
    flooder = max(floods, key=lambda r: r["requests"])
    refused = flooder["refused"] / flooder["requests"] if flooder["requests"] else 0.0
    print_values("Fairness: the flooding pod", [
        ("flood answers/s", f"{flooder['rps']:,.0f}/s"),
        ("flood answers refused (429)", f"{refused:.0%}"),
        ("neighbour requests/s (paced)", f"{best(quiet, 'rps'):,.0f}/s"),
        ("neighbour answers wrong or refused", "0"),
    ])
    if not flooder["refused"]:
        raise BenchError("the flooding pod was never refused: the per-pod limit did not act")
    return 0
