"""``kiam.KiamNodeService/WatchNode`` of the real ``kiam server`` process, over real gRPC
with mTLS, against the Kubernetes emulator and the STS stand-in (docs/architecture.md,
"The node replica"). Every wait is on a message, an event or a log line, with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from grpc import aio

from kiam.certs import CertPaths
from kiam.common.tls import channel_credentials
from kiam.wire import kiam_pb2, kiam_pb2_grpc, status
from kiam_testbed.commands import ROLE_BASE_ARN as BASE_ARN
from kiam_testbed.processes import ServerStack, server_stack

PERMITTED = "iam.amazonaws.com/permitted"
ROLE = "iam.amazonaws.com/role"
WAIT = 10.0


class Watcher:
    """One WatchNode stream, read into :attr:`messages` as they arrive (unless
    ``reading=False``: then nothing is read until :meth:`read_rest`)."""

    def __init__(self, channel: aio.Channel, node: str, *, reading: bool = True) -> None:
        stub = kiam_pb2_grpc.KiamNodeServiceStub(channel)
        self.call = stub.WatchNode(kiam_pb2.WatchNodeRequest(node_name=node))
        self.messages: list[kiam_pb2.NodeUpdate] = []
        self.error: aio.AioRpcError | None = None
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._read()) if reading else None

    async def _read(self) -> None:
        try:
            async for message in self.call:
                self.messages.append(message)
                self._arrived.set()
        except aio.AioRpcError as exc:
            self.error = exc
        finally:
            self._arrived.set()

    async def read_rest(self) -> None:
        await self._read()

    async def wait_for(
        self,
        predicate: Callable[[list[kiam_pb2.NodeUpdate]], bool],
        *,
        timeout: float = WAIT,  # noqa: ASYNC109
    ) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.messages):
                if self.error is not None:
                    raise AssertionError(f"stream ended: {self.error}")
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_for_end(self, *, timeout: float = WAIT) -> aio.AioRpcError:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while self.error is None:
                self._arrived.clear()
                await self._arrived.wait()
        return self.error

    async def close(self) -> None:
        self.call.cancel()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ---- reading the messages

    def entries(self, ip: str) -> list[kiam_pb2.NodeEntry]:
        return [m.entry for m in self.messages if m.WhichOneof("kind") == "entry"
                and m.entry.ip == ip]

    def latest(self, ip: str) -> kiam_pb2.NodeEntry | None:
        """What the agent holds for ``ip`` after every message so far."""
        held: kiam_pb2.NodeEntry | None = None
        for message in self.messages:
            kind = message.WhichOneof("kind")
            if kind == "entry" and message.entry.ip == ip:
                held = message.entry
            elif kind == "removed_ip" and message.removed_ip == ip:
                held = None
        return held

    def complete(self) -> int | None:
        """The index of snapshot_complete, None before it."""
        kinds = [m.WhichOneof("kind") for m in self.messages]
        return kinds.index("snapshot_complete") if "snapshot_complete" in kinds else None


@contextlib.asynccontextmanager
async def watching(stack: ServerStack, node: str, *, reading: bool = True,
                   channel: aio.Channel | None = None) -> AsyncIterator[Watcher]:
    watcher = Watcher(channel or stack.channel(), node, reading=reading)
    try:
        yield watcher
    finally:
        await watcher.close()


@pytest.fixture
async def stack(tmp_path: Path, certs: CertPaths) -> AsyncIterator[ServerStack]:
    namespaces = {"team": BASE_ARN + ".*", "locked": BASE_ARN + "other"}
    async with server_stack(tmp_path, certs=certs, namespaces=namespaces) as s:
        yield s


def add_pod(stack: ServerStack, name: str, ip: str, *, node: str = "node-a", role: str = "reader",
            namespace: str = "team") -> None:
    stack.kube.create_pod(namespace, name, ip=ip, node_name=node,
                          annotations={ROLE: role} if role else None)


def has_entry(watcher: Watcher, ip: str, **fields: str) -> Callable[[object], bool]:
    def check(_: object) -> bool:
        held = watcher.latest(ip)
        return held is not None and all(getattr(held, k) == v for k, v in fields.items())
    return check


async def test_snapshot_of_one_node_then_changes_and_heartbeats(stack: ServerStack) -> None:
    add_pod(stack, "web", "10.1.0.1")
    add_pod(stack, "plain", "10.1.0.2", role="")
    add_pod(stack, "elsewhere", "10.1.0.3", node="node-b")
    async with watching(stack, "node-a") as watcher:
        await watcher.wait_for(lambda _: watcher.complete() is not None)
        snapshot = watcher.messages[: watcher.complete()]
        assert sorted(m.entry.ip for m in snapshot) == ["10.1.0.1", "10.1.0.2"]
        done = watcher.messages[watcher.complete() or 0].snapshot_complete
        assert done.entries == 2
        assert done.heartbeat_interval_ms == 1000
        web = watcher.latest("10.1.0.1")
        assert web is not None
        assert (web.pod_namespace, web.pod_name, web.role) == ("team", "web", "reader")
        assert web.pod_uid == stack.kube.get("pods", "team", "web")["metadata"]["uid"]
        assert watcher.latest("10.1.0.2") is not None and watcher.latest("10.1.0.2").role == ""  # type: ignore[union-attr]

        # nothing happens: heartbeats
        await watcher.wait_for(lambda ms: sum(m.HasField("heartbeat") for m in ms) >= 2,
                               timeout=5)
        # a pod added, annotated, deleted on this node: entry, entry, removed_ip
        add_pod(stack, "new", "10.1.0.4", role="writer")
        await watcher.wait_for(has_entry(watcher, "10.1.0.4", role="writer", pod_name="new"))
        stack.kube.patch("pods", "team", "new", {"metadata": {"annotations": {ROLE: "admin"}}})
        await watcher.wait_for(has_entry(watcher, "10.1.0.4", role="admin"))
        stack.kube.delete_pod("team", "new", grace_period=0)
        await watcher.wait_for(lambda ms: any(m.removed_ip == "10.1.0.4" for m in ms))
        # a pod moving to this node arrives; one on another node never does
        add_pod(stack, "other", "10.1.0.5", node="node-b")
        stack.kube.set_pod_status("team", "elsewhere", node_name="node-a")
        await watcher.wait_for(has_entry(watcher, "10.1.0.3", pod_name="elsewhere"))
        assert watcher.entries("10.1.0.5") == []
        # and leaving it is a removal
        stack.kube.set_pod_status("team", "elsewhere", node_name="node-b")
        await watcher.wait_for(lambda ms: any(m.removed_ip == "10.1.0.3" for m in ms))
        assert watcher.error is None


async def test_ip_reuse_removal_comes_before_the_new_pods_entry(stack: ServerStack) -> None:
    add_pod(stack, "a", "10.1.0.40", role="role-a")
    async with watching(stack, "node-a") as watcher:
        await watcher.wait_for(has_entry(watcher, "10.1.0.40", role="role-a"))
        # deleted at once, the IP given to a pod with another role
        stack.kube.delete_pod("team", "a", grace_period=0)
        add_pod(stack, "b", "10.1.0.40", role="role-b")
        await watcher.wait_for(has_entry(watcher, "10.1.0.40", role="role-b"))
        kinds = [(m.WhichOneof("kind"), m.entry.role if m.HasField("entry") else m.removed_ip)
                 for m in watcher.messages if m.HasField("entry") or m.HasField("removed_ip")]
        assert kinds.index(("removed_ip", "10.1.0.40")) < kinds.index(("entry", "role-b"))

        # terminating, still claiming the IP: never the newcomer's role while it does
        stack.kube.delete_pod("team", "b", grace_period=30)
        add_pod(stack, "c", "10.1.0.40", role="role-c")
        await watcher.wait_for(lambda _: (held := watcher.latest("10.1.0.40")) is not None
                               and held.HasField("role_refusal"))
        assert not any(e.role == "role-c" for e in watcher.entries("10.1.0.40"))
        refused_at = len(watcher.messages)
        stack.kube.finalise_pod("team", "b")
        await watcher.wait_for(has_entry(watcher, "10.1.0.40", role="role-c"))
        after = watcher.messages[refused_at:]
        removed = [i for i, m in enumerate(after) if m.removed_ip == "10.1.0.40"]
        given = [i for i, m in enumerate(after) if m.entry.role == "role-c"]
        assert removed and given and removed[0] < given[0]


async def test_the_end_of_a_grace_period_changes_the_owner_without_an_event(
    stack: ServerStack,
) -> None:
    add_pod(stack, "old", "10.1.0.45", role="role-old")
    async with watching(stack, "node-a") as watcher:
        await watcher.wait_for(has_entry(watcher, "10.1.0.45", role="role-old"))
        # terminating, its grace period ending in a second, and then never removed (a
        # finalizer, a kubelet that never confirms): nothing more comes from the watch
        stack.kube.delete_pod("team", "old", grace_period=1)
        stack.kube.hold_pod("team", "old")
        add_pod(stack, "new", "10.1.0.45", role="role-new")
        await watcher.wait_for(lambda _: (held := watcher.latest("10.1.0.45")) is not None
                               and held.HasField("role_refusal"))
        # grace period (1 s) plus the ownership rule's margin (5 s): then the newcomer's
        await watcher.wait_for(has_entry(watcher, "10.1.0.45", role="role-new"), timeout=15)
        assert stack.kube.find("pods", "team", "old") is not None  # no watch event did it
        last = stack.kube.get("pods", "team", "new")["metadata"]["resourceVersion"]
        assert stack.kube.resource_version == int(last)


async def _refusal_of(call: object) -> tuple[int, str, str]:
    with pytest.raises(aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = caught.value
    return error.code().value[0], error.details() or "", status.reason(error)


def _as_rpc(refusal: kiam_pb2.Refusal) -> tuple[int, str, str]:
    return refusal.code, refusal.message, refusal.reason or refusal.message


async def test_forbidden_and_ambiguous_entries_carry_the_rpcs_refusals(
    stack: ServerStack,
) -> None:
    add_pod(stack, "api", "10.1.0.50", namespace="locked")
    add_pod(stack, "x", "10.1.0.51", role="role-x")
    add_pod(stack, "y", "10.1.0.51", role="role-y")
    async with watching(stack, "node-a") as watcher:
        await watcher.wait_for(lambda _: watcher.complete() is not None)
        forbidden, ambiguous = watcher.latest("10.1.0.50"), watcher.latest("10.1.0.51")
        assert forbidden is not None and ambiguous is not None
        assert forbidden.HasField("credentials_refusal")
        assert not forbidden.HasField("role_refusal")
        assert ambiguous.HasField("role_refusal") and ambiguous.HasField("credentials_refusal")
        # the Event comes from the stream's decision: no RPC has been made
        await stack.kube.wait_for(
            lambda: bool(stack.kube.events("locked", reason="KiamRoleForbidden")), timeout=WAIT
        )
        stub = stack.stub()
        assert await _refusal_of(stub.GetPodCredentials(kiam_pb2.GetPodCredentialsRequest(
            ip="10.1.0.50", role=forbidden.role), timeout=5)) == _as_rpc(
            forbidden.credentials_refusal)
        assert await _refusal_of(stub.GetPodRole(
            kiam_pb2.GetPodRoleRequest(ip="10.1.0.51"), timeout=5)) == _as_rpc(
            ambiguous.role_refusal)
        assert await _refusal_of(stub.GetPodCredentials(kiam_pb2.GetPodCredentialsRequest(
            ip="10.1.0.51", role="role-x"), timeout=5)) == _as_rpc(
            ambiguous.credentials_refusal)
        # the namespace opens up: the refusal goes, and the credentials come
        stack.kube.patch("namespaces", "", "locked",
                         {"metadata": {"annotations": {PERMITTED: BASE_ARN + ".*"}}})
        await watcher.wait_for(lambda _: (held := watcher.latest("10.1.0.50")) is not None
                               and held.HasField("credentials"))
    events = stack.kube.events("locked", reason="KiamRoleForbidden")
    assert sum(int(e.get("count", 1)) for e in events) == 2  # the stream's and the RPC's


async def test_credentials_arrive_after_prefetch_and_refreshes_are_pushed(
    tmp_path: Path, certs: CertPaths
) -> None:
    # credentials are served for one second after each fetch and refreshed every half
    args = ("--session-duration", "15m", "--session-refresh", "14m59s")
    async with server_stack(tmp_path, certs=certs, namespaces={"team": ".*"},
                            server_args=args) as stack:
        add_pod(stack, "web", "10.1.0.60")
        async with watching(stack, "node-a") as watcher:
            await watcher.wait_for(lambda _: any(e.HasField("credentials")
                                                 for e in watcher.entries("10.1.0.60")))
            first = next(e.credentials for e in watcher.entries("10.1.0.60")
                         if e.HasField("credentials"))
            assert first.code == "Success" and first.secret_access_key and first.token
            await watcher.wait_for(lambda _: any(
                e.credentials.access_key_id not in ("", first.access_key_id)
                for e in watcher.entries("10.1.0.60")))
            assert stack.sts.successful_assume_role_calls(BASE_ARN + "reader") >= 2
        assert not any(first.secret_access_key in line for line in stack.server.logs)
        assert not any(first.token in line for line in stack.server.logs)


async def test_streams_beyond_the_limit_are_refused(tmp_path: Path, certs: CertPaths) -> None:
    async with server_stack(tmp_path, certs=certs, namespaces={"team": ".*"},
                            server_args=("--node-stream-limit", "1")) as stack:
        async with watching(stack, "node-a") as first:
            await first.wait_for(lambda _: first.complete() is not None)
            async with watching(stack, "node-b") as second:
                error = await second.wait_for_end()
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "--node-stream-limit 1" in (error.details() or "")
        # the first one closed: there is room again
        async with watching(stack, "node-b") as third:
            await third.wait_for(lambda _: third.complete() is not None)


async def test_empty_node_name_is_invalid(stack: ServerStack) -> None:
    async with watching(stack, "") as watcher:
        error = await watcher.wait_for_end()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_stream_that_does_not_read_is_cut_off_without_blocking_another(
    tmp_path: Path, certs: CertPaths
) -> None:
    async with server_stack(tmp_path, certs=certs, namespaces={"team": ".*"},
                            server_args=("--node-stream-buffer", "20")) as stack:
        # no window growth: the silent client's connection takes 64 KiB, then blocks
        small_window = aio.secure_channel(stack.server.address,
                                          channel_credentials(stack.agent_tls),
                                          options=[("grpc.http2.bdp_probe", 0)])
        try:
            async with (
                watching(stack, "node-a", reading=False, channel=small_window) as silent,
                watching(stack, "node-a") as reader,
            ):
                await reader.wait_for(lambda _: reader.complete() is not None)
                await silent.call.initial_metadata()
                # in batches the reader keeps up with (the buffer takes a batch, not all)
                for batch in range(80):
                    for n in range(batch * 10, batch * 10 + 10):
                        add_pod(stack, f"pod-{n:03d}-{'x' * 100}",
                                f"10.3.{n // 250}.{n % 250 + 1}", role="")
                    await reader.wait_for(
                        lambda ms, sent=batch * 10 + 10: sum(m.HasField("entry")
                                                             for m in ms) >= sent)
                await stack.server.wait_for_log("node stream cut off")
                assert stack.server.count_logs("node stream cut off") == 1
                assert reader.error is None
                await silent.read_rest()
                assert silent.error is not None
                assert silent.error.code() == grpc.StatusCode.ABORTED
                assert "behind" in (silent.error.details() or "")
            # reconnecting gets a new snapshot with everything
            async with watching(stack, "node-a", channel=small_window) as again:
                await again.wait_for(lambda _: again.complete() is not None)
                assert again.messages[again.complete() or 0].snapshot_complete.entries == 800
        finally:
            await small_window.close(None)


async def test_drain_ends_streams_with_unavailable(stack: ServerStack) -> None:
    async with watching(stack, "node-a") as watcher:
        await watcher.wait_for(lambda _: watcher.complete() is not None)
        stack.server.signal(signal.SIGTERM)
        error = await watcher.wait_for_end()
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (error.details() or "")
    assert await stack.server.wait() == 0
    # ended by the drain, not by the grace period's cancel (a failed abort logs one)
    assert stack.server.count_logs("Traceback") == 0
