"""Remembered STS refusals and throttling (docs/sts.md) on the real ``kiam server``
process: a pod polling a role STS refuses costs one AssumeRole per ``--sts-error-ttl``
window, and touching its annotation after the fix serves credentials at once; a throttled
role costs one call per backoff step, and the server-wide budget's rate
(``kiam_sts_budget_rate`` on ``/metrics``) drops and grows back."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from kiam.certs import CertPaths
from kiam.wire import kiam_pb2
from kiam_testbed.commands import ROLE_BASE_ARN as BASE_ARN
from kiam_testbed.processes import ServerStack, server_stack
from kiam_testbed.stack import free_port

ROLE = "iam.amazonaws.com/role"
TTL = 4.0
POLL_FOR = 10.0
RATE = 20.0
QPS = 20


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
async def stack(
    tmp_path: Path, certs: CertPaths, metrics_port: int
) -> AsyncIterator[ServerStack]:
    async with server_stack(
        tmp_path,
        certs=certs,
        namespaces={"team": BASE_ARN + ".*"},
        server_args=("--sts-error-ttl", f"{TTL:g}s", "--sts-qps", str(QPS), "--sts-burst",
                     str(2 * QPS), "--prometheus-listen-addr", f"127.0.0.1:{metrics_port}"),
    ) as s:
        yield s


async def scrape(port: int) -> dict[str, float]:
    """The server's /metrics: sample name with labels -> value."""
    async with aiohttp.ClientSession() as http, http.get(
        f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=5)
    ) as response:
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def ask(stack: ServerStack, ip: str, role: str) -> kiam_pb2.Credentials | aio.AioRpcError:
    request = kiam_pb2.GetPodCredentialsRequest(ip=ip, role=role)
    try:
        return await stack.stub().GetPodCredentials(request, timeout=5)
    except aio.AioRpcError as exc:
        return exc


@pytest.mark.timeout(60)
async def test_a_refused_role_costs_one_call_per_window(stack: ServerStack) -> None:
    refused = BASE_ARN + "forbidden"
    stack.sts.queue_fault("access-denied", count=10_000, role_arn=refused)
    stack.kube.create_pod("team", "bad", ip="10.1.0.10", annotations={ROLE: "forbidden"})
    stack.kube.create_pod("team", "good", ip="10.1.0.11", annotations={ROLE: "reader"})

    started = time.monotonic()
    refusals: list[aio.AioRpcError] = []
    neighbour: list[kiam_pb2.Credentials | aio.AioRpcError] = []
    while time.monotonic() - started < POLL_FOR:
        tick = asyncio.sleep(1 / RATE)
        bad, good = await asyncio.gather(
            ask(stack, "10.1.0.10", "forbidden"), ask(stack, "10.1.0.11", "reader")
        )
        assert isinstance(bad, aio.AioRpcError), bad
        refusals.append(bad)
        neighbour.append(good)
        await tick
    elapsed = time.monotonic() - started

    assert len(refusals) >= POLL_FOR * RATE / 2  # really polled (slow runners included)
    # every answer is the refusal with its status and AWS's reason
    assert {r.code() for r in refusals} == {grpc.StatusCode.INTERNAL}
    assert all("AccessDenied" in (r.details() or "") for r in refusals)
    assert all("not authorized to perform: sts:AssumeRole" in (r.details() or "")
               for r in refusals)
    # the neighbour is served throughout
    assert all(isinstance(g, kiam_pb2.Credentials) and g.code == "Success" for g in neighbour)
    # at most one AssumeRole per window (the first may be the prefetch, before polling)
    calls = stack.sts.assume_role_calls(refused)
    assert 2 <= calls <= math.floor(elapsed / TTL) + 2
    # one Event per window: one Event object whose count is the windows reported
    await stack.kube.wait_for(
        lambda: bool(stack.kube.events("team", reason="KiamCredentialError")), timeout=10
    )
    await asyncio.sleep(1.5)  # let the recorder fold in the last window's repeat
    events = stack.kube.events("team", reason="KiamCredentialError")
    assert [e["involvedObject"]["name"] for e in events] == ["bad"]
    assert 1 <= events[0].get("count", 1) <= calls
    warnings = [line for line in stack.server.logs if "error fetching credentials" in line]
    assert 1 <= len(warnings) <= calls

    # fixed: STS stops refusing; touching the pod's annotation is picked up at once
    stack.sts.reset()
    stack.kube.patch("pods", "team", "bad", {"metadata": {"annotations": {"touched": "1"}}})
    touched = time.monotonic()
    while True:
        answer = await ask(stack, "10.1.0.10", "forbidden")
        if isinstance(answer, kiam_pb2.Credentials):
            break
        assert time.monotonic() - touched < 1.0, answer.details()
        await asyncio.sleep(0.05)
    assert answer.code == "Success"
    assert stack.sts.successful_assume_role_calls(refused) == 1


