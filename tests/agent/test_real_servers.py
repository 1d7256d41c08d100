"""The real ``kiam agent`` in front of two real ``kiam server`` processes.

Everything is a console command with ``kiam certs`` certificates over mTLS: the
Kubernetes emulator and STS stand-in (``kiam_testbed.stack``), two servers, and the
agent given both servers as a comma-separated list. Pods are loopback source addresses.

Statuses produced here from real servers: 200, 401 (forged token), 403 (another role; the
namespace forbids the role), 404 (no pod; no role), 409 (two pods claim the IP), 500 (STS
refuses, through the stand-in's fault queue), 503 (the only server killed, and
``/health?deep=1`` failing with it). 400/405 are the agent's own (test_http.py); 502 and
504 need a server misbehaving in ways a real one does not on demand, so they come from
the scripted server in test_http.py.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from kiam.agent.imdsv2 import TOKEN_HEADER, TTL_HEADER
from kiam.certs import CertPaths
from kiam_testbed.child import Child
from kiam_testbed.commands import ROLE_BASE_ARN
from kiam_testbed.stack import Placement, Stack, free_port
from tests.agent.standins import AgentProcess

CREDS = "/latest/meta-data/iam/security-credentials/"
NAMESPACE = "team"
PODS = {f"127.0.3.{i}": f"role-{i}" for i in range(2, 8)}
FORBIDDEN_POD = "127.0.3.20"
PLAIN_POD = "127.0.3.21"
STS_DENIED_POD, STS_DENIED_ROLE = "127.0.3.22", "role-90"
TWIN_IP = "127.0.3.23"


@dataclass
class Cluster:
    stacks: list[Stack]
    servers: list[Child]
    agent: AgentProcess
    replica: bool


@pytest.fixture(scope="module", params=["rpc", "replica"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Every test runs twice: the agent asking the RPCs, and the agent answering from its
    node replica (``--node-name node-1``, the node of every pod here), so each status and
    body below is shown for both paths (docs/architecture.md, "The node replica")."""
    replica = request.param == "replica"
    base = tmp_path_factory.mktemp("real")
    first = Stack(workdir=base / "one", placement=Placement(server_port=free_port()))
    stacks = [first]
    try:
        first.start_standins()
        first.make_certs()
        first.create_namespace(NAMESPACE, permitted=r"arn:aws:iam::123456789012:role/role-\d+")
        for ip, role in PODS.items():
            first.create_pod(NAMESPACE, f"pod-{ip.rsplit('.', 1)[1]}", ip=ip, role=role)
        first.create_pod(NAMESPACE, "forbidden", ip=FORBIDDEN_POD, role="admin")
        first.create_pod(NAMESPACE, "plain", ip=PLAIN_POD)
        first.create_pod(NAMESPACE, "sts-denied", ip=STS_DENIED_POD, role=STS_DENIED_ROLE)
        # two live pods with different roles claim one IP
        first.create_pod(NAMESPACE, "twin-a", ip=TWIN_IP, role="role-2")
        first.create_pod(NAMESPACE, "twin-b", ip=TWIN_IP, role="role-3")
        # STS refuses this role every time (queued before the servers prefetch it)
        first.sts.queue_fault("access-denied", count=10_000, role_arn=ROLE_BASE_ARN + "role-90")
        second = first.sibling(base / "two", Placement(server_port=free_port()))
        stacks.append(second)
        servers = [first.start_server(), second.start_server()]
        addresses = ",".join(f"127.0.0.1:{s.placement.server_port}" for s in stacks)
        agent = AgentProcess.start(
            ["--server-address", addresses, "--gateway-timeout-creation", "20s",
             *(["--node-name", "node-1"] if replica else [])],
            certs=CertPaths(directory=first.certs),
            workdir=base,
        )
        try:
            if replica:
                agent.child.wait_for("node replica serving")
            yield Cluster(stacks, servers, agent, replica)
        finally:
            agent.stop()
    finally:
        for stack in reversed(stacks):
            stack.close()


