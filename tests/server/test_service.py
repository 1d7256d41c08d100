"""KiamService against in-memory stand-ins for the caches: codes, waits, events, logs.

No sockets: the gRPC context is a small fake whose ``abort`` raises like grpc.aio's.
The real process over real gRPC is covered in test_process.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from kiam.aws.credentials import CredentialKey, Credentials
from kiam.aws.errors import StsAccessDenied
from kiam.k8s.errors import AmbiguousPodIP
from kiam.k8s.model import PodInfo
from kiam.server.policy import Policy
from kiam.server.service import KiamService
from kiam.wire import kiam_pb2
from tests.k8s.factories import pod as running_pod
from tests.server.fakes import Aborted, FakeContext, FakeEvents, FakeNamespaces

BASE = "arn:aws:iam::123456789012:role/"
SECRET = "secret-never-logged"
TOKEN = "token-never-logged"
ISSUED = datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)


def make_pod(name: str = "web-1", ip: str = "10.0.0.5", role: str = "app") -> PodInfo:
    return running_pod(name, namespace="team", uid=f"uid-{name}", ips=(ip,), role=role)


class FakePods:
    def __init__(self) -> None:
        self.synced = asyncio.Event()
        self.synced.set()
        self.by_ip: dict[str, PodInfo] = {}
        self.ambiguous: set[str] = set()
        self.arrived = asyncio.Event()
        self.waits: list[float] = []
        self.waiting = asyncio.Event()

    def add(self, pod: PodInfo) -> None:
        for ip in pod.ips:
            self.by_ip[ip] = pod
        self.arrived.set()

    def find_by_ip(self, ip: str) -> PodInfo | None:
        if ip in self.ambiguous:
            raise AmbiguousPodIP(("team/a", "team/b"), ip=ip)
        return self.by_ip.get(ip)

    async def wait_for_ip(self, ip: str, *, timeout: float) -> PodInfo | None:  # noqa: ASYNC109
        self.waits.append(timeout)
        self.waiting.set()
        try:
            async with asyncio.timeout(timeout):
                while (pod := self.find_by_ip(ip)) is None:
                    self.arrived.clear()
                    await self.arrived.wait()
                return pod
        except TimeoutError:
            return None


class FakeCredentials:
    def __init__(self) -> None:
        self.keys: list[CredentialKey] = []
        self.error: Exception | None = None
        self.delay = 0.0

    async def get(self, key: CredentialKey) -> Credentials:
        self.keys.append(key)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return Credentials(
            access_key_id="ASIAEXAMPLE",
            secret_access_key=SECRET,
            session_token=TOKEN,
            expiration=ISSUED + timedelta(minutes=15),
            last_updated=ISSUED,
        )


@dataclasses.dataclass
class Rig:
    service: KiamService
    pods: FakePods
    namespaces: FakeNamespaces
    events: FakeEvents
    credentials: FakeCredentials


@pytest.fixture
def rig() -> Rig:
    pods = FakePods()
    namespaces = FakeNamespaces({"team": BASE + ".*"})
    events = FakeEvents()
    credentials = FakeCredentials()
    service = KiamService(
        pods=pods,
        namespaces=namespaces,
        events=events,
        credentials=credentials,
        policy=Policy(base_arn=BASE),
        default_wait=0.05,
    )
    return Rig(service, pods, namespaces, events, credentials)


def ctx(remaining: float | None = 2.0) -> Any:
    return FakeContext(remaining)


async def role(rig: Rig, ip: str, remaining: float | None = 2.0) -> str:
    answer = await rig.service.GetPodRole(kiam_pb2.GetPodRoleRequest(ip=ip), ctx(remaining))
    return answer.name


async def creds(rig: Rig, ip: str, role_name: str, remaining: float | None = 2.0) -> Any:
    request = kiam_pb2.GetPodCredentialsRequest(ip=ip, role=role_name)
    return await rig.service.GetPodCredentials(request, ctx(remaining))


async def test_role_is_the_resolved_name(rig: Rig) -> None:
    rig.pods.add(make_pod(role="path/app"))
    assert await role(rig, "10.0.0.5") == "app"


async def test_pod_without_role_answers_empty(rig: Rig) -> None:
    rig.pods.add(make_pod(role=""))
    assert await role(rig, "10.0.0.5") == ""


async def test_ipv4_mapped_address_is_normalised(rig: Rig) -> None:
    rig.pods.add(make_pod())
    assert await role(rig, "::ffff:10.0.0.5") == "app"


async def test_invalid_ip(rig: Rig) -> None:
    with pytest.raises(Aborted) as caught:
        await role(rig, "not-an-ip")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_unknown_ip_waits_within_the_deadline_then_not_found(rig: Rig) -> None:
    with pytest.raises(Aborted) as caught:
        await role(rig, "10.0.0.9", remaining=0.3)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.details == "no pod found"  # Go's text: its agents compare it
    assert "10.0.0.9" in caught.value.reason
    assert rig.pods.waits == [pytest.approx(0.2)]


async def test_without_deadline_the_default_wait_applies(rig: Rig) -> None:
    with pytest.raises(Aborted) as caught:
        await role(rig, "10.0.0.9", remaining=None)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert rig.pods.waits == [0.05]


async def test_deadline_already_spent_does_not_wait(rig: Rig) -> None:
    with pytest.raises(Aborted) as caught:
        await role(rig, "10.0.0.9", remaining=0.05)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert rig.pods.waits == []


async def test_pod_arriving_during_the_wait_is_answered(rig: Rig) -> None:
    request = asyncio.create_task(role(rig, "10.0.0.7", remaining=5.0))
    await rig.pods.waiting.wait()
    rig.pods.add(make_pod(ip="10.0.0.7"))
    assert await request == "app"


async def test_ambiguous_ip_is_failed_precondition(rig: Rig) -> None:
    rig.pods.ambiguous.add("10.0.0.5")
    with pytest.raises(Aborted) as caught:
        await creds(rig, "10.0.0.5", "app")
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "team/a" in caught.value.reason


@pytest.mark.parametrize("which", ["pods", "namespaces"])
async def test_unsynced_is_unavailable(rig: Rig, which: str) -> None:
    getattr(rig, which).synced.clear()
    rig.pods.add(make_pod())
    assert not rig.service.ready
    with pytest.raises(Aborted) as caught:
        await role(rig, "10.0.0.5")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(Aborted) as caught:
        await rig.service.GetHealth(kiam_pb2.GetHealthRequest(), ctx())
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


async def test_health_when_synced(rig: Rig) -> None:
    answer = await rig.service.GetHealth(kiam_pb2.GetHealthRequest(), ctx())
    assert answer.message == "ok"


async def test_draining_is_unavailable(rig: Rig) -> None:
    rig.pods.add(make_pod())
    rig.service.draining = True
    with pytest.raises(Aborted) as caught:
        await creds(rig, "10.0.0.5", "app")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in caught.value.reason


async def test_credentials_document(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.pods.add(make_pod())
    with caplog.at_level(logging.DEBUG):
        answer = await creds(rig, "10.0.0.5", "app")
    assert answer == kiam_pb2.Credentials(
        code="Success",
        type="AWS-HMAC",
        access_key_id="ASIAEXAMPLE",
        secret_access_key=SECRET,
        token=TOKEN,
        expiration="2026-01-01T00:15:00Z",
        last_updated="2026-01-01T00:00:00Z",
    )
    assert rig.credentials.keys == [
        CredentialKey(role_arn=BASE + "app", session_name="kiam-kiam")  # type: ignore[arg-type]
    ]
    issued = [r for r in caplog.records if r.getMessage() == "issued credentials"]
    assert len(issued) == 1
    fields = issued[0].fields  # type: ignore[attr-defined]
    assert fields["pod.namespace"] == "team"
    assert fields["pod.name"] == "web-1"
    assert fields["access.key.id"] == "ASIAEXAMPLE"
    assert SECRET not in caplog.text
    assert TOKEN not in caplog.text


async def test_wrong_role_is_denied_with_an_event(rig: Rig) -> None:
    rig.pods.add(make_pod())
    with pytest.raises(Aborted) as caught:
        await creds(rig, "10.0.0.5", "db")
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details == "forbidden by policy"  # Go's text: its agents compare it
    assert "team/web-1" in caught.value.reason
    assert rig.events.recorded == [("team/web-1", "KiamRoleForbidden", caught.value.reason)]
    assert rig.credentials.keys == []


async def test_namespace_forbidding_is_denied_with_an_event(rig: Rig) -> None:
    rig.namespaces.known["team"] = BASE + "other"
    rig.pods.add(make_pod())
    with pytest.raises(Aborted) as caught:
        await creds(rig, "10.0.0.5", "app")
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details == "forbidden by policy"
    assert "does not permit" in caught.value.reason
    assert [reason for _, reason, _ in rig.events.recorded] == ["KiamRoleForbidden"]


async def test_unknown_namespace_is_waited_for_briefly_then_denied(rig: Rig) -> None:
    rig.pods.add(dataclasses.replace(make_pod(), namespace="new"))
    with pytest.raises(Aborted) as caught:
        await creds(rig, "10.0.0.5", "app", remaining=0.5)
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert rig.namespaces.waits == [pytest.approx(0.4)]


async def test_sts_failure_is_internal_with_an_event(rig: Rig) -> None:
    rig.pods.add(make_pod())
    rig.credentials.error = StsAccessDenied("AccessDenied: not authorized", role_arn=BASE + "app")
    with pytest.raises(Aborted) as caught:
        await creds(rig, "10.0.0.5", "app")
    assert caught.value.code == grpc.StatusCode.INTERNAL
    assert "not authorized" in caught.value.reason
    assert [reason for _, reason, _ in rig.events.recorded] == ["KiamCredentialError"]


async def test_remembered_refusal_is_the_same_answer_without_an_event(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.pods.add(make_pod())
    error = StsAccessDenied("AccessDenied: not authorized", role_arn=BASE + "app")
    error.remembered = True
    rig.credentials.error = error
    with (
        caplog.at_level(logging.DEBUG, logger="kiam.server.service"),
        pytest.raises(Aborted) as caught,
    ):
        await creds(rig, "10.0.0.5", "app")
    assert caught.value.code == grpc.StatusCode.INTERNAL
    assert caught.value.reason == f"error fetching credentials for {BASE}app: {error}"
    assert rig.events.recorded == []
    assert [r.levelno for r in caplog.records if "not authorized" in r.getMessage()] == [
        logging.DEBUG
    ]


async def test_deadline_during_fetch(rig: Rig) -> None:
    rig.pods.add(make_pod())
    rig.credentials.delay = 10.0
    with pytest.raises(Aborted) as caught:
        await creds(rig, "10.0.0.5", "app", remaining=0.05)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
