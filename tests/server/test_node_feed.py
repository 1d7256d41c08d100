"""NodeFeed (kiam/server/node_feed.py) over an in-memory pod index, and WatchNode's
admission: no sockets. The real process is covered in test_node_stream.py."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from kiam.aws.credentials import Credentials
from kiam.k8s.model import PodInfo
from kiam.server.node_feed import NodeFeed, Subscription
from kiam.server.node_service import KiamNodeService
from kiam.server.policy import Policy
from kiam.wire import kiam_pb2
from tests.k8s.factories import pod
from tests.server.fakes import Aborted, FakeContext, FakeEvents

BASE = "arn:aws:iam::123456789012:role/"
POLICY = Policy(base_arn=BASE)


class Index:
    """The pod cache's claimants, changed through :meth:`apply` as the cache would."""

    def __init__(self) -> None:
        self.pods: dict[str, PodInfo] = {}
        self.feed: NodeFeed | None = None

    def claimants(self, ip: str) -> tuple[PodInfo, ...]:
        return tuple(p for p in self.pods.values() if ip in p.ips)

    def apply(self, new: PodInfo | None, *, uid: str = "") -> None:
        key = new.uid if new is not None else uid
        old = self.pods.pop(key, None)
        if new is not None:
            self.pods[key] = new
        assert self.feed is not None
        self.feed.pod_changed(old, new)


def on(node: str, p: PodInfo) -> PodInfo:
    return dataclasses.replace(p, node_name=node)


@dataclasses.dataclass
class Rig:
    index: Index
    feed: NodeFeed
    events: FakeEvents
    namespaces: dict[str, str]
    fetched: list[object]


@pytest.fixture
def rig() -> Rig:
    index = Index()
    events = FakeEvents()
    namespaces = {"default": BASE + ".*"}
    fetched: list[object] = []
    feed = NodeFeed(pods=index, permitted=namespaces.get, policy=POLICY, events=events,
                    session_refresh=300.0, fetch=fetched.append)
    index.feed = feed
    return Rig(index, feed, events, namespaces, fetched)


def drained(subscription: Subscription) -> list[tuple[str, str]]:
    """(kind, ip or pod name) of every update waiting, taken."""
    out: list[tuple[str, str]] = []
    while (update := subscription.take()) is not None:
        message = update[0]
        kind = message.WhichOneof("kind") or ""
        out.append((kind, message.removed_ip if kind == "removed_ip" else
                    message.entry.pod_name or "(ambiguous)"))
    return out


async def test_snapshot_is_the_nodes_ips_only(rig: Rig) -> None:
    rig.index.apply(on("a", pod("web", ips=("10.0.0.1",), role="app")))
    rig.index.apply(on("b", pod("other", ips=("10.0.0.2",), role="app")))
    entries, subscription = rig.feed.subscribe("a", buffer=10)
    assert [(e.ip, e.pod_name, e.role) for e in entries] == [("10.0.0.1", "web", "app")]
    assert drained(subscription) == []
    assert rig.feed.watched() == 1
    rig.feed.unsubscribe(subscription)
    assert rig.feed.watched() == 0


async def test_reuse_is_removal_then_entry_and_identical_entries_are_not_pushed(
    rig: Rig,
) -> None:
    web = on("a", pod("web", ips=("10.0.0.1",), role="app"))
    rig.index.apply(web)
    _, subscription = rig.feed.subscribe("a", buffer=10)
    rig.index.apply(web)  # the same again: nothing to say
    assert drained(subscription) == []
    rig.index.apply(None, uid=web.uid)
    rig.index.apply(on("a", pod("next", ips=("10.0.0.1",), role="db")))
    assert drained(subscription) == [("removed_ip", "10.0.0.1"), ("entry", "next")]
    # the owner changing in one step (a re-list) still removes first
    rig.index.pods.clear()
    rig.index.apply(on("a", pod("third", ips=("10.0.0.1",), role="db")))
    assert drained(subscription) == [("removed_ip", "10.0.0.1"), ("entry", "third")]


async def test_a_pod_changing_ip_removes_the_old_before_the_new(rig: Rig) -> None:
    web = on("a", pod("web", ips=("10.0.0.1",), role="app"))
    rig.index.apply(web)
    _, subscription = rig.feed.subscribe("a", buffer=10)
    rig.index.apply(dataclasses.replace(web, ips=("10.0.0.9",)))
    assert drained(subscription) == [("removed_ip", "10.0.0.1"), ("entry", "web")]


async def test_namespace_and_credentials_changes_are_pushed(rig: Rig) -> None:
    rig.index.apply(on("a", pod("web", ips=("10.0.0.1",), role="app")))
    entries, subscription = rig.feed.subscribe("a", buffer=10)
    assert not entries[0].HasField("credentials")
    key = POLICY.key_for(pod=pod(role="app"), permitted=".*")
    assert rig.fetched == [key]  # asked for, in the background
    assert key is not None
    now = datetime.now(UTC)
    issued = Credentials(access_key_id="ASIA1", secret_access_key="s", session_token="t",
                         expiration=now + timedelta(minutes=15), last_updated=now)
    rig.feed.credentials_stored(key, issued)
    update = subscription.take()
    assert update is not None and update[0].entry.credentials.access_key_id == "ASIA1"
    rig.namespaces["default"] = BASE + "other"
    rig.feed.namespace_changed("default")
    update = subscription.take()
    assert update is not None and update[0].entry.HasField("credentials_refusal")
    rig.feed.namespace_changed("elsewhere")
    assert subscription.take() is None