async def fetch(session: aiohttp.ClientSession, agent: AgentProcess, path: str) -> tuple[int, str]:
    async with session.get(agent.url() + path) as resp:
        return resp.status, await resp.text()


def pod_session(ip: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0)))


async def wait_healthy(agent: AgentProcess) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if (await fetch(session, agent, "/health?deep=1"))[0] == 200:
                # deep health needs one synced server; wait for the pods to be seen too
                async with pod_session(PLAIN_POD) as pod:
                    if (await fetch(pod, agent, CREDS))[0] == 404:
                        return
            await asyncio.sleep(0.1)
    pytest.fail(f"agent never became healthy:\n{agent.child.log()}")


async def warm_up(agent: AgentProcess) -> None:
    """Until every pod's credentials came from both servers a few times in a row.

    The SLO is for cached credentials; a cold STS stand-in on a busy machine may
    take longer than the agent's budget, which is not what the load test is about.
    """
    for ip, role in PODS.items():
        async with pod_session(ip) as pod:
            streak = 0
            for _ in range(300):
                status, _ = await fetch(pod, agent, CREDS + role)
                streak = streak + 1 if status == 200 else 0
                if streak == 4:
                    break
                if status != 200:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail(f"credentials for {ip} never came back:\n{agent.child.log()}")


async def test_statuses_from_a_real_server(cluster: Cluster) -> None:
    await wait_healthy(cluster.agent)
    await warm_up(cluster.agent)
    async with pod_session("127.0.3.2") as pod:
        assert await fetch(pod, cluster.agent, CREDS) == (200, "role-2")
        status, text = await fetch(pod, cluster.agent, CREDS + "role-2")
        assert status == 200, text
        document = orjson.loads(text)
        assert document["Code"] == "Success"
        assert document["AccessKeyId"]
        assert document["Expiration"].endswith("Z")
        # the credential line names the access key id, never the secret or the token
        log = cluster.agent.child.log()
        assert document["AccessKeyId"] in log
        assert document["SecretAccessKey"] not in log
        assert document["Token"] not in log
        status, text = await fetch(pod, cluster.agent, CREDS + "role-3")
        assert status == 403, text
        # the server's reason travels beside Go's fixed message, and reaches the pod
        assert "annotated with role arn:aws:iam::123456789012:role/role-2, not role-3" in text
    async with pod_session(PLAIN_POD) as pod:
        assert (await fetch(pod, cluster.agent, CREDS))[0] == 404
    async with pod_session(FORBIDDEN_POD) as pod:
        assert (await fetch(pod, cluster.agent, CREDS))[0] == 200
        status, text = await fetch(pod, cluster.agent, CREDS + "admin")
        assert status == 403, text
        assert "does not permit role arn:aws:iam::123456789012:role/admin" in text
    async with pod_session("127.0.3.99") as pod:
        status, text = await fetch(pod, cluster.agent, CREDS)
        assert status == 404, text


async def test_imdsv2_flow_through_a_real_server(cluster: Cluster) -> None:
    await wait_healthy(cluster.agent)
    async with pod_session("127.0.3.4") as pod:
        async with pod.put(
            cluster.agent.url() + "/latest/api/token", headers={TTL_HEADER: "21600"}
        ) as resp:
            assert resp.status == 200
            value = await resp.text()
        with_token = {TOKEN_HEADER: value}
        async with pod.get(cluster.agent.url() + CREDS, headers=with_token) as resp:
            assert (resp.status, await resp.text()) == (200, "role-4")
        for _ in range(300):  # the first STS call of a cold stand-in may miss the budget
            async with pod.get(cluster.agent.url() + CREDS + "role-4", headers=with_token) as resp:
                status, text = resp.status, await resp.text()
            if status != 504:
                break
            await asyncio.sleep(0.1)
        assert status == 200, text
        assert orjson.loads(text)["Code"] == "Success"
        forged = {TOKEN_HEADER: value + "x"}
        async with pod.get(cluster.agent.url() + CREDS, headers=forged) as resp:
            assert resp.status == 401


