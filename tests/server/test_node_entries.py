"""The node replica's entries (kiam/server/node_entries.py): pure, no sockets; and the
same state answered by KiamService, which an entry must agree with."""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
import pytest

from kiam.aws.credentials import CredentialKey, Credentials
from kiam.k8s.model import PodInfo
from kiam.k8s.ownership import GRACE_MARGIN, owner_of_ip
from kiam.server.node_entries import Evaluation, credentials_message, evaluate
from kiam.server.policy import Policy
from kiam.server.service import KiamService
from kiam.wire import kiam_pb2
from tests.k8s.factories import pod
from tests.server.fakes import Aborted, FakeContext, FakeEvents, FakeNamespaces

BASE = "arn:aws:iam::123456789012:role/"
POLICY = Policy(base_arn=BASE)
NOW = 1_800_000_000.0
REFRESH = 300.0
IP = "10.0.0.1"
NAMESPACES = {"team": BASE + ".*", "locked": BASE + "other", "bare": ""}


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def creds(expires: float, key_id: str = "ASIAFRESH") -> Credentials:
    return Credentials(
        access_key_id=key_id,
        secret_access_key="secret",
        session_token="token",
        expiration=datetime.fromtimestamp(expires, UTC),
        last_updated=datetime.fromtimestamp(expires - 900, UTC),
    )


def key(role: str) -> CredentialKey:
    return POLICY.key_for(pod=pod(role=role, namespace="team"), permitted=".*")  # type: ignore[return-value]


def run(
    claimants: Sequence[PodInfo],
    *,
    cached: dict[CredentialKey, Credentials] | None = None,
    now: float = NOW,
) -> Evaluation:
    store = cached or {}
    return evaluate(
        IP,
        claimants,
        permitted=NAMESPACES.get,
        policy=POLICY,
        cached=store.get,
        session_refresh=REFRESH,
        now=now,
    )


def test_nobody_owns_the_ip_no_entry() -> None:
    assert run([]).entry is None
    assert run([pod(phase="Succeeded", role="app")]).entry is None


def test_owner_with_a_role_and_no_credentials_yet_says_ask_the_server() -> None:
    result = run([pod("web", namespace="team", role="path/app")])
    assert result.entry == kiam_pb2.NodeEntry(
        ip=IP, pod_namespace="team", pod_name="web", pod_uid="uid-team-web", role="app"
    )
    assert result.key == key("path/app")
    assert result.revisit_at is None


def test_cached_credentials_are_carried_until_they_fall_within_the_refresh_window() -> None:
    fresh = creds(NOW + 900)
    result = run([pod(namespace="team", role="app")], cached={key("app"): fresh})
    assert result.entry is not None
    assert result.entry.credentials == credentials_message(fresh)
    assert result.revisit_at == NOW + 900 - REFRESH
    later = run([pod(namespace="team", role="app")], cached={key("app"): fresh},
                now=NOW + 900 - REFRESH)
    assert later.entry is not None
    assert not later.entry.HasField("credentials")
    assert not later.entry.HasField("credentials_refusal")


def test_forbidden_by_the_namespace_carries_the_rpcs_refusal() -> None:
    result = run([pod("api", namespace="locked", role="app")])
    assert result.entry is not None
    refusal = result.entry.credentials_refusal
    assert refusal.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert refusal.message == "forbidden by policy"
    assert "does not permit" in refusal.reason
    assert result.denial == refusal.reason
    assert not result.entry.HasField("role_refusal")


def test_unknown_namespace_says_ask_the_server() -> None:
    result = run([pod(namespace="elsewhere", role="app")])
    assert result.entry is not None
    assert result.entry.role == "app"
    assert not result.entry.HasField("credentials_refusal")
    assert result.denial is None


def test_ambiguous_ip_refuses_both_and_names_no_pod() -> None:
    result = run([pod("x", namespace="team", role="a"), pod("y", namespace="team", role="b")])
    assert result.entry is not None
    assert result.entry.pod_name == ""
    assert result.entry.role_refusal == result.entry.credentials_refusal
    assert result.entry.role_refusal.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "team/x" in result.entry.role_refusal.message
    assert result.entry.role_refusal.reason == ""  # the message is the reason: no trailer


def test_the_end_of_a_grace_period_is_a_moment_to_evaluate_again() -> None:
    ends = NOW + 30
    old = pod("old", namespace="team", role="a", deleting=stamp(ends), created=stamp(NOW - 99))
    new = pod("new", namespace="team", role="b", created=stamp(NOW))
    during = run([old, new])
    assert during.entry is not None and during.entry.HasField("role_refusal")
    assert during.revisit_at == ends + GRACE_MARGIN
    after = run([old, new], now=ends + GRACE_MARGIN)
    assert after.entry is not None and after.entry.pod_name == "new"
    assert after.revisit_at is None


# ------------------------------------------------ agreement with KiamService


class ClaimantPods:
    """The pod cache's lookup over one IP's claimants, with the ownership rule."""

    def __init__(self, claimants: Sequence[PodInfo]) -> None:
        import asyncio

        self.synced = asyncio.Event()
        self.synced.set()
        self.claimants = list(claimants)

    def find_by_ip(self, ip: str) -> PodInfo | None:
        return owner_of_ip(self.claimants, ip=ip)

    async def wait_for_ip(self, ip: str, *, timeout: float) -> PodInfo | None:  # noqa: ASYNC109
        return self.find_by_ip(ip)


