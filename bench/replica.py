"""Replica: the agent answering credentials from its node replica (#11), under ``wrk``.

The agent follows ``WatchNode`` on the test bed's scripted stream server
(:mod:`kiam_testbed.node_stream_server`) in this process (one entry
for the load generator's address, credentials valid for hours, a heartbeat a second)
and is loaded by ``wrk`` (Debian's, one thread, keep-alive connections) at concurrency
1, 16 and 64; so every answer comes from memory, and the bench checks that no RPC
reached the scripted server and every answer was a 200. Baseline: ``bench/bare_server.py``
serving the agent's very bytes under the same ``wrk``.

The generator is not the bottleneck when it uses well under one core while the server
it loads uses one: the ``wrk`` CPU share of each run is printed with the figures.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import ROOT, BenchError
from bench.agent import UNTHROTTLED, fetch
from bench.report import Figure, print_table, print_values
from kiam.certs import CertPaths, generate_certificates
from kiam.wire import kiam_pb2
from kiam.wire.credentials import format_timestamp
from kiam_testbed.commands import isolated_env
from kiam_testbed.node_stream_server import ScriptedNodeServer
from kiam_testbed.stack import Placement, Stack, free_port

ROLE = "bench-role"
PATH = "/latest/meta-data/iam/security-credentials/" + ROLE
CALLER = "127.0.0.1"
"""wrk's source address: the one "pod" of the replica."""


@dataclass(frozen=True, kw_only=True)
class Sizes:
    concurrency: tuple[int, ...]
    seconds: int
    rounds: int


FULL = Sizes(concurrency=(1, 16, 64), seconds=5, rounds=2)
QUICK = Sizes(concurrency=(16,), seconds=1, rounds=1)


def _entry() -> kiam_pb2.NodeEntry:
    """The one pod, with credentials valid for hours: every answer comes from memory."""
    now = datetime.now(UTC)
    entry = kiam_pb2.NodeEntry(
        ip=CALLER, pod_namespace="bench", pod_name="bench-pod", pod_uid="u", role=ROLE
    )
    entry.credentials.CopyFrom(kiam_pb2.Credentials(
        code="Success", type="AWS-HMAC", access_key_id="ASIABENCHREPLICA0001",
        secret_access_key="x" * 40, token="t" * 600,
        expiration=format_timestamp(now + timedelta(hours=6)),
        last_updated=format_timestamp(now),
    ))
    return entry


def start_bare_server(stack: Stack, body: bytes, *, role: str) -> str:
    """``bench/bare_server.py`` serving ``body`` from memory, a child of ``stack``; its URL."""
    (stack.workdir / "body.json").write_bytes(body)
    bare = stack.spawn("bare-server", [
        sys.executable, "-m", "bench.bare_server", "--body-file",
        str(stack.workdir / "body.json"), "--role", role,
    ], env=isolated_env(), cwd=ROOT)
    url: str = bare.wait_for(r"^(http://\S+)$")[1]
    return url


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise BenchError(f"wrk printed a latency I cannot read: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def wrk(url: str, *, concurrency: int, seconds: int, headers: Sequence[str] = ()
        ) -> dict[str, float]:
    """One ``wrk`` run: requests/s, p50, p99, non-2xx answers and wrk's CPU share;
    ``headers`` are ``Name: value`` lines sent with every request."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency"]
    command += [arg for header in headers for arg in ("-H", header)]
    command.append(url)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchError(f"wrk failed: {done.stderr[-2000:]}")
    out = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and p50 and p99):
        raise BenchError(f"cannot read wrk's output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "rps": float(rps[1]), "p50": _seconds(p50[1]), "p99": _seconds(p99[1]),
        "non2xx": float(bad[1]) if bad else 0.0, "socket_errors": 1.0 if errors else 0.0,
        "cpu": cpu / elapsed,
    }


def run(*, quick: bool, workdir: Path) -> int:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (make syspkgs installs it as root)")
    sizes = QUICK if quick else FULL
    certs = workdir / "certs"
    generate_certificates(certs)
    figures: list[Figure] = []
    shares: list[tuple[str, str]] = []
    port = free_port()
    stack = Stack(workdir / "stack", Placement(agent_port=port), certs=certs)
    stream = ScriptedNodeServer(heartbeat_ms=1000).start(CertPaths(directory=certs))
    stream.put(_entry())
    try:
        stack.start_agent(extra=[
            "--server-address", stream.address, "--node-name", "bench-node",
            *UNTHROTTLED,
        ])
        stack.processes["agent"].wait_for("node replica serving")
        status, body = fetch("127.0.0.1", port, PATH, source=CALLER)
        if status != 200 or stream.calls:
            raise BenchError(f"agent answered {status} after RPCs {stream.calls}: "
                             f"{body[:200]!r}")
        bare_url = start_bare_server(stack, body, role=ROLE)
        agent_url = f"http://127.0.0.1:{port}"
        for c in sizes.concurrency:
            runs: dict[str, list[dict[str, float]]] = {"kiam": [], "bare": []}
            for i in range(sizes.rounds):
                order = [("kiam", agent_url), ("bare", bare_url)]
                for name, url in order if i % 2 == 0 else order[::-1]:
                    result = wrk(url + PATH, concurrency=c, seconds=sizes.seconds)
                    if result["non2xx"] or result["socket_errors"]:
                        raise BenchError(f"{name} c={c}: failed answers: {result}")
                    runs[name].append(result)
            figures += _figures(c, runs["kiam"], runs["bare"])
            for name in ("kiam", "bare"):
                share = max(r["cpu"] for r in runs[name])
                shares.append((f"wrk CPU, {name} c={c}", f"{share:.0%} of a core"))
        if stream.calls:
            raise BenchError(f"RPCs reached the server, not from the replica: {stream.calls}")
    finally:
        stack.close()
        stream.stop()
    print_table("Replica: wrk -> kiam agent answering from its node replica",
                "bare aiohttp server, same bytes from memory", figures)
    print_values("Replica: the generator (well under a core: not the bottleneck)", shares)
    return 0


def _figures(c: int, kiam: list[dict[str, float]], base: list[dict[str, float]]) -> list[Figure]:
    def fig(what: str, key: str, unit: str, high: bool) -> Figure:
        pick = max if high else min
        return Figure(f"credentials c={c}: {what}", pick(r[key] for r in kiam),
                      pick(r[key] for r in base), unit, high)

    return [fig("requests/s", "rps", "/s", True), fig("p50", "p50", "s", False),
            fig("p99", "p99", "s", False)]
