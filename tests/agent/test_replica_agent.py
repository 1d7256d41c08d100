"""The real agent answering from its node replica (#11), fed by scripted servers.

Two :class:`ScriptedNodeServer` hold the same tables; the agent follows ``WatchNode``
on one of them and must answer from memory without an RPC reaching either, fall back to
the RPCs in every case the replica cannot answer, and send the same bytes both ways.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import orjson
import pytest

from kiam.certs import CertPaths
from kiam.wire import kiam_pb2, status
from kiam.wire.credentials import format_timestamp
from kiam_testbed.node_stream_server import RPC_KEY, ScriptedNodeServer, refusal
from kiam_testbed.stack import free_port
from tests.agent.standins import AgentProcess, RawResponse, raw_request
from tests.compat.go_server import GoPod, go_shaped_server

NODE = "node-1"
LIST = "/latest/meta-data/iam/security-credentials/"
HEARTBEAT_MS = 200
SERVING = "node replica serving"


def credentials(key: str, *, left: float = 3600.0) -> kiam_pb2.Credentials:
    now = datetime.now(UTC)
    return kiam_pb2.Credentials(
        code="Success",
        type="AWS-HMAC",
        access_key_id=key,
        secret_access_key=f"secret-of-{key}",
        token=f"token-of-{key}",
        expiration=format_timestamp(now + timedelta(seconds=left)),
        last_updated=format_timestamp(now),
    )


def entry(
    ip: str,
    role: str = "app-role",
    *,
    key: str | None = "ASIAREPLICA",
    left: float = 3600.0,
    uid: str = "uid-1",
    **refusals: kiam_pb2.Refusal,
) -> kiam_pb2.NodeEntry:
    message = kiam_pb2.NodeEntry(
        ip=ip, pod_namespace="apps", pod_name=f"pod-{ip}", pod_uid=uid, role=role, **refusals
    )
    if key is not None and "credentials_refusal" not in refusals:
        message.credentials.CopyFrom(credentials(key, left=left))
    return message


class Cluster:
    """The scripted servers, changed together."""

    def __init__(self, servers: list[ScriptedNodeServer]) -> None:
        self.servers = servers

    @property
    def address(self) -> str:
        return ",".join(s.address for s in self.servers)

    def put(self, message: kiam_pb2.NodeEntry, **where: bool) -> None:
        for server in self.servers:
            server.put(message, **where)

    def remove(self, ip: str, **where: bool) -> None:
        for server in self.servers:
            server.remove(ip, **where)

    def rpcs(self, ip: str | None = None, method: str | None = None) -> int:
        return sum(
            1 for s in self.servers for c in s.rpcs(ip) if method in (None, c.method)
        )

    def streaming(self) -> ScriptedNodeServer | None:
        open_ = [s for s in self.servers if s.open_streams]
        return open_[0] if len(open_) == 1 else None


def wait_until(condition: Callable[[], object], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


async def async_wait_until(condition: Callable[[], object], *, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def start_agent(
    cluster_address: str, certs: CertPaths, workdir: Path, *extra: str
) -> tuple[AgentProcess, int]:
    metrics_port = free_port()
    agent = AgentProcess.start(
        [
            "--server-address", cluster_address,
            "--node-name", NODE,
            "--prometheus-listen-addr", f"127.0.0.1:{metrics_port}",
            *extra,
        ],
        certs=certs,
        workdir=workdir,
    )
    return agent, metrics_port


def metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match[1] or "").split(","))) == wanted:
            return float(match[2])
    return 0.0


def comparable(response: RawResponse) -> tuple[int, list[tuple[str, str]], bytes]:
    """Everything on the wire but the Date header."""
    headers = sorted((k, v) for k, v in response.headers.items() if k != "Date")
    return response.status, headers, response.body


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def cluster(certs: CertPaths) -> Iterator[Cluster]:
    servers = [ScriptedNodeServer(heartbeat_ms=HEARTBEAT_MS).start(certs) for _ in range(2)]
    group = Cluster(servers)
    group.put(entry("127.0.0.2"))
    yield group
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def replica_agent(
    cluster: Cluster, certs: CertPaths, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AgentProcess, int]]:
    agent, port = start_agent(cluster.address, certs, tmp_path_factory.mktemp("replica"))
    agent.child.wait_for(SERVING)
    yield agent, port
    agent.stop()


# ------------------------------------------------------------------ from memory


async def test_answers_from_the_replica_without_an_rpc(
    cluster: Cluster, replica_agent: tuple[AgentProcess, int]
) -> None:
    agent, port = replica_agent
    before = cluster.rpcs()
    for _ in range(20):
        role = await raw_request(agent.port, LIST, source="127.0.0.2")
        assert (role.status, role.text) == (200, "app-role")
        creds = await raw_request(agent.port, LIST + "app-role", source="127.0.0.2")
        assert creds.status == 200
        assert creds.headers["Content-Type"] == "application/json"
        document = orjson.loads(creds.body)
        assert document["AccessKeyId"] == "ASIAREPLICA"
        assert list(document) == [
            "Code", "LastUpdated", "Type", "AccessKeyId", "SecretAccessKey", "Token", "Expiration"
        ]
    assert cluster.rpcs() == before, "an RPC reached a server"
    assert metric(port, "kiam_agent_replica_hits_total", handler="credentials") >= 20
    assert metric(port, "kiam_agent_replica_serving") == 1.0
    assert metric(port, "kiam_agent_replica_entries") >= 1.0
    assert cluster.servers[0].watches[0] == NODE


@dataclass(frozen=True)
class Case:
    ip: str
    message: kiam_pb2.NodeEntry
    path: str
    expect: int | str
    """The HTTP status, or the fallback reason."""
    streamed: bool = True


@pytest.mark.parametrize(
    "case",
    [
        Case("127.0.0.20", entry("127.0.0.20"), "app-role", "not_in_replica", streamed=False),
        Case("127.0.0.21", entry("127.0.0.21", key=None), "app-role", "no_credentials"),
        Case("127.0.0.22", entry("127.0.0.22"), "other-role", "role_mismatch"),
        Case("127.0.0.23", entry("127.0.0.23", left=240.0), "app-role", "expiring"),
    ],
    ids=lambda case: str(case.expect),
)
async def test_falls_back_to_the_rpc(
    cluster: Cluster, replica_agent: tuple[AgentProcess, int], case: Case
) -> None:
    agent, port = replica_agent
    ip, message, path, reason = case.ip, case.message, case.path, str(case.expect)
    where = {} if case.streamed else {"stream": False}
    counted = metric(port, "kiam_agent_replica_fallbacks_total", handler="credentials",
                     reason=reason)
    cluster.put(message, **where)
    if case.streamed:
        # the entry has reached the agent once its role list comes from memory
        await _until_role_from_replica(cluster, agent, ip)
    before = cluster.rpcs(ip)
    answer = await raw_request(agent.port, LIST + path, source=ip)
    assert cluster.rpcs(ip) == before + 1, "the request did not reach a server"
    if reason == "role_mismatch":
        assert answer.status == 403
    else:
        assert answer.status == 200
    if reason == "no_credentials":
        assert orjson.loads(answer.body)["AccessKeyId"] == RPC_KEY
    assert metric(port, "kiam_agent_replica_fallbacks_total", handler="credentials",
                  reason=reason) == counted + 1


async def _until_role_from_replica(cluster: Cluster, agent: AgentProcess, ip: str) -> None:
    """Ask the role list until an answer needs no RPC (the entry has arrived)."""
    deadline = time.monotonic() + 10
    while True:
        before = cluster.rpcs(ip)
        await raw_request(agent.port, LIST, source=ip)
        if cluster.rpcs(ip) == before:
            return
        assert time.monotonic() < deadline, f"{ip} never answered from the replica"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------ the same bytes


FORBIDDEN = refusal(status.ROLE_FORBIDDEN, "namespace apps does not permit app-role")
AMBIGUOUS = refusal(status.AMBIGUOUS_POD, "pods apps/a and apps/b with different roles")


def _ambiguous(ip: str) -> kiam_pb2.NodeEntry:
    """Both RPCs refused: GetPodRole and GetPodCredentials, whatever the role."""
    return entry(
        ip, role="", key=None, role_refusal=AMBIGUOUS, credentials_refusal=AMBIGUOUS
    )


@pytest.mark.parametrize(
    "case",
    [
        Case("127.0.0.40", entry("127.0.0.40", credentials_refusal=FORBIDDEN), "app-role", 403),
        Case("127.0.0.41", _ambiguous("127.0.0.41"), "app-role", 409),
        Case("127.0.0.43", _ambiguous("127.0.0.43"), "", 409),
        Case("127.0.0.42", entry("127.0.0.42", role="", key=None), "", 404),
    ],
    ids=["forbidden", "ambiguous-credentials", "ambiguous-role", "no-role"],
)
async def test_refusals_are_the_same_bytes_as_the_rpc_path(
    cluster: Cluster, replica_agent: tuple[AgentProcess, int], case: Case
) -> None:
    agent, _ = replica_agent
    ip, message, path, code = case.ip, case.message, case.path, case.expect
    cluster.put(message)
    await _until_role_from_replica(cluster, agent, ip)
    before = cluster.rpcs(ip)
    from_memory = await raw_request(agent.port, LIST + path, source=ip)
    assert cluster.rpcs(ip) == before, "the refusal did not come from the replica"
    assert from_memory.status == code
    # the stream forgets the IP, the servers do not: the next answer is an RPC's
    cluster.remove(ip, rpc=False)
    deadline = time.monotonic() + 10
    while True:
        before = cluster.rpcs(ip)
        from_rpc = await raw_request(agent.port, LIST + path, source=ip)
        if cluster.rpcs(ip) > before:
            break
        assert time.monotonic() < deadline, "the removal never reached the agent"
    assert comparable(from_memory) == comparable(from_rpc)


# ------------------------------------------------------------------ order


async def test_a_reused_ip_never_answers_the_old_role_after_the_new_entry(
    cluster: Cluster, replica_agent: tuple[AgentProcess, int]
) -> None:
    agent, _ = replica_agent
    ip = "127.0.0.30"
    cluster.put(entry(ip, role="old-role", uid="old"))
    await _until_role_from_replica(cluster, agent, ip)
    seen: list[str] = []
    for round_ in range(3):
        new = f"new-role-{round_}"
        cluster.remove(ip)
        cluster.put(entry(ip, role=new, uid=f"new-{round_}"))
        deadline = time.monotonic() + 10
        while not seen or seen[-1] != new:
            answer = await raw_request(agent.port, LIST, source=ip)
            seen.append(answer.text if answer.status == 200 else f"<{answer.status}>")
            assert time.monotonic() < deadline, f"never answered {new}: {seen[-5:]}"
        # after the new role, never an older one again
        for _ in range(10):
            answer = await raw_request(agent.port, LIST, source=ip)
            assert answer.text == new
        old = "old-role" if round_ == 0 else f"new-role-{round_ - 1}"
        assert old not in seen[seen.index(new):]


# ------------------------------------------------------------------ the audit trail


async def test_the_audit_line_once_per_new_access_key(
    cluster: Cluster, replica_agent: tuple[AgentProcess, int]
) -> None:
    agent, port = replica_agent
    ip = "127.0.0.50"
    cluster.put(entry(ip, key="ASIAFIRSTKEY"))
    await _until_role_from_replica(cluster, agent, ip)
    seen = metric(port, "kiam_agent_credentials_served_total", access_key="seen")
    for _ in range(5):
        assert (await raw_request(agent.port, LIST + "app-role", source=ip)).status == 200
    cluster.put(entry(ip, key="ASIASECONDKEY"))
    deadline = time.monotonic() + 10
    while b"ASIASECONDKEY" not in (await raw_request(agent.port, LIST + "app-role", source=ip)).body:  # noqa: E501
        assert time.monotonic() < deadline
    for _ in range(5):
        assert (await raw_request(agent.port, LIST + "app-role", source=ip)).status == 200
    assert cluster.rpcs(ip, "GetPodCredentials") == 0
    lines = [line for line in agent.child.logs if "served credentials" in line and ip in line]
    assert len(lines) == 2, lines
    assert "ASIAFIRSTKEY" in lines[0] and "ASIASECONDKEY" in lines[1]
    assert f"pod-{ip}" in lines[0]
    assert metric(port, "kiam_agent_credentials_served_total", access_key="seen") >= seen + 8
    log = agent.child.log()
    for secret in ("secret-of-", "token-of-"):
        assert secret not in log


# ------------------------------------------------------------------ the stream's health


async def test_a_broken_stream_is_reopened_on_the_other_server_at_once(
    cluster: Cluster, replica_agent: tuple[AgentProcess, int]
) -> None:
    agent, _ = replica_agent
    await async_wait_until(lambda: cluster.streaming() is not None)
    first = cluster.streaming()
    assert first is not None
    other = next(s for s in cluster.servers if s is not first)
    opened = len(other.watches)
    serving = agent.child.count_logs(SERVING)
    broke = time.monotonic()
    first.break_streams(grpc.StatusCode.UNAVAILABLE)
    await async_wait_until(lambda: agent.child.count_logs(SERVING) > serving)
    assert time.monotonic() - broke < 1.0, "no backoff before the second server"
    assert len(other.watches) == opened + 1
    assert other.open_streams == 1
    before = cluster.rpcs()
    assert (await raw_request(agent.port, LIST, source="127.0.0.2")).text == "app-role"
    assert cluster.rpcs() == before


@pytest.fixture
def lone_server(certs: CertPaths) -> Iterator[ScriptedNodeServer]:
    server = ScriptedNodeServer(heartbeat_ms=HEARTBEAT_MS).start(certs)
    server.put(entry("127.0.0.2"))
    yield server
    server.stop()


async def test_a_silent_stream_stops_answering_after_three_heartbeats(
    lone_server: ScriptedNodeServer, certs: CertPaths, tmp_path: Path
) -> None:
    agent, port = start_agent(lone_server.address, certs, tmp_path)
    try:
        agent.child.wait_for(SERVING)
        before = len(lone_server.rpcs())
        assert (await raw_request(agent.port, LIST, source="127.0.0.2")).text == "app-role"
        assert len(lone_server.rpcs()) == before
        lone_server.hush()
        hushed = time.monotonic()
        # answers move to the RPCs once 3 x 200 ms pass without a message
        while len(lone_server.rpcs()) == before:
            assert (await raw_request(agent.port, LIST, source="127.0.0.2")).text == "app-role"
            assert time.monotonic() - hushed < 5.0, "the replica kept answering"
            await asyncio.sleep(0.02)
        # the last heartbeat came up to one interval before the hush
        assert time.monotonic() - hushed >= 0.3, "stopped answering before three intervals"
        assert metric(port, "kiam_agent_replica_serving") == 0.0
        # still on the RPCs while the servers stay silent
        before = len(lone_server.rpcs())
        assert (await raw_request(agent.port, LIST, source="127.0.0.2")).text == "app-role"
        assert len(lone_server.rpcs()) == before + 1
        serving = agent.child.count_logs(SERVING)
        lone_server.speak()
        await async_wait_until(lambda: agent.child.count_logs(SERVING) > serving)
        before = len(lone_server.rpcs())
        assert (await raw_request(agent.port, LIST, source="127.0.0.2")).text == "app-role"
        assert len(lone_server.rpcs()) == before
    finally:
        agent.stop()


async def test_credentials_near_expiry_are_never_served_from_the_replica(
    lone_server: ScriptedNodeServer, certs: CertPaths, tmp_path: Path
) -> None:
    # a 30-minute margin: credentials with 20 minutes left are asked of the server
    agent, _ = start_agent(lone_server.address, certs, tmp_path, "--session-refresh", "30m")
    try:
        agent.child.wait_for(SERVING)
        lone_server.put(entry("127.0.0.2", key="ASIANEAREXPIRY", left=1200.0))
        lone_server.put(entry("127.0.0.3", key="ASIAFAREXPIRY", left=2400.0))
        deadline = time.monotonic() + 10
        while True:
            before = len(lone_server.rpcs("127.0.0.3"))
            far = await raw_request(agent.port, LIST + "app-role", source="127.0.0.3")
            if len(lone_server.rpcs("127.0.0.3")) == before:
                break
            assert time.monotonic() < deadline
        assert b"ASIAFAREXPIRY" in far.body
        for _ in range(5):
            before = len(lone_server.rpcs("127.0.0.2"))
            near = await raw_request(agent.port, LIST + "app-role", source="127.0.0.2")
            assert near.status == 200
            assert len(lone_server.rpcs("127.0.0.2")) == before + 1
    finally:
        agent.stop()


async def test_a_go_server_keeps_the_agent_on_the_rpcs_and_is_logged_once(
    certs: CertPaths, tmp_path: Path
) -> None:
    pods = {"127.0.0.2": GoPod(role="app-role")}
    async with go_shaped_server(certs, pods) as server:
        agent, port = await asyncio.to_thread(start_agent, server.address, certs, tmp_path)
        try:
            await async_wait_until(
                lambda: agent.child.count_logs("does not offer the node stream") >= 1
            )
            for _ in range(5):
                answer = await raw_request(agent.port, LIST, source="127.0.0.2")
                assert (answer.status, answer.text) == (200, "app-role")
            assert len(server.servicer.calls_from("127.0.0.2", "GetPodRole")) == 5
            await asyncio.sleep(0.5)  # time for a retry storm, which must not come
            assert agent.child.count_logs("does not offer the node stream") == 1
            fallbacks = await asyncio.to_thread(
                metric, port, "kiam_agent_replica_fallbacks_total",
                handler="roleName", reason="unimplemented",
            )
            assert fallbacks >= 1
        finally:
            await asyncio.to_thread(agent.stop)
