"""Fairness between pods through the real agent process (kiam/agent/fairness.py): a pod
flooding the agent gets 429 with Retry-After while its neighbour is answered, every
time; the kubelet's probes are never limited."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from kiam.certs import CertPaths
from kiam_testbed.node_stream_server import ScriptedNodeServer
from kiam_testbed.stack import free_port
from tests.agent.standins import AgentProcess

CREDS = "/latest/meta-data/iam/security-credentials/"
FLOODER = "127.0.1.40"
NEIGHBOUR = "127.0.1.41"
SLOW_POD = "127.0.0.10"  # the fake server takes 0.3 s to answer it
FLOOD = 64  # requests in flight


def pod_session(ip: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0), limit=0))


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def default_agent(
    certs: CertPaths,
    fake_kiam: ScriptedNodeServer,
    metrics_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AgentProcess]:
    """The default limits: the flag defaults are what is tested."""
    process = AgentProcess.start(
        ["--server-address", fake_kiam.address,
         "--prometheus-listen-addr", f"127.0.0.1:{metrics_port}"],
        certs=certs,
        workdir=tmp_path_factory.mktemp("agent"),
    )
    yield process
    process.stop()


async def throttled_total(port: int, limit: str) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    prefix = f'kiam_metadata_throttled_total{{limit="{limit}"}} '
    return next(
        (float(line.removeprefix(prefix)) for line in text.splitlines()
         if line.startswith(prefix)),
        0.0,
    )


def check_refusal(status: int, headers: dict[str, str], body: str) -> None:
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert body.startswith("too many requests ") and body.count("\n") == 1, body


async def test_a_flooding_pod_gets_429_while_its_neighbour_is_answered(
    default_agent: AgentProcess, metrics_port: int
) -> None:
    url = default_agent.url() + CREDS + "role-40"
    statuses: Counter[int] = Counter()
    done = asyncio.Event()

    async def flood(session: aiohttp.ClientSession) -> None:
        # until the agent has refused a good many, or a generous cap
        while not done.is_set() and sum(statuses.values()) < 5000:
            async with session.get(url) as resp:
                statuses[resp.status] += 1
                body = await resp.text()
                if resp.status != 200:
                    check_refusal(resp.status, dict(resp.headers), body)
            if statuses[429] >= 500:
                done.set()

    neighbour_answers: list[tuple[int, str]] = []

    async def neighbour(session: aiohttp.ClientSession) -> None:
        while not done.is_set() or not neighbour_answers:
            async with session.get(default_agent.url() + CREDS + "role-41") as resp:
                neighbour_answers.append((resp.status, await resp.text()))
            await asyncio.sleep(0.02)  # busy but well-behaved: under 50 a second

    async with pod_session(FLOODER) as flooder, pod_session(NEIGHBOUR) as calm:
        workers = [asyncio.create_task(flood(flooder)) for _ in range(FLOOD)]
        calm_task = asyncio.create_task(neighbour(calm))
        await asyncio.gather(*workers)
        done.set()
        await calm_task
        # the kubelet's probes from the flooding pod are answered all the same
        for path in ("/ping", "/health"):
            async with flooder.get(default_agent.url() + path) as resp:
                assert resp.status == 200, path

    assert statuses[429] > 0, statuses
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[200] > 0, statuses
    assert neighbour_answers
    for status, body in neighbour_answers:
        assert status == 200, body
        assert orjson.loads(body)["AccessKeyId"] == "ASIAROLE41"
    # 64 in flight meets both limits
    refused = [await throttled_total(metrics_port, limit) for limit in ("in_flight", "rate")]
    assert sum(refused) == statuses[429], refused
    # one warning for the flooder, none for the neighbour
    log = default_agent.child.log()
    warnings = [line for line in log.splitlines() if "over its limit" in line]
    assert len(warnings) == 1 and FLOODER in warnings[0], warnings
    assert "Traceback" not in log


async def test_a_pod_with_too_many_requests_in_flight_gets_429(
    default_agent: AgentProcess, metrics_port: int
) -> None:
    url = default_agent.url() + CREDS + "draining"
    before = await throttled_total(metrics_port, "in_flight")

    async def one(session: aiohttp.ClientSession) -> int:
        async with session.get(url) as resp:
            body = await resp.text()
            if resp.status != 200:
                check_refusal(resp.status, dict(resp.headers), body)
            return resp.status

    async with pod_session(SLOW_POD) as session:
        statuses = Counter(await asyncio.gather(*(one(session) for _ in range(FLOOD))))
    # 504: an admitted request that waited past the budget behind the fake's 16 workers
    assert statuses[429] > 0 and statuses[200] > 0, statuses
    assert set(statuses) <= {200, 429, 504}, statuses
    assert await throttled_total(metrics_port, "in_flight") - before == statuses[429]


async def test_probes_are_outside_the_limit_set_per_peer_address(
    certs: CertPaths, fake_kiam: ScriptedNodeServer, tmp_path: Path
) -> None:
    agent = AgentProcess.start(
        ["--server-address", fake_kiam.address, "--pod-rate", "1", "--pod-burst", "2",
         "--allow-ip-query"],
        certs=certs,
        workdir=tmp_path,
    )
    try:
        async with pod_session("127.0.1.42") as session:
            statuses = []
            for _ in range(4):
                async with session.get(agent.url() + CREDS) as resp:
                    statuses.append(resp.status)
                    if resp.status == 429:
                        check_refusal(resp.status, dict(resp.headers), await resp.text())
            assert statuses[:2] == [200, 200] and 429 in statuses[2:], statuses
            # the limit is the TCP peer's, whatever ?ip= claims (each a new address here)
            claimed = []
            for last in range(90, 94):
                async with session.get(agent.url() + CREDS + f"?ip=127.0.1.{last}") as resp:
                    claimed.append(resp.status)
            assert 429 in claimed, claimed
            for _ in range(5):
                for path in ("/ping", "/health"):
                    async with session.get(agent.url() + path) as resp:
                        assert resp.status == 200, path
    finally:
        assert agent.stop() == 0
