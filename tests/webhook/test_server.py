"""The real ``kiam webhook`` process over HTTPS, as the API server calls it: AdmissionReview
v1 in, the same uid out, always allowed, a JSONPatch only for pods that ask for token
credentials (docs/token-credentials.md)."""

from __future__ import annotations

import base64
import io
import re
import signal
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import orjson
import pytest

from kiam.certs import CertPaths
from kiam.webhook.mutation import TOKEN_FILE_VARIABLE, URI_VARIABLE, VOLUME_NAME
from kiam_testbed.child import AsyncChild
from kiam_testbed.processes import start_kiam
from tests.webhook.test_mutation import pod


@pytest.fixture
async def webhook(tmp_path: Path, certs: CertPaths) -> AsyncIterator[tuple[AsyncChild, str]]:
    child = await start_kiam(
        ["webhook", "--listen-address", "127.0.0.1", "--port", "0", "--cert",
         str(certs.webhook_cert), "--key", str(certs.webhook_key), "--token-audience", "kiam",
         "--token-expiration", "20m"],
        log_dir=tmp_path,
    )
    async with child:
        line = await child.wait_for_log("listening on")
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, line
        yield child, f"https://127.0.0.1:{match.group(1)}"


@pytest.fixture
def tls(certs: CertPaths) -> ssl.SSLContext:
    # what the API server does with the configuration's caBundle
    return ssl.create_default_context(cafile=str(certs.ca))


def _review(obj: Any, uid: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid or str(uuid.uuid4()), "kind": {"kind": "Pod"},
                    "operation": "CREATE", "namespace": "team", "object": obj},
    }


async def _post(url: str, tls: ssl.SSLContext, body: bytes | io.BytesIO,
                content_type: str = "application/json") -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.post(
        f"{url}/mutate", data=body, headers={"Content-Type": content_type}, ssl=tls
    ) as response:
        return response.status, await response.read()


async def test_a_host_network_pod_is_patched(
    webhook: tuple[AsyncChild, str], tls: ssl.SSLContext
) -> None:
    child, url = webhook
    obj = pod(host_network=True, init_containers=1)
    status, body = await _post(url, tls, orjson.dumps(_review(obj, uid="u-1")))
    assert status == 200
    answer = orjson.loads(body)
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert (response["uid"], response["allowed"], response["patchType"]) == (
        "u-1", True, "JSONPatch")
    patched = jsonpatch.apply_patch(obj, orjson.loads(base64.b64decode(response["patch"])))
    token = patched["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    assert (patched["spec"]["volumes"][0]["name"], token["audience"]) == (VOLUME_NAME, "kiam")
    assert token["expirationSeconds"] == 1200
    for container in patched["spec"]["initContainers"] + patched["spec"]["containers"]:
        names = {item["name"] for item in container["env"]}
        assert {URI_VARIABLE, TOKEN_FILE_VARIABLE} <= names
    await child.wait_for_log("token credentials added", timeout=5)


@pytest.mark.parametrize(("obj", "logged"), [(pod(role=None), False), (pod(), True)],
                         ids=["no-role", "role-not-opted-in"])
async def test_other_pods_are_allowed_unchanged(
    webhook: tuple[AsyncChild, str], tls: ssl.SSLContext, obj: dict[str, Any], logged: bool
) -> None:
    child, url = webhook
    status, body = await _post(url, tls, orjson.dumps(_review(obj)))
    assert status == 200
    response = orjson.loads(body)["response"]
    assert response["allowed"] is True
    assert "patch" not in response
    # a pod with a role that gets no token says why; one without a role is not news.
    # A patched pod after it is logged, so by its line the first one's would be there.
    await _post(url, tls, orjson.dumps(_review(pod(host_network=True))))
    await child.wait_for_log("token credentials added", timeout=5)
    declined = [line for line in child.logs if "token credentials declined" in line]
    assert len(declined) == (1 if logged else 0), declined
    if logged:
        assert 'neither hostNetwork nor iam.amazonaws.com/token-credentials' in declined[0]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [(b"{not json", "application/json", 400), (b'{"request": {}}', "application/json", 400),
     (b"[]", "application/json", 400), (b"{}", "text/plain", 415)],
    ids=["not-json", "no-uid", "not-an-object", "wrong-type"],
)
async def test_malformed_reviews_are_refused_with_a_reason(
    webhook: tuple[AsyncChild, str], tls: ssl.SSLContext, body: bytes, content_type: str,
    status: int,
) -> None:
    child, url = webhook
    answer, text = await _post(url, tls, body, content_type)
    assert answer == status
    assert text.strip() and b"\n" not in text.strip()
    assert "Traceback" not in "".join(child.logs)


async def test_an_oversized_review_is_refused(
    webhook: tuple[AsyncChild, str], tls: ssl.SSLContext
) -> None:
    _, url = webhook
    status, _ = await _post(url, tls, io.BytesIO(b"{" + b" " * (4 * 1024 * 1024) + b"}"))
    assert status == 413


async def test_probes_and_a_clean_stop(
    webhook: tuple[AsyncChild, str], tls: ssl.SSLContext
) -> None:
    child, url = webhook
    async with aiohttp.ClientSession() as session, session.get(
        f"{url}/healthz", ssl=tls
    ) as response:
        assert (response.status, await response.text()) == (200, "ok")
    child.signal(signal.SIGTERM)
    assert await child.wait() == 0
