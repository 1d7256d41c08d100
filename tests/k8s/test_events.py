"""EventRecorder against the Kubernetes API emulator: Events posted, repeats aggregated."""

from __future__ import annotations

from typing import cast

from prometheus_client import REGISTRY

from kiam.k8s.client import KubeClient
from kiam.k8s.events import CREDENTIAL_ERROR, ROLE_FORBIDDEN, EventRecorder
from kiam.k8s.model import pod_info_from_json
from kiam_testbed.kube import KubeEmulator
from tests.k8s.conftest import running
from tests.k8s.factories import pod

EVENTS_PATH = "/api/v1/namespaces/team/events"


async def test_warning_is_posted_on_the_pod(kube: KubeEmulator, client: KubeClient) -> None:
    web = pod_info_from_json(kube.create_pod("team", "web", ip="10.2.0.1"))
    recorder = EventRecorder(client, host="server-1")
    async with running(recorder.run()):
        recorder.warning(web, ROLE_FORBIDDEN, "role b is not permitted in namespace team")
        await kube.wait_for(lambda: len(kube.events("team")) == 1)
    (event,) = kube.events("team")
    assert event["type"] == "Warning"
    assert event["reason"] == ROLE_FORBIDDEN
    assert event["message"] == "role b is not permitted in namespace team"
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "team",
        "name": "web",
        "uid": web.uid,
    }
    assert event["source"] == {"component": "kiam", "host": "server-1"}
    assert event["count"] == 1
    assert event["firstTimestamp"] == event["lastTimestamp"]
    assert event["metadata"]["name"].startswith("web.")


async def test_repeats_are_aggregated(kube: KubeEmulator, client: KubeClient) -> None:
    web = pod_info_from_json(kube.create_pod("team", "web", ip="10.2.0.1"))
    recorder = EventRecorder(client)
    async with running(recorder.run()):
        recorder.warning(web, ROLE_FORBIDDEN, "denied")
        await kube.wait_for(lambda: len(kube.events("team")) == 1)
        recorder.warning(web, ROLE_FORBIDDEN, "denied")
        await kube.wait_for(lambda: kube.events("team")[0]["count"] == 2)
        recorder.warning(web, ROLE_FORBIDDEN, "denied")
        recorder.warning(web, ROLE_FORBIDDEN, "denied")
        await kube.wait_for(lambda: kube.events("team")[0]["count"] == 4)
        recorder.warning(web, CREDENTIAL_ERROR, "sts failed")
        await kube.wait_for(lambda: len(kube.events("team")) == 2)
    assert kube.request_count("POST", EVENTS_PATH) == 2
    assert kube.request_count("PATCH", EVENTS_PATH + "/.*") >= 2
    assert {e["reason"]: e["count"] for e in kube.events("team")} == {
        ROLE_FORBIDDEN: 4,
        CREDENTIAL_ERROR: 1,
    }


async def test_deleted_event_is_recreated(kube: KubeEmulator, client: KubeClient) -> None:
    web = pod_info_from_json(kube.create_pod("team", "web", ip="10.2.0.1"))
    recorder = EventRecorder(client)
    async with running(recorder.run()):
        recorder.warning(web, ROLE_FORBIDDEN, "denied")
        await kube.wait_for(lambda: len(kube.events("team")) == 1)
        kube.delete("events", "team", kube.events("team")[0]["metadata"]["name"])
        recorder.warning(web, ROLE_FORBIDDEN, "denied")
        await kube.wait_for(lambda: len(kube.events("team")) == 1)
    assert kube.request_count("POST", EVENTS_PATH) == 2


async def test_failures_are_counted_and_the_recorder_carries_on(
    kube: KubeEmulator, client: KubeClient
) -> None:
    web = pod_info_from_json(kube.create_pod("team", "web", ip="10.2.0.1"))
    before = REGISTRY.get_sample_value("kiam_k8s_event_errors_total") or 0.0
    kube.inject_fault(method="POST", path=EVENTS_PATH, status=403)
    recorder = EventRecorder(client)
    async with running(recorder.run()):
        recorder.warning(web, ROLE_FORBIDDEN, "first")
        await kube.wait_for(lambda: kube.request_count("POST", EVENTS_PATH) == 1)
        recorder.warning(web, ROLE_FORBIDDEN, "second")
        await kube.wait_for(lambda: len(kube.events("team")) == 1)
    assert kube.events("team")[0]["message"] == "second"
    assert (REGISTRY.get_sample_value("kiam_k8s_event_errors_total") or 0.0) - before == 1


def test_warning_never_blocks_and_drops_when_full() -> None:
    # the recorder is not running: nothing drains the buffer
    recorder = EventRecorder(cast(KubeClient, None), buffer=2)
    before = REGISTRY.get_sample_value("kiam_k8s_dropped_events_total") or 0.0
    for i in range(4):
        recorder.warning(pod(f"p{i}"), ROLE_FORBIDDEN, "denied")
    recorder.warning(pod("p0"), ROLE_FORBIDDEN, "denied")  # folded into the pending one
    after = REGISTRY.get_sample_value("kiam_k8s_dropped_events_total") or 0.0
    assert after - before == 2