async def test_a_denial_is_one_event_per_decision(rig: Rig) -> None:
    rig.namespaces["default"] = BASE + "other"
    web = on("a", pod("web", ips=("10.0.0.1",), role="app"))
    rig.index.apply(web)
    assert rig.events.recorded == []  # nobody watches node a: nothing decided
    _, subscription = rig.feed.subscribe("a", buffer=10)
    assert [reason for _, reason, _ in rig.events.recorded] == ["KiamRoleForbidden"]
    rig.index.apply(dataclasses.replace(web, phase="Pending"))  # same decision
    assert len(rig.events.recorded) == 1
    rig.index.apply(dataclasses.replace(web, role="db"))  # another reason
    assert len(rig.events.recorded) == 2
    rig.index.apply(on("a", pod("plain", ips=("10.0.0.2",))))  # no role: not asking
    assert len(rig.events.recorded) == 2
    rig.feed.unsubscribe(subscription)


async def test_a_full_buffer_ends_only_that_subscription(rig: Rig) -> None:
    _, slow = rig.feed.subscribe("a", buffer=2)
    _, other = rig.feed.subscribe("a", buffer=10)
    for n in range(3):
        rig.index.apply(on("a", pod(f"p{n}", ips=(f"10.0.0.{n + 1}",))))
    assert slow.ended.done()
    code, reason = slow.ended.result()
    assert code is grpc.StatusCode.ABORTED and "fell 2 updates behind" in reason
    assert slow.take() is None
    assert [name for _, name in drained(other)] == ["p0", "p1", "p2"]
    rig.feed.end_all(grpc.StatusCode.UNAVAILABLE, "shutting down")
    assert other.ended.result() == (grpc.StatusCode.UNAVAILABLE, "shutting down")


async def test_an_answer_that_changes_with_time_is_evaluated_again_then(rig: Rig) -> None:
    clock = [1_800_000_000.0]
    feed = NodeFeed(pods=rig.index, permitted=rig.namespaces.get, policy=POLICY,
                    events=rig.events, session_refresh=300.0, wall_clock=lambda: clock[0])
    rig.index.feed = feed
    ends = datetime.fromtimestamp(clock[0] + 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rig.index.apply(on("a", pod("old", ips=("10.0.0.1",), role="x", deleting=ends)))
    rig.index.apply(on("a", pod("new", ips=("10.0.0.1",), role="y",
                                created="2026-06-01T00:00:00Z")))
    entries, subscription = feed.subscribe("a", buffer=10)
    assert entries[0].HasField("role_refusal")
    task = asyncio.create_task(feed.run())
    try:
        clock[0] += 7  # past the grace period and its margin
        feed._wake.set()  # the timer's sleep, cut short: the clock jumped
        async with asyncio.timeout(5):
            while not (updates := drained(subscription)):
                await subscription.wait(0.05)
        assert updates == [("removed_ip", "10.0.0.1"), ("entry", "new")]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class Synced:
    def __init__(self, synced: bool) -> None:
        self.synced = asyncio.Event()
        if synced:
            self.synced.set()


def service(rig: Rig, *, synced: bool = True, limit: int = 5) -> KiamNodeService:
    return KiamNodeService(feed=rig.feed, caches=(Synced(synced), Synced(True)),
                           stream_limit=limit, stream_buffer=10)


class StreamContext(FakeContext):
    def __init__(self) -> None:
        super().__init__(None)
        self.written: list[kiam_pb2.NodeUpdate] = []

    async def write(self, message: kiam_pb2.NodeUpdate) -> None:
        self.written.append(message)

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


@pytest.mark.parametrize(
    ("case", "code"),
    [("unsynced", grpc.StatusCode.UNAVAILABLE), ("draining", grpc.StatusCode.UNAVAILABLE),
     ("empty", grpc.StatusCode.INVALID_ARGUMENT), ("limit", grpc.StatusCode.RESOURCE_EXHAUSTED)],
)
async def test_refusals_before_any_message(rig: Rig, case: str, code: grpc.StatusCode) -> None:
    servicer = service(rig, synced=case != "unsynced", limit=0 if case == "limit" else 5)
    if case == "draining":
        servicer.drain()
    context = StreamContext()
    request = kiam_pb2.WatchNodeRequest(node_name="" if case == "empty" else "a")
    with pytest.raises(Aborted) as caught:
        await servicer.WatchNode(request, context)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert context.written == []
    assert rig.feed.watched() == 0


async def test_stale_credentials_are_forgotten(rig: Rig) -> None:
    now = datetime.now(UTC)
    for n in range(256):
        key = POLICY.key_for(pod=pod(role=f"r{n}"), permitted=".*")
        assert key is not None
        left = timedelta(minutes=15 if n % 2 else 1)  # 1 minute: within the refresh window
        rig.feed.credentials_stored(key, Credentials(
            access_key_id=f"ASIA{n}", secret_access_key="s", session_token="t",
            expiration=now + left, last_updated=now))
    assert len(rig.feed._credentials) == 128