class CachedOrFetched:
    """The cache's ``get``: the stored credentials while fresh, else a fetch."""

    def __init__(self, stored: dict[CredentialKey, Credentials]) -> None:
        self.stored = stored

    async def get(self, key: CredentialKey) -> Credentials:
        held = self.stored.get(key)
        if held is not None and held.expiration.timestamp() - time.time() > REFRESH:
            return held
        return creds(time.time() + 900, key_id="ASIAFETCHED")


def _variants() -> list[PodInfo]:
    """Claimants as they come: roles valid, bare, invalid and none; namespaces that
    permit, forbid, say nothing or are unknown; finished; terminating (grace over,
    grace running); hostNetwork; an external ID STS would refuse."""
    now = time.time()
    out: list[PodInfo] = []
    for n, (namespace, role, extra) in enumerate(itertools.product(
        ("team", "locked", "bare", "elsewhere"),
        ("app", "other", "", "arn:aws:iam::123456789012:user/x"),
        ("running", "finished", "expired", "terminating", "host", "bad-external-id"),
    )):
        variant = pod(f"p{n}", namespace=namespace, role=role, created=stamp(now - n))
        if extra == "finished":
            variant = dataclasses.replace(variant, phase="Succeeded")
        elif extra == "expired":
            variant = dataclasses.replace(variant, deletion_timestamp=stamp(now - 3600))
        elif extra == "terminating":
            variant = dataclasses.replace(variant, deletion_timestamp=stamp(now + 3600))
        elif extra == "host":
            variant = dataclasses.replace(variant, host_network=True)
        elif extra == "bad-external-id":
            variant = dataclasses.replace(variant, external_id="x")
        out.append(dataclasses.replace(variant, ips=(IP,)))
    return out


async def _outcome(call: object) -> tuple[str, object]:
    try:
        answer = await call  # type: ignore[misc]
    except Aborted as exc:
        return "refused", (exc.code.value[0], exc.details, exc.reason)
    return "answered", answer


def _refused(refusal: kiam_pb2.Refusal) -> tuple[str, object]:
    # what the RPC's reason reads as: beside the fixed message, or the message itself
    return "refused", (refusal.code, refusal.message, refusal.reason or refusal.message)


async def test_an_entry_agrees_with_what_kiam_service_answers() -> None:
    variants = _variants()
    rng = random.Random(11)
    cases = [[v] for v in variants] + [list(pair) for pair in itertools.combinations(
        rng.sample(variants, 40), 2)] + [rng.sample(variants, rng.randint(3, 5))
                                          for _ in range(300)]
    keys = {key(role) for role in ("app", "other")}
    compared = {"no entry": 0, "ambiguous": 0, "forbidden": 0, "credentials": 0, "ask": 0}
    for claimants in cases:
        stored = {k: creds(time.time() + rng.choice((900, 100)), key_id="ASIACACHED")
                  for k in keys if rng.random() < 0.7}
        now = time.time()
        result = evaluate(IP, claimants, permitted=NAMESPACES.get, policy=POLICY,
                          cached=stored.get, session_refresh=REFRESH, now=now)
        service = KiamService(pods=ClaimantPods(claimants), namespaces=FakeNamespaces(NAMESPACES),
                              events=FakeEvents(), credentials=CachedOrFetched(stored),
                              policy=POLICY, default_wait=0.0)
        role = await _outcome(service.GetPodRole(
            kiam_pb2.GetPodRoleRequest(ip=IP), FakeContext(0.0)))
        entry = result.entry
        if entry is None:
            assert role[0] == "refused" and role[1][0] == grpc.StatusCode.NOT_FOUND.value[0]  # type: ignore[index]
            compared["no entry"] += 1
            continue
        if entry.HasField("role_refusal"):
            assert role == _refused(entry.role_refusal), claimants
        else:
            assert role == ("answered", kiam_pb2.Role(name=entry.role)), claimants
        asked = await _outcome(service.GetPodCredentials(
            kiam_pb2.GetPodCredentialsRequest(ip=IP, role=entry.role), FakeContext(0.0)))
        if entry.HasField("credentials_refusal"):
            assert asked == _refused(entry.credentials_refusal), claimants
            compared["ambiguous" if entry.HasField("role_refusal") else "forbidden"] += 1
        elif entry.HasField("credentials"):
            assert asked == ("answered", entry.credentials), claimants
            compared["credentials"] += 1
        else:
            # ask the server: a fetch, or the wait for an unknown namespace (then denied)
            assert asked[0] == "answered" or entry.pod_namespace not in NAMESPACES, claimants
            compared["ask"] += 1
    assert all(count > 5 for count in compared.values()), compared


@pytest.mark.parametrize("refresh", [0.0, REFRESH])
def test_credentials_exactly_at_the_refresh_edge_are_not_carried(refresh: float) -> None:
    stored = {key("app"): creds(NOW + refresh)}
    result = evaluate(IP, [pod(namespace="team", role="app")], permitted=NAMESPACES.get,
                      policy=POLICY, cached=stored.get, session_refresh=refresh, now=NOW)
    assert result.entry is not None and not result.entry.HasField("credentials")
