"""TokenReviewer (kiam/k8s/token_review.py) against the emulator's TokenReview through a real
KubeClient, and its cache with an injected clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kiam.k8s.client import KubeClient
from kiam.k8s.errors import KubeUnavailable
from kiam.k8s.token_review import TokenIdentity, TokenRefused, TokenReviewer, identity_from_review
from kiam_testbed.kube import KubeEmulator


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pod_token(kube: KubeEmulator) -> tuple[dict[str, Any], str]:
    kube.create_service_account("team")
    pod = kube.create_pod("team", "web", ip="10.1.0.5")
    return pod, kube.request_token("team", "web", audiences=("kiam",))


async def test_a_pods_token_names_the_pod_and_is_kept(
    kube: KubeEmulator, client: KubeClient, clock: Clock, pod_token: tuple[dict[str, Any], str]
) -> None:
    pod, token = pod_token
    reviewer = TokenReviewer(client, audience="kiam", ttl=30, clock=clock)
    identity = await reviewer.review(token)
    assert identity == TokenIdentity(namespace="team", pod_name="web",
                                     pod_uid=pod["metadata"]["uid"], service_account="default")
    assert await reviewer.review(token) == identity
    assert kube.request_count("POST", "/apis/authentication.k8s.io/v1/tokenreviews") == 1
    clock.now += 31
    assert await reviewer.review(token) == identity
    assert kube.request_count("POST", "/apis/authentication.k8s.io/v1/tokenreviews") == 2


async def test_concurrent_reviews_of_one_token_make_one_call(
    kube: KubeEmulator, client: KubeClient, pod_token: tuple[dict[str, Any], str]
) -> None:
    _, token = pod_token
    kube.inject_fault(path="/tokenreviews", delay=0.2)
    reviewer = TokenReviewer(client, audience="kiam")
    first = asyncio.create_task(reviewer.review(token))
    await asyncio.sleep(0.05)
    first.cancel()  # a waiter giving up does not cancel the call the others wait for
    answers = await asyncio.gather(*(reviewer.review(token) for _ in range(5)))
    assert len(set(answers)) == 1
    assert reviewer.api_calls == 1


async def test_refusals_carry_the_reason_and_are_kept_briefly(
    kube: KubeEmulator, client: KubeClient, clock: Clock, pod_token: tuple[dict[str, Any], str]
) -> None:
    _, token = pod_token
    reviewer = TokenReviewer(client, audience="sts.amazonaws.com", refusal_ttl=5, clock=clock)
    with pytest.raises(TokenRefused, match=r"token refused by the API server: .*audiences"):
        await reviewer.review(token)
    with pytest.raises(TokenRefused):
        await reviewer.review(token)
    assert reviewer.api_calls == 1
    clock.now += 6
    with pytest.raises(TokenRefused):
        await reviewer.review(token)
    assert reviewer.api_calls == 2
    with pytest.raises(TokenRefused, match="empty token"):
        await reviewer.review("")
    with pytest.raises(TokenRefused, match="invalid bearer token"):
        await TokenReviewer(client, audience="kiam").review("junk")


async def test_a_token_not_bound_to_a_pod_is_refused(
    kube: KubeEmulator, client: KubeClient
) -> None:
    kube.create_service_account("team", "builder")
    answer = await client.post_json(
        "/api/v1/namespaces/team/serviceaccounts/builder/token",
        {"spec": {"audiences": ["kiam"]}})
    with pytest.raises(TokenRefused, match="not bound to a pod"):
        await TokenReviewer(client, audience="kiam").review(answer["status"]["token"])


async def test_a_deleted_pods_token_is_refused_once_the_cache_lets_go(
    kube: KubeEmulator, client: KubeClient, clock: Clock, pod_token: tuple[dict[str, Any], str]
) -> None:
    _, token = pod_token
    reviewer = TokenReviewer(client, audience="kiam", ttl=30, clock=clock)
    await reviewer.review(token)
    kube.delete_pod("team", "web")
    kube.finalise_pod("team", "web")
    clock.now += 31
    with pytest.raises(TokenRefused, match="deleted"):
        await reviewer.review(token)


async def test_an_unreachable_api_is_not_kept(
    kube: KubeEmulator, client: KubeClient, pod_token: tuple[dict[str, Any], str]
) -> None:
    _, token = pod_token
    kube.inject_fault(path="/tokenreviews", status=503)
    reviewer = TokenReviewer(client, audience="kiam")
    with pytest.raises(KubeUnavailable):
        await reviewer.review(token)
    assert (await reviewer.review(token)).pod_name == "web"


class Poster:
    def __init__(self) -> None:
        self.calls = 0

    async def post_json(self, path: str, body: Any) -> Any:
        self.calls += 1
        token = body["spec"]["token"]
        return {"status": {"authenticated": True, "user": {
            "username": "system:serviceaccount:team:default",
            "extra": {"authentication.kubernetes.io/pod-name": [token],
                      "authentication.kubernetes.io/pod-uid": ["uid-" + token]}}}}


async def test_the_cache_is_bounded_oldest_first() -> None:
    poster = Poster()
    reviewer = TokenReviewer(poster, audience="kiam", max_entries=3)
    for name in ("a", "b", "c", "d"):
        await reviewer.review(name)
    assert len(reviewer) == 3
    await reviewer.review("d")
    await reviewer.review("b")
    assert poster.calls == 4
    await reviewer.review("a")  # dropped first
    assert poster.calls == 5


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (None, "no status"),
        ({"authenticated": False, "error": "bad\nthing"},
         "token refused by the API server: bad thing"),
        ({"authenticated": True, "user": {"username": "alice"}}, "not a service account's"),
        ({"authenticated": True, "user": {"username": "system:serviceaccount:team:default",
                                          "extra": {}}}, "not bound to a pod"),
        ({"authenticated": True, "user": {
            "username": "system:serviceaccount:team:default",
            "extra": {"authentication.kubernetes.io/pod-name": ["a", "b"],
                      "authentication.kubernetes.io/pod-uid": ["u"]}}}, "not bound to a pod"),
    ],
    ids=["no-status", "refused", "a-user", "unbound", "two-pods"],
)
def test_reviews_that_do_not_name_one_pod_are_refused(status: Any, reason: str) -> None:
    with pytest.raises(TokenRefused, match=reason):
        identity_from_review({"status": status} if status is not None else {})