@pytest.mark.timeout(60)
async def test_touching_the_namespace_forgets_its_pods_refusals(stack: ServerStack) -> None:
    refused = BASE_ARN + "forbidden"
    stack.sts.queue_fault("access-denied", count=10_000, role_arn=refused)
    stack.kube.create_pod("team", "bad", ip="10.1.0.12", annotations={ROLE: "forbidden"})
    first = await ask(stack, "10.1.0.12", "forbidden")
    assert isinstance(first, aio.AioRpcError)
    second = await ask(stack, "10.1.0.12", "forbidden")
    assert isinstance(second, aio.AioRpcError)
    assert stack.sts.assume_role_calls(refused) == 1  # the second came from memory

    stack.sts.reset()
    stack.kube.patch("namespaces", "", "team", {"metadata": {"annotations": {"touched": "1"}}})
    touched = time.monotonic()
    while not isinstance(answer := await ask(stack, "10.1.0.12", "forbidden"),
                         kiam_pb2.Credentials):
        assert time.monotonic() - touched < 1.0, answer.details()
        await asyncio.sleep(0.05)
    assert answer.code == "Success"


@pytest.mark.timeout(90)
async def test_throttling_costs_one_call_per_backoff_step(
    stack: ServerStack, metrics_port: int
) -> None:
    throttled = BASE_ARN + "throttled"
    stack.kube.create_pod("team", "good", ip="10.1.0.13", annotations={ROLE: "reader"})
    cached = await ask(stack, "10.1.0.13", "reader")
    assert isinstance(cached, kiam_pb2.Credentials)
    # read before the throttled pod exists: its prefetch may be throttled at once
    assert (await scrape(metrics_port))["kiam_sts_budget_rate"] == QPS
    stack.sts.queue_fault("throttling", count=10_000, role_arn=throttled)
    stack.kube.create_pod("team", "busy", ip="10.1.0.14", annotations={ROLE: "throttled"})

    started = time.monotonic()
    answers: list[kiam_pb2.Credentials | aio.AioRpcError] = []
    rates: list[float] = []
    while time.monotonic() - started < 4.0:
        tick = asyncio.sleep(1 / RATE)
        busy, good = await asyncio.gather(
            ask(stack, "10.1.0.14", "throttled"), ask(stack, "10.1.0.13", "reader")
        )
        answers.append(busy)
        # credentials cached for another role are served throughout
        assert isinstance(good, kiam_pb2.Credentials), good.details()
        assert good.access_key_id == cached.access_key_id
        rates.append((await scrape(metrics_port))["kiam_sts_budget_rate"])
        await tick
    assert all(isinstance(a, aio.AioRpcError) and "Throttling" in (a.details() or "")
               for a in answers)
    # steps of 0.5-1 s, 1-2 s, 2-4 s...: at most 4 calls in 4 s, one attempt each (no
    # retries underneath: each call is one request at the stand-in)
    calls = stack.sts.assume_role_calls(throttled)
    assert 2 <= calls <= 4
    assert len(answers) >= 4.0 * RATE / 3
    # the server-wide rate halves per throttled answer (at most once a second)
    assert min(rates) <= QPS / 2 ** (calls - 1)
    assert rates == sorted(rates, reverse=True)
    samples = await scrape(metrics_port)
    assert samples["kiam_sts_assumerole_calls_total{outcome=throttled}"] == calls
    assert samples["kiam_sts_backoff_skips_total"] >= len(answers) - calls

    stack.sts.reset()  # STS stops throttling: served within the next step (at most 8 s)
    deadline = time.monotonic() + 10
    while not isinstance(answer := await ask(stack, "10.1.0.14", "throttled"),
                         kiam_pb2.Credentials):
        assert time.monotonic() < deadline, answer.details()
        await asyncio.sleep(0.1)
    assert stack.sts.successful_assume_role_calls(throttled) == 1

    # calls that succeed grow the rate back: a few new roles, prefetched as pods start
    for i in range(QPS):
        stack.kube.create_pod("team", f"new-{i}", ip=f"10.1.1.{i}",
                              annotations={ROLE: f"new-{i}"})
    deadline = time.monotonic() + 30
    while (rate := (await scrape(metrics_port))["kiam_sts_budget_rate"]) < QPS:
        assert time.monotonic() < deadline, (rate, stack.sts.successful_assume_role_calls())
        await asyncio.sleep(0.2)
    assert stack.sts.faulted_assume_role_calls() == 0
