"""Prefetch and keys-in-use decided over in-memory caches (no sockets)."""

from __future__ import annotations

import asyncio
import contextlib

from kiam.aws.arn import RoleArn
from kiam.aws.credentials import CredentialKey
from kiam.k8s.model import PodInfo
from kiam.server.policy import Policy
from kiam.server.prefetch import NAMESPACE_WAIT, keys_in_use, permitted_expression, prefetch
from tests.k8s.factories import pod
from tests.server.fakes import FakeNamespaces

BASE = "arn:aws:iam::123456789012:role/"
POLICY = Policy(base_arn=BASE)


def key(role: str, session: str = "kiam-kiam", external_id: str = "") -> CredentialKey:
    return CredentialKey(
        role_arn=RoleArn(BASE + role), session_name=session, external_id=external_id
    )


# ---------------------------------------------------------------- keys in use


def test_keys_of_served_pods_each_identity_decided_once() -> None:
    namespaces = FakeNamespaces({"team": ".*", "closed": ""})
    pods = [
        pod("a1", namespace="team", role="app"),
        pod("a2", namespace="team", role="app"),
        pod("b", namespace="team", role="app", session_name="batch"),
        pod("c", namespace="team", role="app", external_id="ext-1"),
        pod("none", namespace="team"),
        pod("host", namespace="team", role="app", host_network=True),
        pod("denied", namespace="closed", role="app"),
        pod("unknown", namespace="elsewhere", role="app"),
    ]
    keys = keys_in_use(pods, permitted=namespaces.permitted, policy=POLICY)
    assert keys == {key("app"), key("app", "kiam-batch"), key("app", external_id="ext-1")}
    # a1 and a2 share their credential identity: one decision for both
    assert namespaces.lookups.count("team") == 3


def test_no_pods_no_keys() -> None:
    assert keys_in_use([], permitted=FakeNamespaces({}).permitted, policy=POLICY) == set()


# ---------------------------------------------------------------- the namespace wait


async def test_a_known_namespace_is_answered_without_waiting() -> None:
    namespaces = FakeNamespaces({"team": ".*"})
    assert await permitted_expression(namespaces, "team") == ".*"
    assert namespaces.waits == []


async def test_an_unknown_namespace_is_waited_for_at_most_the_namespace_wait() -> None:
    namespaces = FakeNamespaces({}, arriving={"new": "x"})
    assert await permitted_expression(namespaces, "new", budget=30.0) == "x"
    assert await permitted_expression(namespaces, "never", budget=0.25) is None
    assert namespaces.waits == [NAMESPACE_WAIT, 0.25]


async def test_no_budget_left_means_no_wait() -> None:
    namespaces = FakeNamespaces({}, arriving={"new": "x"})
    assert await permitted_expression(namespaces, "new", budget=0.0) is None
    assert namespaces.waits == []


# ---------------------------------------------------------------- prefetch


async def _prefetched(announced: list[PodInfo], namespaces: FakeNamespaces) -> list[CredentialKey]:
    """What prefetch fetches for ``announced``, then a last pod that marks the end
    (its namespace ``team`` must permit every role)."""
    queue: asyncio.Queue[PodInfo] = asyncio.Queue()
    synced = asyncio.Event()
    done = asyncio.Event()
    fetched: list[CredentialKey] = []

    def fetch(fetched_key: CredentialKey) -> None:
        if fetched_key == key("end-marker"):
            done.set()
        else:
            fetched.append(fetched_key)

    for item in [*announced, pod("end", namespace="team", role="end-marker")]:
        queue.put_nowait(item)
    task = asyncio.create_task(
        prefetch(
            announcements=queue, namespaces=namespaces, synced=synced, policy=POLICY, fetch=fetch
        )
    )
    try:
        await asyncio.sleep(0)
        assert queue.qsize() == len(announced) + 1, "prefetch began before namespaces synced"
        synced.set()
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return fetched


async def test_announced_pods_are_prefetched_when_the_policy_serves_them() -> None:
    namespaces = FakeNamespaces({"team": ".*", "closed": ""}, arriving={"late": ".*"})
    fetched = await _prefetched(
        [
            pod("a", namespace="team", role="app"),
            pod("denied", namespace="closed", role="app"),
            pod("trailing", namespace="late", role="other"),
        ],
        namespaces,
    )
    assert fetched == [key("app"), key("other")]
    assert namespaces.waits == [NAMESPACE_WAIT]


async def test_a_pod_without_a_role_is_not_prefetched() -> None:
    fetched = await _prefetched([pod("p", namespace="team")], FakeNamespaces({"team": ".*"}))
    assert fetched == []


def test_pods_without_a_key_do_not_hide_the_pods_after_them() -> None:
    namespaces = FakeNamespaces({"team": ".*"})
    pods = [
        pod("host", namespace="team", role="app", host_network=True),
        pod("none", namespace="team"),
        pod("web", namespace="team", role="web"),
    ]
    assert keys_in_use(pods, permitted=namespaces.permitted, policy=POLICY) == {key("web")}
