"""Service-account tokens in the emulator (kiam_testbed.kube.tokens), driven by
kubernetes_asyncio's typed clients as a real apiserver would be: TokenRequest bound to a
pod, TokenReview for an audience, and every way a token stops being valid."""

from __future__ import annotations

from typing import Any

import jwt
import orjson
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kiam_testbed.kube import KubeEmulator
from kiam_testbed.kube.tokens import TokenAuthority


@pytest.fixture
def kube_auth(kube_api_client: client.ApiClient) -> client.AuthenticationV1Api:
    return client.AuthenticationV1Api(kube_api_client)


async def _request(core: client.CoreV1Api, pod: dict[str, Any], *, audiences: list[str],
                   seconds: int = 3600) -> str:
    meta = pod["metadata"]
    answer = await core.create_namespaced_service_account_token(
        "default", meta["namespace"],
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=audiences, expiration_seconds=seconds,
            bound_object_ref=client.V1BoundObjectReference(
                kind="Pod", api_version="v1", name=meta["name"], uid=meta["uid"]))))
    token: str = answer.status.token
    return token


async def _review(auth: client.AuthenticationV1Api, token: str,
                  audiences: list[str]) -> client.V1TokenReviewStatus:
    review = await auth.create_token_review(client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token=token, audiences=audiences)))
    return review.status


async def test_a_bound_token_is_reviewed_with_its_pod(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api,
    kube_auth: client.AuthenticationV1Api,
) -> None:
    kube_emulator.create_service_account("team")
    pod = kube_emulator.create_pod("team", "web", ip="10.1.0.5")
    token = await _request(kube_core, pod, audiences=["kiam"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:team:default"
    assert claims["aud"] == ["kiam"]
    assert claims["kubernetes.io"]["pod"] == {"name": "web", "uid": pod["metadata"]["uid"]}
    assert claims["exp"] - claims["iat"] == 3600
    status = await _review(kube_auth, token, ["kiam"])
    assert status.authenticated is True
    assert status.audiences == ["kiam"]
    assert status.user.username == "system:serviceaccount:team:default"
    assert status.user.extra["authentication.kubernetes.io/pod-name"] == ["web"]
    assert status.user.extra["authentication.kubernetes.io/pod-uid"] == [pod["metadata"]["uid"]]
    # the hook gives the same kind of token, as the kubelet would get it
    assert (await _review(kube_auth, kube_emulator.request_token("team", "web"),
                          ["kiam"])).authenticated


async def test_refusals_say_why(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api,
    kube_auth: client.AuthenticationV1Api,
) -> None:
    kube_emulator.create_service_account("team")
    pod = kube_emulator.create_pod("team", "web", ip="10.1.0.5")
    token = await _request(kube_core, pod, audiences=["kiam"])
    other = await _review(kube_auth, token, ["sts.amazonaws.com"])
    assert (other.authenticated, "audiences" in other.error) == (False, True)
    for junk in ("junk", token[:-4] + "AAAA",
                 TokenAuthority().request_token(
                     namespace="team", service_account=kube_emulator.get(
                         "serviceaccounts", "team", "default"),
                     body={"spec": {"audiences": ["kiam"]}},
                     pods=lambda ns, name: None)["status"]["token"]):
        refused = await _review(kube_auth, junk, ["kiam"])
        assert refused.authenticated is False
        assert "invalid bearer token" in refused.error
    kube_emulator.delete_pod("team", "web")
    # terminating, inside its grace period: the token still holds, as in the apiserver
    assert (await _review(kube_auth, token, ["kiam"])).authenticated is True
    kube_emulator.finalise_pod("team", "web")
    gone = await _review(kube_auth, token, ["kiam"])
    assert (gone.authenticated, "deleted" in gone.error) == (False, True)
    # the same name again is another pod: the old token does not become valid
    kube_emulator.create_pod("team", "web", ip="10.1.0.5")
    again = await _review(kube_auth, token, ["kiam"])
    assert (again.authenticated, "uid mismatch" in again.error) == (False, True)


async def test_expiry_is_checked() -> None:
    now = [1_000_000.0]
    authority = TokenAuthority(clock=lambda: now[0])
    account = {"metadata": {"name": "default", "uid": "sa-1"}}
    pod = {"metadata": {"name": "web", "uid": "pod-1"}}
    answer = authority.request_token(
        namespace="team", service_account=account, pods=lambda ns, name: pod,
        body={"spec": {"audiences": ["kiam"], "expirationSeconds": 600,
                       "boundObjectRef": {"kind": "Pod", "name": "web"}}})
    token = answer["status"]["token"]
    assert answer["status"]["expirationTimestamp"] == "1970-01-12T13:56:40Z"

    def status() -> dict[str, Any]:
        review = authority.review({"spec": {"token": token, "audiences": ["kiam"]}},
                                  service_accounts=lambda ns, name: account,
                                  pods=lambda ns, name: pod)
        result: dict[str, Any] = review["status"]
        return result

    assert status()["authenticated"] is True
    now[0] += 601
    assert status() == {"authenticated": False, "user": {},
                        "error": "[invalid bearer token, service account token has expired]"}


async def test_token_requests_are_validated(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    pod = kube_emulator.create_pod("team", "web", ip="10.1.0.5")
    with pytest.raises(ApiException) as missing:
        await _request(kube_core, pod, audiences=["kiam"])
    assert missing.value.status == 404
    assert orjson.loads(missing.value.body)["message"] == 'serviceaccounts "default" not found'
    kube_emulator.create_service_account("team")
    with pytest.raises(ApiException) as short:
        await _request(kube_core, pod, audiences=["kiam"], seconds=60)
    assert short.value.status == 422
    assert "less than 10 minutes" in orjson.loads(short.value.body)["message"]
    stale = {"metadata": {**pod["metadata"], "uid": "not-the-uid"}}
    with pytest.raises(ApiException) as conflict:
        await _request(kube_core, stale, audiences=["kiam"])
    assert conflict.value.status == 409


async def test_service_accounts_are_a_resource(
    kube_emulator: KubeEmulator, kube_core: client.CoreV1Api
) -> None:
    kube_emulator.create_namespace("team")
    await kube_core.create_namespaced_service_account(
        "team", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="builder")))
    listed = await kube_core.list_namespaced_service_account("team")
    assert [a.metadata.name for a in listed.items] == ["builder"]
    assert (await kube_core.read_namespaced_service_account("builder", "team")).metadata.uid