async def test_conflict_and_sts_failure_from_a_real_server(cluster: Cluster) -> None:
    await wait_healthy(cluster.agent)
    async with pod_session(TWIN_IP) as pod:
        status, text = await fetch(pod, cluster.agent, CREDS)
        assert (status, text.count("\n")) == (409, 1), text
        assert "several pods with different roles" in text
        status, text = await fetch(pod, cluster.agent, CREDS + "role-2")
        assert status == 409, text
    async with pod_session(STS_DENIED_POD) as pod:
        assert await fetch(pod, cluster.agent, CREDS) == (200, STS_DENIED_ROLE)
        status, text = await fetch(pod, cluster.agent, CREDS + STS_DENIED_ROLE)
        assert (status, text.count("\n")) == (500, 1), text
        assert "could not get credentials" in text
        assert "AccessDenied" in text


REUSED_IP = "127.0.3.30"


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    path: str
    status: int
    text: str


async def test_a_reused_ip_never_serves_the_other_pods_role(cluster: Cluster) -> None:
    """docs/architecture.md, "IP reuse": pod A (role-4) is deleted and, while it is still
    in its grace period, its IP given to pod B (role-5). A client polling the IP through
    the agent never gets role-5 before A is gone, and never role-4 once it got role-5."""
    await wait_healthy(cluster.agent)
    stack = cluster.stacks[0]
    stack.create_pod(NAMESPACE, "reuse-a", ip=REUSED_IP, role="role-4")
    answers: list[Answer] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def poll() -> None:
        async with pod_session(REUSED_IP) as pod:
            while not stop.is_set():
                for path in (CREDS, CREDS + "role-4", CREDS + "role-5"):
                    started = loop.time()
                    status, text = await fetch(pod, cluster.agent, path)
                    answers.append(Answer(started, loop.time(), path, status, text))

    async def until(predicate: Callable[[Answer], bool], what: str) -> float:
        for _ in range(600):
            if any(predicate(answer) for answer in answers):
                return loop.time()
            await asyncio.sleep(0.01)
        pytest.fail(f"never saw {what}: {answers[-5:]}\n{cluster.agent.child.log()}")

    poller = asyncio.create_task(poll())
    try:
        await until(lambda a: a.path == CREDS + "role-4" and a.status == 200,
                    "role-4's credentials")
        # A terminates (its grace period runs), and B is given the IP meanwhile
        await asyncio.to_thread(stack.kube.delete_pod, NAMESPACE, "reuse-a", grace_period=30)
        await asyncio.to_thread(stack.create_pod, NAMESPACE, "reuse-b", ip=REUSED_IP,
                                role="role-5")
        await until(lambda a: a.status == 409, "the ambiguous IP")
        await asyncio.sleep(0.3)
        gone_from = loop.time()
        await asyncio.to_thread(stack.kube.delete_pod, NAMESPACE, "reuse-a", grace_period=0)
        gone = loop.time()
        first_b = await until(lambda a: a.path == CREDS and a.text == "role-5", "role-5")
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await poller
    early = [a for a in answers if "role-5" in (a.text if a.path == CREDS else a.path)
             and a.status == 200 and a.ended < gone_from]
    assert early == [], early[:3]
    b_seen = min(a.ended for a in answers if a.path == CREDS and a.text == "role-5")
    late = [a for a in answers if a.started > b_seen and a.status == 200
            and (a.text == "role-4" or a.path == CREDS + "role-4")]
    assert late == [], late[:3]
    # and B's credentials came: after A was gone, within a second
    served_b = [a for a in answers if a.path == CREDS + "role-5" and a.status == 200]
    assert served_b and served_b[0].ended < gone + 1.5, (served_b[:1], gone, first_b)
    await asyncio.to_thread(stack.kube.delete_pod, NAMESPACE, "reuse-b", grace_period=0)


