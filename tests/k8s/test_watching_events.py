"""ListWatch's handling of single watch events and its backoff policy (no sockets)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from kiam.k8s.client import KubeClient, error_for_status
from kiam.k8s.errors import KubeConflict, KubeError, KubeGone, KubeNotFound, KubeUnavailable
from kiam.k8s.model import PodInfo, pod_info_from_json
from kiam.k8s.watching import Backoff, ListWatch, WatchOptions
from tests.k8s.factories import pod_json


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def replace(self, items: list[PodInfo]) -> None:
        raise AssertionError("not listed in these tests")

    def event(self, kind: str, item: PodInfo) -> None:
        self.events.append((kind, item.name))


def _watch(recorder: Recorder) -> ListWatch[PodInfo]:
    lw = ListWatch(
        cast(KubeClient, None),
        path="/api/v1/pods",
        decode=pod_info_from_json,
        on_replace=recorder.replace,
        on_event=recorder.event,
        options=WatchOptions(resync_interval=0),
    )
    lw.resource_version = "5"
    return lw


def _event(kind: str, obj: dict[str, Any], rv: str) -> dict[str, Any]:
    obj["metadata"]["resourceVersion"] = rv
    return {"type": kind, "object": obj}


def test_events_are_applied_and_advance_the_version() -> None:
    recorder = Recorder()
    lw = _watch(recorder)
    lw._handle(_event("ADDED", pod_json("a"), "6"))
    lw._handle(_event("MODIFIED", pod_json("a"), "7"))
    lw._handle(_event("DELETED", pod_json("a"), "8"))
    assert recorder.events == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert lw.resource_version == "8"


def test_bookmark_only_advances_the_version() -> None:
    recorder = Recorder()
    lw = _watch(recorder)
    lw._handle(
        {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "42"}}}
    )
    assert recorder.events == []
    assert lw.resource_version == "42"


def test_unreadable_object_is_skipped_but_version_advances() -> None:
    recorder = Recorder()
    lw = _watch(recorder)
    lw._handle({"type": "ADDED", "object": {"metadata": {"resourceVersion": "9"}}})
    assert recorder.events == []
    assert lw.resource_version == "9"


def test_error_event_410_is_gone() -> None:
    lw = _watch(Recorder())
    status = {
        "kind": "Status",
        "status": "Failure",
        "code": 410,
        "reason": "Expired",
        "message": "too old resource version: 5 (10)",
    }
    with pytest.raises(KubeGone, match="too old"):
        lw._handle({"type": "ERROR", "object": status})
    assert lw.resource_version == "5"


def test_other_error_event_is_a_kube_error() -> None:
    lw = _watch(Recorder())
    with pytest.raises(KubeUnavailable):
        lw._handle({"type": "ERROR", "object": {"code": 500, "message": "etcd"}})


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (410, KubeGone),
        (404, KubeNotFound),
        (409, KubeConflict),
        (429, KubeUnavailable),
        (503, KubeUnavailable),
        (403, KubeError),
    ],
)
def test_status_translation(status: int, error: type[KubeError]) -> None:
    exc = error_for_status(status, "why")
    assert type(exc) is error
    assert exc.status == status
    assert "why" in str(exc)


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    backoff = Backoff(initial=0.1, maximum=10.0)
    for attempt, base in [(1, 0.1), (2, 0.2), (3, 0.4), (8, 10.0), (500, 10.0)]:
        for _ in range(20):
            assert base * 0.5 <= backoff.delay(attempt) <= base
