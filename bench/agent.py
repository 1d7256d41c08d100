"""Agent: credentials requests per second and p50/p99 latency at fixed concurrency, cache
warm, through the whole path: load generator (its own process; several 127.0.0.x source
addresses = several pods) -> real ``kiam agent`` -> real ``kiam server`` (mTLS) -> the
emulator and the STS stand-in (in the stand-ins process). Baseline: ``bench/bare_server.py``
serving the same bytes from memory under the same load generator. The role-list route
(``.../security-credentials/``) is measured the same way.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import ROOT, BenchError
from bench.report import Figure, print_table
from bench.standins import standins_stack
from kiam_testbed.commands import isolated_env

NAMESPACE = "bench"
ROLE = "bench-role"
CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/"
POD_IPS = [f"127.0.0.{i}" for i in range(2, 10)]
"""Eight "pods": the agent knows a caller by its source address."""


UNTHROTTLED = ("--pod-rate", "1000000", "--pod-burst", "1000000")


@dataclass(frozen=True, kw_only=True)
class AgentSizes:
    concurrency: tuple[int, ...]
    requests: int
    rounds: int


FULL = AgentSizes(concurrency=(16, 64), requests=5000, rounds=3)
QUICK = AgentSizes(concurrency=(16,), requests=200, rounds=1)


def loadgen(url: str, *, concurrency: int, requests: int) -> dict[str, float]:
    """Run ``bench.loadgen`` against ``url`` from every pod address; its JSON result."""
    command = [sys.executable, "-m", "bench.loadgen", url, "--concurrency", str(concurrency),
               "--requests", str(requests)]
    for address in POD_IPS:
        command += ["--local-addr", address]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                          cwd=ROOT, env=isolated_env())
    if done.returncode != 0:
        raise BenchError(f"loadgen failed: {done.stderr[-2000:]}")
    result: dict[str, float] = orjson.loads(done.stdout)
    failed = result["errors"] + result["refused"]
    if failed:
        raise BenchError(f"{url}: {failed:.0f} of {requests} requests failed")
    return result


def fetch(url_host: str, port: int, path: str, *, source: str) -> tuple[int, bytes]:
    """One GET from ``source`` (a pod address), with the standard library."""
    conn = http.client.HTTPConnection(url_host, port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _figures(label: str, c: int, kiam: list[dict[str, float]],
             base: list[dict[str, float]]) -> list[Figure]:
    def best(runs: list[dict[str, float]], key: str, *, high: bool) -> float:
        values = [r[key] for r in runs]
        return max(values) if high else min(values)

    def fig(what: str, key: str, unit: str, high: bool) -> Figure:
        return Figure(f"{label} c={c}: {what}", best(kiam, key, high=high),
                      best(base, key, high=high), unit, high)

    return [fig("requests/s", "rps", "/s", True), fig("p50", "p50", "s", False),
            fig("p99", "p99", "s", False)]


def run(*, quick: bool, workdir: Path) -> int:
    sizes = QUICK if quick else FULL
    figures: list[Figure] = []
    with standins_stack(workdir) as stack:
        stack.create_namespace(NAMESPACE, permitted=".*")
        stack.remote("bench").pods(namespace=NAMESPACE, count=len(POD_IPS), ips=POD_IPS, role=ROLE)
        stack.start_server()
        # each of the eight pods asks far above --pod-rate here: raised, so the figure is
        # the agent's throughput; the per-pod bookkeeping still runs on every request
        stack.start_agent(extra=UNTHROTTLED)
        stack.wait_agent_ready()
        agent_port = stack.placement.agent_port
        status, body = fetch("127.0.0.1", agent_port, CREDENTIALS_PATH + ROLE, source=POD_IPS[0])
        if status != 200:
            raise BenchError(f"agent answered {status} for the credentials: {body[:200]!r}")
        doc: dict[str, Any] = orjson.loads(body)
        if doc.get("Code") != "Success":
            raise BenchError(f"unexpected credentials document: {sorted(doc)}")
        # serve the very bytes kiam sends, so both sides move the same payload
        (workdir / "body.json").write_bytes(body)
        command = [sys.executable, "-m", "bench.bare_server", "--body-file",
                   str(workdir / "body.json"), "--role", ROLE]
        bare = stack.spawn("bare-server", command, env=isolated_env(), cwd=ROOT)
        bare_url = bare.wait_for(r"^(http://\S+)$")[1]
        routes = (("credentials", CREDENTIALS_PATH + ROLE), ("role list", CREDENTIALS_PATH))
        for label, path in routes:
            for c in sizes.concurrency:
                kiam_runs: list[dict[str, float]] = []
                base_runs: list[dict[str, float]] = []
                for i in range(sizes.rounds):
                    targets = [(kiam_runs, stack.agent_url), (base_runs, bare_url)]
                    for runs, url in targets if i % 2 == 0 else targets[::-1]:
                        runs.append(loadgen(url + path, concurrency=c, requests=sizes.requests))
                figures += _figures(label, c, kiam_runs, base_runs)
    print_table("Agent: loadgen -> kiam agent -> kiam server (mTLS), cache warm",
                "bare aiohttp server, same bytes from memory", figures)
    return 0