async def test_a_dead_server_is_503_and_fails_deep_health(cluster: Cluster, tmp_path: Path) -> None:
    lone = cluster.stacks[0].sibling(tmp_path / "lone", Placement(server_port=free_port()))
    try:
        server = lone.start_server()
        agent = AgentProcess.start(
            [
                "--server-address",
                f"127.0.0.1:{lone.placement.server_port}",
                "--gateway-timeout-creation",
                "20s",
                *(["--node-name", "node-1"] if cluster.replica else []),
            ],
            certs=CertPaths(directory=lone.certs),
            workdir=tmp_path,
        )
        try:
            await wait_healthy(agent)
            if cluster.replica:
                await asyncio.to_thread(agent.child.wait_for, "node replica serving")
                async with pod_session("127.0.3.2") as pod:  # answered from memory
                    assert await fetch(pod, agent, CREDS) == (200, "role-2")
            server.signal(signal.SIGKILL)
            await asyncio.to_thread(server.popen.wait)
            if cluster.replica:
                # the replica may answer until its stream is known dead: at most three
                # heartbeat intervals (1 s each) after the last message
                killed = asyncio.get_running_loop().time()
                async with pod_session("127.0.3.2") as pod:
                    while (await fetch(pod, agent, CREDS))[0] == 200:
                        assert asyncio.get_running_loop().time() - killed < 3.5
                        await asyncio.sleep(0.05)
            async with pod_session("127.0.3.2") as pod:
                status, text = await fetch(pod, agent, CREDS)
                assert (status, text.count("\n")) == (503, 1), text
                assert "no kiam server available" in text
                status, text = await fetch(pod, agent, CREDS + "role-2")
                assert status == 503, text
            async with aiohttp.ClientSession() as session:
                status, text = await fetch(session, agent, "/health?deep=1")
                assert (status, text.count("\n")) == (503, 1), text
                assert "GetHealth" in text
                # the agent itself is fine: plain /health and /ping still answer
                assert (await fetch(session, agent, "/health"))[0] == 200
                assert await fetch(session, agent, "/ping") == (200, "pong")
        finally:
            agent.stop()
    finally:
        lone.close()


async def test_losing_one_of_two_servers_fails_no_request(cluster: Cluster) -> None:
    await wait_healthy(cluster.agent)
    await warm_up(cluster.agent)
    results: list[tuple[str, int, str]] = []
    stop = asyncio.Event()
    progress = asyncio.Event()

    async def worker(ip: str, role: str) -> None:
        async with pod_session(ip) as pod:
            while not stop.is_set():
                for path in (CREDS, CREDS + role):
                    status, text = await fetch(pod, cluster.agent, path)
                    results.append((ip, status, text))
                    progress.set()

    async def wait_for(count: int) -> None:
        while len(results) < count:
            progress.clear()
            await progress.wait()

    workers = [asyncio.create_task(worker(ip, role)) for ip, role in PODS.items()]
    try:
        await asyncio.wait_for(wait_for(60), timeout=30)
        victim = cluster.servers[0].popen
        victim.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait)
        killed_at = len(results)
        await asyncio.wait_for(wait_for(killed_at + 200), timeout=60)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
    failures = [r for r in results if r[1] != 200]
    assert not failures, failures[:5]
    assert len(results) > killed_at
    # requests did go to the killed server and were retried on the other one
    if cluster.replica:
        # the replica's stream moved to the other server, which served it again
        log = cluster.agent.child.log()
        assert log.count("node replica serving") >= 2, log[-2000:]
    else:
        victim_address = f"127.0.0.1:{cluster.stacks[0].placement.server_port}"
        assert f"on {victim_address} failed: UNAVAILABLE" in cluster.agent.child.log()
