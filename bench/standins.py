"""The benchmarks' stand-ins: the test bed's stand-ins process
(:mod:`kiam_testbed.standins`) with one more call target, ``bench``: the bulk commands
of :class:`BenchCommands`, driven through the emulator's in-process hooks.

Creating 50,000 pods through the HTTP API would take minutes; the hooks take seconds, and
their CPU is spent in the stand-ins process, not in the process being measured.
Timestamps they report use ``time.monotonic()`` (CLOCK_MONOTONIC, comparable across
processes on this host). :func:`standins_stack` is the parent's side: a loopback
:class:`~kiam_testbed.stack.Stack` on this process; ``stack.remote("bench").pods(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import ROOT
from bench.pods import ROLE_ANNOTATION, pod_body, pod_ip
from kiam_testbed import standins
from kiam_testbed.commands import ROLE_BASE_ARN
from kiam_testbed.kube import PODS, KubeEmulator
from kiam_testbed.stack import Remote, Stack, loopback_placement
from kiam_testbed.sts import StsStandIn

Reply = dict[str, Any]
_POLL = 0.0005  # the stand-in notifies arrivals, not answers: poll for the answer


@contextlib.contextmanager
def standins_stack(workdir: Path, *args: str, certs: bool = True) -> Iterator[Stack]:
    """A loopback :class:`Stack` on this stand-ins process (``args``: its flags, e.g.
    ``--no-sts``), with certificates unless not ``certs``; everything stopped at the end."""
    stack = Stack(workdir, loopback_placement())
    try:
        # no bookmark during a measurement: they would add events to the streams timed
        stack.start_standins("--bookmark-interval", "3600", *args, module="bench.standins",
                             cwd=ROOT)
        if certs:
            stack.make_certs()
        yield stack
    finally:
        stack.close()


async def bench_call(bench: Remote, command: str, **args: Any) -> Reply:
    """One of the :class:`BenchCommands` (``bench``: ``stack.remote("bench")``) from a
    coroutine: the call waits in a thread, so the caller's event loop runs on meanwhile."""
    reply: Reply = await asyncio.to_thread(getattr(bench, command), **args)
    return reply


class BenchCommands:
    """The bulk commands, over the emulator and the STS stand-in (if it runs)."""

    def __init__(self, kube: KubeEmulator, sts: StsStandIn | None) -> None:
        self.kube = kube
        self.sts = sts
        self._generation = 0

    def pods(self, *, namespace: str, count: int, start: int = 0, roles: int = 50,
             ips: list[str] | None = None, role: str = "", nodes: int = 50) -> Reply:
        """Create Running pods with IPs (one ADDED event each) on ``nodes`` nodes; ``ips``
        overrides the generated 10.x addresses, ``role`` the ``role-<i % roles>``
        annotation."""
        began = time.perf_counter()
        for i in range(start, start + count):
            body = pod_body(namespace=namespace, name=f"pod-{i}", index=i,
                            role=role or f"role-{i % roles}", nodes=nodes)
            if ips is not None:
                address = ips[i - start]
                body["status"]["podIP"] = address
                body["status"]["podIPs"] = [{"ip": address}]
            self.kube.create(PODS, body, namespace=namespace, keep_status=True)
        return {"rv": self.kube.resource_version, "seconds": time.perf_counter() - began}

    def modify(self, *, namespace: str, count: int, pods: int) -> Reply:
        """``count`` MODIFIED events (a label change, as most pod updates are irrelevant
        to kiam) cycling over ``pod-0..pod-<pods-1>``, then one last event that gives
        pod-0 a fresh IP: the sentinel a PodCache can wait for."""
        self._generation += 1
        since = self.kube.resource_version
        for i in range(count):
            label = {"bench-generation": f"{self._generation}-{i}"}
            self.kube.patch(PODS, namespace, f"pod-{i % pods}", {"metadata": {"labels": label}})
        sentinel = f"10.250.{self._generation // 256 % 256}.{self._generation % 256}"
        self.kube.set_pod_status(namespace, "pod-0", pod_ip=sentinel)
        return {"since": since, "rv": self.kube.resource_version, "sentinel_ip": sentinel,
                "events": count + 1}

    async def churn(self, *, namespace: str, pods: int, nodes: int, rate: float,
                    seconds: float, roles: int = 50) -> Reply:
        """Replace ``rate`` pods a second for ``seconds``: delete ``pod-<k>`` at once and
        create ``churn-<n>`` on its node with its IP (the IP's reuse), cycling over the
        ``pods`` pods; answer each new pod's creation time (``time.monotonic()``)."""
        created: dict[str, float] = {}
        began = time.monotonic()
        for n in range(round(rate * seconds)):
            await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
            old = f"pod-{n % pods}" if n < pods else f"churn-{n - pods}"
            index = n % pods
            self.kube.delete(PODS, namespace, old, grace_period=0)
            name = f"churn-{n}"
            body = pod_body(namespace=namespace, name=name, index=index,
                            role=f"role-{(index + n) % roles}", nodes=nodes)
            self.kube.create(PODS, body, namespace=namespace, keep_status=True)
            created[name] = time.monotonic()
        return {"created": created, "seconds": time.monotonic() - began}

    def _sts(self) -> StsStandIn:
        if self.sts is None:
            raise RuntimeError("started without --sts")
        return self.sts

    def sts_calls(self) -> Reply:
        sts = self._sts()
        return {"calls": sts.assume_role_calls(),
                "successful": sts.successful_assume_role_calls(),
                "throttled": sts.rate_limited_assume_role_calls()}

    async def _answered(self, role_arn: str, count: int) -> float:
        """Wait until ``count`` calls for ``role_arn`` (any role: "") were answered 200."""
        sts = self._sts()
        arn = role_arn or None
        await sts.wait_for_calls(count, role_arn=arn)
        while sts.successful_assume_role_calls(arn) < count:  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(_POLL)
        return time.monotonic()

    async def coldstart(self, *, namespace: str, count: int, roles: int) -> Reply:
        """Create ``count`` pods (Pending, no IP), then set their IPs as kubelets would;
        answer how long from the first IP to the ``roles``-th STS answer."""
        sts = self._sts()
        before = sts.successful_assume_role_calls()
        for i in range(count):
            body = pod_body(namespace=namespace, name=f"cold-{i}", index=i,
                            role=f"cold-role-{i % roles}")
            self.kube.create(PODS, body, namespace=namespace, keep_status=False)
        first = time.monotonic()
        for i in range(count):
            self.kube.set_pod_status(namespace, f"cold-{i}", pod_ip=pod_ip(i))
        last_event = time.monotonic()
        done = await self._answered("", before + roles)
        return {"seconds": done - first, "events_seconds": last_event - first}

    async def one_pod(self, *, namespace: str, name: str, role: str, ip: str) -> Reply:
        """Create one pod (Pending), set its IP; answer the time from that event until
        the STS stand-in answered the AssumeRole for its (new) role."""
        body = pod_body(namespace=namespace, name=name, index=0, role=role)
        body["metadata"]["annotations"][ROLE_ANNOTATION] = role
        self.kube.create(PODS, body, namespace=namespace, keep_status=False)
        event = time.monotonic()
        self.kube.set_pod_status(namespace, name, pod_ip=ip)
        done = await self._answered(ROLE_BASE_ARN + role, 1)
        return {"seconds": done - event}


if __name__ == "__main__":
    standins.main(extra={"bench": BenchCommands})
