"""Node streams at scale: one real ``kiam server`` streaming to N simulated agents.

The stand-ins process holds N nodes x P pods; ONE client process
(``bench.node_streams_client``) opens a ``WatchNode`` stream per node (25 to a
connection) and, beside them, one direct pod watch of the emulator. Once every stream
has its snapshot the stand-ins churn pods (delete one, create its replacement on the
same node with the same IP and another role) at a fixed rate. Measured:

- push latency: a replacement's creation (in the stand-ins) until its first entry
  arrives at its node's simulated agent; baseline: until its ADDED event arrives on the
  direct watch in the same client process, i.e. the emulator's own watch delivery, which
  the server's path includes;
- the server's CPU share (utime+stime from /proc over wall time) while idle (heartbeats
  only) and during the churn, and its RSS at the end;
- a linear extrapolation to 5,000 nodes over several servers.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import ROOT, BenchError
from bench.report import Figure, fmt_bytes, print_table, print_values
from bench.standins import standins_stack
from kiam_testbed.child import Child
from kiam_testbed.commands import isolated_env
from kiam_testbed.stack import Stack

NAMESPACE = "nodes"
_CLOCK_TICK = 100  # os.sysconf("SC_CLK_TCK") on Linux


@dataclass(frozen=True, kw_only=True)
class StreamSizes:
    nodes: int
    pods_per_node: int
    churn_rate: float
    churn_seconds: float
    idle_seconds: float


FULL = StreamSizes(nodes=500, pods_per_node=30, churn_rate=50.0, churn_seconds=30.0,
                   idle_seconds=10.0)
QUICK = StreamSizes(nodes=10, pods_per_node=5, churn_rate=20.0, churn_seconds=2.0,
                    idle_seconds=1.0)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK  # utime, stime


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for {pid}")


def _share(pid: int, seconds: float) -> float:
    """The process's CPU share (1.0: one core) over the next ``seconds``."""
    cpu, wall = _cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (_cpu_seconds(pid) - cpu) / (time.monotonic() - wall)


class Agents:
    """The client process, spoken to over its pipes."""

    def __init__(self, stack: Stack, workdir: Path, nodes: int) -> None:
        command = [sys.executable, "-m", "bench.node_streams_client", "--address",
                   f"127.0.0.1:{stack.placement.server_port}", "--certs", str(stack.certs),
                   "--kubeconfig", str(stack.kubeconfig), "--nodes", str(nodes)]
        self.child = Child.start("agents", command, log_path=workdir / "agents.log",
                                 env=isolated_env(), cwd=ROOT, pipes=True)

    def read(self) -> dict[str, Any]:
        assert self.child.popen.stdout is not None
        if not (line := self.child.popen.stdout.readline()):
            raise BenchError(f"simulated agents ended: {self.child.diagnostics()}")
        reply: dict[str, Any] = orjson.loads(line)
        return reply

    def finish(self) -> dict[str, Any]:
        assert self.child.popen.stdin is not None
        self.child.popen.stdin.write(b"done\n")
        self.child.popen.stdin.flush()
        return self.read()

    def stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.child.popen.wait(timeout=10)  # it ends by itself after finish()
        self.child.stop()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True, kw_only=True)
class StreamResult:
    stream: list[float]
    watch: list[float]
    missing: int
    idle_share: float
    churn_share: float
    rss: int
    counts: dict[str, int]
    errors: list[str]


def _measure(stack: Stack, workdir: Path, sizes: StreamSizes) -> StreamResult:
    pods = sizes.nodes * sizes.pods_per_node
    stack.create_namespace(NAMESPACE, permitted=".*")
    stack.remote("bench", timeout=600).pods(namespace=NAMESPACE, count=pods, nodes=sizes.nodes)
    server = stack.start_server()
    server.wait_for("caches synced", timeout=300)
    agents = Agents(stack, workdir, sizes.nodes)
    try:
        ready = agents.read()
        if ready["entries"] != pods:
            raise BenchError(f"snapshots held {ready['entries']} entries, expected {pods}")
        idle = _share(server.pid, sizes.idle_seconds)
        cpu, wall = _cpu_seconds(server.pid), time.monotonic()
        churn = stack.remote("bench", timeout=sizes.churn_seconds * 3 + 60).churn(
            namespace=NAMESPACE, pods=pods, nodes=sizes.nodes, rate=sizes.churn_rate,
            seconds=sizes.churn_seconds)
        time.sleep(1.0)  # the last replacements' entries on their way
        busy = (_cpu_seconds(server.pid) - cpu) / (time.monotonic() - wall)
        rss = _rss(server.pid)
        seen = agents.finish()
    finally:
        agents.stop()
    created: dict[str, float] = churn["created"]
    stream = [seen["stream"][n] - t for n, t in created.items() if n in seen["stream"]]
    watch = [seen["watch"][n] - t for n, t in created.items() if n in seen["watch"]]
    return StreamResult(stream=stream, watch=watch,
                        missing=sum(n not in seen["stream"] for n in created),
                        idle_share=idle, churn_share=busy, rss=rss, counts=seen["counts"],
                        errors=seen["errors"])


def run(*, quick: bool, workdir: Path) -> int:
    sizes = QUICK if quick else FULL
    with standins_stack(workdir) as stack:
        result = _measure(stack, workdir, sizes)
    pods = sizes.nodes * sizes.pods_per_node
    if not result.stream or not result.watch:
        print(f"error: no pushes measured ({result.missing} replacements never arrived)")
        return 1
    print_table(
        f"Node streams: pod event -> its entry at the agent ({sizes.nodes} streams, "
        f"{pods:,} pods, churn {sizes.churn_rate:.0f} pods/s)",
        "the ADDED event on a direct pod watch in the same client process",
        [
            Figure("push latency p50", statistics.median(result.stream),
                   statistics.median(result.watch), "s", False),
            Figure("push latency p99", _quantile(result.stream, 0.99),
                   _quantile(result.watch, 0.99), "s", False),
        ],
    )
    per_stream = result.idle_share / sizes.nodes
    per_churn = max(0.0, result.churn_share - result.idle_share) / sizes.churn_rate
    # 5,000 nodes of 30 pods, churn 10x ours (500 pods/s), over 3 servers: each server
    # ingests the whole cluster's churn (every server watches every pod) and serves a
    # third of the streams; a stream's cost here includes its share of the pods' pushes.
    streams, rate = 5000 / 3, 500.0
    estimate = per_stream * streams + per_churn * rate
    print_values("Node streams: the server", [
        ("server CPU, idle (heartbeats)", f"{result.idle_share:.1%} of a core"),
        ("server CPU, during the churn", f"{result.churn_share:.1%} of a core"),
        ("server RSS", fmt_bytes(result.rss)),
        ("entries / removals received", f"{result.counts['entry']:,} / "
                                        f"{result.counts['removed_ip']:,}"),
        ("replacements never pushed", f"{result.missing}"),
    ])
    print(f"extrapolation: 5,000 nodes x 30 pods over 3 servers ({streams:,.0f} streams "
          f"each), churn {rate:.0f} pods/s: about {estimate:.0%} of a core per server "
          f"(linear, an upper bound: {per_stream:.3%} per stream, all idle work counted, "
          f"{per_churn * 100:.3f}% per pod/s of churn); memory: the pod cache's for "
          "150,000 pods plus a view per stream",
          flush=True)
    if result.errors:
        print(f"error: streams failed: {result.errors}")
        return 1
    return 0 if result.missing == 0 else 1
