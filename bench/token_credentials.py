"""Token credentials: ``wrk`` against the agent's container credentials endpoint (#10),
cached, beside the metadata path and a bare server, in one run.

The real stack on loopback: the Kubernetes emulator, the STS stand-in, ``kiam server``
and ``kiam agent --token-credentials`` (the endpoint on 127.0.0.1, no interface) with
``--node-name``. One pod, at wrk's source address 127.0.0.1 so the metadata path knows it
too, with a token bound to it. Measured, each with Debian's ``wrk`` (one thread,
keep-alive) at concurrency 1, 16 and 64:

- ``token``: ``GET /v1/credentials`` with the token in ``Authorization``; after the first
  answer every one comes from the agent's token cache (the bench checks that the agent
  made exactly one token RPC);
- ``imds``: the credentials route of the metadata port, from the node replica;
- ``bare``: ``bench/bare_server.py`` serving the token answer's very bytes from memory.

Every answer must be a 200. The generator is not the bottleneck when it uses well under a
core: its CPU share is printed with the figures.
"""

from __future__ import annotations

import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from bench import BenchError
from bench.agent import UNTHROTTLED
from bench.replica import FULL, QUICK, start_bare_server, wrk
from bench.report import Figure, print_table, print_values
from kiam_testbed.commands import ACCOUNT
from kiam_testbed.stack import Stack, free_port, loopback_placement

NAMESPACE = "bench"
POD = "bench-pod"
ROLE = "bench-role"
IMDS_PATH = "/latest/meta-data/iam/security-credentials/" + ROLE
TOKEN_PATH = "/v1/credentials"
LISTENING = r"token credentials endpoint listening on (\S+)"
_RPCS = re.compile(
    r'^grpc_client_started_total\{grpc_method="GetTokenCredentials",'
    r'grpc_service="kiam.KiamTokenService",grpc_type="unary"\} (\S+)$',
    re.MULTILINE,
)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _setup(stack: Stack, metrics: str) -> tuple[str, str]:
    """The stack, the pod and its token; (token endpoint URL, token)."""
    stack.start_standins()
    stack.make_certs()
    stack.create_namespace(NAMESPACE, permitted=f"arn:aws:iam::{ACCOUNT}:role/bench-.*")
    stack.kube.create_service_account(NAMESPACE)
    stack.create_pod(NAMESPACE, POD, ip="127.0.0.1", role=ROLE, node_name="bench-node")
    token = str(stack.kube.request_token(NAMESPACE, POD))
    stack.start_server()
    agent = stack.start_agent(extra=[
        "--node-name", "bench-node", "--prometheus-listen-addr", metrics, *UNTHROTTLED,
        "--token-credentials", "--token-credentials-listen", "127.0.0.1:0",
        "--token-credentials-interface", "",
    ])
    stack.wait_agent_ready()
    agent.wait_for("node replica serving")
    return f"http://{agent.wait_for(LISTENING)[1]}", token


def _token_rpcs(metrics: str) -> float:
    status, body = _get(f"http://{metrics}/metrics")
    found = _RPCS.search(body.decode())
    if status != 200 or found is None:
        raise BenchError("the agent's metrics have no token RPC count")
    return float(found[1])


def run(*, quick: bool, workdir: Path) -> int:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (make syspkgs installs it as root)")
    sizes = QUICK if quick else FULL
    metrics = f"127.0.0.1:{free_port()}"
    stack = Stack(workdir / "stack", loopback_placement())
    figures: list[Figure] = []
    shares: list[tuple[str, str]] = []
    try:
        token_url, token = _setup(stack, metrics)
        status, body = _get(token_url + TOKEN_PATH, {"Authorization": token})
        if status != 200:
            raise BenchError(f"the token endpoint answered {status}: {body[:300]!r}")
        status, imds = _get(stack.agent_url + IMDS_PATH)
        if status != 200:
            raise BenchError(f"the metadata path answered {status}: {imds[:300]!r}")
        bare_url = start_bare_server(stack, body, role=ROLE)
        targets = {
            "token": (token_url + TOKEN_PATH, (f"Authorization: {token}",)),
            "imds": (stack.agent_url + IMDS_PATH, ()),
            "bare": (bare_url + TOKEN_PATH, ()),
        }
        for c in sizes.concurrency:
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
            for i in range(sizes.rounds):
                order = list(targets) if i % 2 == 0 else list(targets)[::-1]
                for name in order:
                    url, headers = targets[name]
                    result = wrk(url, concurrency=c, seconds=sizes.seconds, headers=headers)
                    if result["non2xx"] or result["socket_errors"]:
                        raise BenchError(f"{name} c={c}: failed answers: {result}")
                    runs[name].append(result)
            figures += _figures(c, "token vs bare", runs["token"], runs["bare"])
            figures += _figures(c, "token vs imds", runs["token"], runs["imds"])
            for name in targets:
                share = max(r["cpu"] for r in runs[name])
                shares.append((f"wrk CPU, {name} c={c}", f"{share:.0%} of a core"))
        rpcs = _token_rpcs(metrics)
        if rpcs != 1:
            raise BenchError(f"{rpcs:.0f} token RPCs: the answers did not come from the cache")
    finally:
        stack.close()
    print_table("Token credentials: wrk -> the agent's container credentials endpoint, cached",
                "bare aiohttp server, same bytes; and the agent's metadata path (replica)",
                figures)
    print_values("Token credentials: the generator (well under a core: not the bottleneck)",
                 [*shares, ("token RPCs made by the agent", f"{rpcs:.0f}")])
    return 0


def _figures(c: int, what: str, kiam: list[dict[str, float]], base: list[dict[str, float]]
             ) -> list[Figure]:
    def fig(label: str, key: str, unit: str, high: bool) -> Figure:
        pick = max if high else min
        return Figure(f"{what} c={c}: {label}", pick(r[key] for r in kiam),
                      pick(r[key] for r in base), unit, high)

    return [fig("requests/s", "rps", "/s", True), fig("p99", "p99", "s", False)]
