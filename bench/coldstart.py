"""Cold start: N pods sharing R roles must cost exactly R STS calls; and the time from a
pod's watch event (created, then its IP set as a kubelet would) until its credentials are
cached.

The emulator and the STS stand-in share the stand-ins process, so it sees both ends:
it times from the IP-setting event until the stand-in has answered the server's
AssumeRole for the pod's role (the server caches the answer as it arrives). The bench
then checks through the server (gRPC, mTLS, as an agent) that GetPodCredentials for
every pod is served without another STS call. Baseline for the time: one direct
AssumeRole round trip to the same stand-in (boto3, from this process).
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import BenchError
from bench.pods import pod_ip
from bench.report import Figure, print_table, print_values
from bench.standins import bench_call, standins_stack
from kiam.wire import kiam_pb2, kiam_pb2_grpc
from kiam_testbed.commands import ROLE_BASE_ARN
from kiam_testbed.stack import Stack

NAMESPACE = "cold"
_TIMEOUT = 120.0


@dataclass(frozen=True, kw_only=True)
class ColdSizes:
    pods: int
    roles: int
    samples: int


FULL = ColdSizes(pods=1000, roles=50, samples=20)
QUICK = ColdSizes(pods=100, roles=10, samples=3)


def _channel(stack: Stack) -> grpc.aio.Channel:
    certs = stack.certs
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "agent-key.pem").read_bytes(),
        certificate_chain=(certs / "agent.pem").read_bytes(),
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{stack.placement.server_port}", credentials)


async def _wait_serving(channel: grpc.aio.Channel) -> None:
    """Until the server's grpc.health.v1 says SERVING (its caches have synced)."""
    health = health_pb2_grpc.HealthStub(channel)
    async with asyncio.timeout(_TIMEOUT):
        while True:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)


async def _fetch_all(channel: grpc.aio.Channel, pods: list[tuple[str, str]]) -> None:
    """GetPodCredentials for every (ip, role), 50 at a time; BenchError on a failure."""
    stub = kiam_pb2_grpc.KiamServiceStub(channel)
    for i in range(0, len(pods), 50):
        calls = [stub.GetPodCredentials(kiam_pb2.GetPodCredentialsRequest(ip=ip, role=role),
                                        timeout=10)
                 for ip, role in pods[i:i + 50]]
        for reply in await asyncio.gather(*calls):
            if not reply.access_key_id:
                raise BenchError("GetPodCredentials answered no access key")


def _direct_assume_role(sts_url: str, samples: int) -> list[float]:
    client = boto3.client("sts", endpoint_url=sts_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    times: list[float] = []
    for i in range(samples + 1):
        start = time.perf_counter()
        client.assume_role(RoleArn=f"{ROLE_BASE_ARN}baseline-{i}", RoleSessionName="kiam-bench",
                           DurationSeconds=900)
        if i:  # the first call warms the connection and botocore's caches
            times.append(time.perf_counter() - start)
    return times


@dataclass(frozen=True, kw_only=True)
class ColdResult:
    batch_seconds: float
    calls: int
    latencies: list[float]
    hits: int


async def _measure(stack: Stack, sizes: ColdSizes) -> ColdResult:
    call = functools.partial(bench_call, stack.remote("bench", timeout=_TIMEOUT))
    channel = _channel(stack)
    try:
        await _wait_serving(channel)
        batch = await call("coldstart", namespace=NAMESPACE, count=sizes.pods,
                           roles=sizes.roles)
        await asyncio.sleep(1.0)  # room for any stray extra call to show up
        pods = [(pod_ip(i), f"cold-role-{i % sizes.roles}") for i in range(sizes.pods)]
        await _fetch_all(channel, pods)
        calls = int(str((await call("sts_calls"))["calls"]))
        latencies: list[float] = []
        hits = 0
        for i in range(sizes.samples):
            role, ip = f"fresh-role-{i}", f"10.251.{i // 256}.{i % 256}"
            one = await call("one_pod", namespace=NAMESPACE, name=f"fresh-{i}", role=role,
                             ip=ip)
            latencies.append(float(str(one["seconds"])))
            before = int(str((await call("sts_calls"))["calls"]))
            await _fetch_all(channel, [(ip, role)])
            hits += int(str((await call("sts_calls"))["calls"])) == before
    finally:
        await channel.close(grace=None)
    return ColdResult(batch_seconds=float(str(batch["seconds"])), calls=calls,
                      latencies=latencies, hits=hits)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(*, quick: bool, workdir: Path) -> int:
    sizes = QUICK if quick else FULL
    with standins_stack(workdir) as stack:
        stack.create_namespace(NAMESPACE, permitted=".*")
        stack.start_server()
        result = asyncio.run(_measure(stack, sizes))
        direct = _direct_assume_role(stack.sts_url, max(sizes.samples, 5))
    base50, kiam50 = statistics.median(direct), statistics.median(result.latencies)
    print_table("Cold start: pod watch event -> its credentials cached in the server",
                "one direct AssumeRole round trip to the stand-in", [
                    Figure("event -> cached, p50", kiam50, base50, "s", False),
                    Figure("event -> cached, p90", _quantile(result.latencies, 0.9),
                           _quantile(direct, 0.9), "s", False),
                ])
    ok = result.calls == sizes.roles
    print_values(f"Cold start: {sizes.pods:,} pods sharing {sizes.roles} roles", [
        (f"all {sizes.roles} roles cached after", f"{result.batch_seconds * 1000:.0f}ms"),
        ("GetPodCredentials served from cache",
         f"{result.hits}/{sizes.samples} new + {sizes.pods}"),
    ])
    print(f"STS calls: {result.calls} (expected {sizes.roles})", flush=True)
    if result.hits != sizes.samples:
        print(f"error: {sizes.samples - result.hits} fresh pods needed a second STS call")
        ok = False
    return 0 if ok else 1
