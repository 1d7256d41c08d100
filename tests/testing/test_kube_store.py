"""The emulator's store without HTTP: versions, registry rules, history, paging."""

from __future__ import annotations

from typing import Any

import pytest

from kiam_testbed.kube import NAMESPACES, PODS, KubeApiError
from kiam_testbed.kube.selectors import FieldSelector, LabelSelector, parse_field_selector
from kiam_testbed.kube.store import Store
from kiam_testbed.kube.watch import Watcher


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "i"}], **spec},
        "status": {"phase": "Running", "podIP": "10.9.9.9"},
    }


@pytest.fixture
def store() -> Store:
    s = Store(history_size=5)
    s.create(NAMESPACES, "", {"metadata": {"name": "ns"}})
    return s


def test_versions_are_one_global_increasing_counter(store: Store) -> None:
    first = store.create(PODS, "ns", _pod("a"))
    second = store.create(NAMESPACES, "", {"metadata": {"name": "other"}})
    third = store.update(PODS, "ns", "a", {"metadata": {"name": "a", "labels": {"x": "y"}},
                                           "spec": first.obj["spec"]})
    versions = [e.resource_version for e in (first, second, third)]
    assert versions == sorted(versions)
    assert len(set(versions)) == 3
    assert store.rv == third.resource_version


def test_create_sets_server_fields_and_ignores_status(store: Store) -> None:
    entry = store.create(PODS, "ns", _pod("a"))
    meta = entry.obj["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["namespace"] == "ns"
    assert entry.obj["status"]["phase"] == "Pending"
    assert "podIP" not in entry.obj["status"]
    assert entry.obj["spec"]["terminationGracePeriodSeconds"] == 30


def test_generate_name(store: Store) -> None:
    body = _pod("")
    body["metadata"] = {"generateName": "web-"}
    entry = store.create(PODS, "ns", body)
    assert entry.name.startswith("web-")
    assert len(entry.name) == len("web-") + 5


def test_create_in_missing_namespace_is_404(store: Store) -> None:
    with pytest.raises(KubeApiError) as caught:
        store.create(PODS, "nope", _pod("a"))
    assert caught.value.status["message"] == 'namespaces "nope" not found'


def test_stale_update_is_409_and_noop_update_keeps_the_version(store: Store) -> None:
    entry = store.create(PODS, "ns", _pod("a"))
    body = entry.full()
    same = store.update(PODS, "ns", "a", body)
    assert same.resource_version == entry.resource_version
    body["metadata"]["labels"] = {"changed": "yes"}
    store.update(PODS, "ns", "a", body)
    with pytest.raises(KubeApiError) as caught:
        store.update(PODS, "ns", "a", body)  # carries the old resourceVersion
    assert caught.value.code == 409
    assert caught.value.reason == "Conflict"


def test_pod_spec_is_immutable_through_the_api(store: Store) -> None:
    entry = store.create(PODS, "ns", _pod("a"))
    body = entry.full()
    body["spec"]["hostNetwork"] = True
    with pytest.raises(KubeApiError) as caught:
        store.update(PODS, "ns", "a", body)
    assert caught.value.code == 422
    body["spec"].pop("hostNetwork")
    body["spec"]["containers"][0]["image"] = "new"  # allowed
    assert store.update(PODS, "ns", "a", body).obj["spec"]["containers"][0]["image"] == "new"


def test_status_only_through_the_subresource(store: Store) -> None:
    store.create(PODS, "ns", _pod("a"))
    body = store.get(PODS, "ns", "a").full()
    body["status"] = {"phase": "Running", "podIP": "10.0.0.1"}
    body["metadata"]["labels"] = {"ignored": "by-status"}
    after = store.update(PODS, "ns", "a", body, subresource="status")
    assert after.obj["status"]["podIP"] == "10.0.0.1"
    assert after.obj["metadata"]["labels"] == {"app": "a"}
    body = after.full()
    body["status"] = {"phase": "Failed"}
    assert store.update(PODS, "ns", "a", body).obj["status"]["phase"] == "Running"


def test_unscheduled_pod_is_deleted_at_once(store: Store) -> None:
    store.create(PODS, "ns", _pod("a"))
    _, gone = store.delete(PODS, "ns", "a")
    assert gone
    assert store.find(PODS, "ns", "a") is None


def test_scheduled_pod_terminates_and_is_finalised(store: Store) -> None:
    store.create(PODS, "ns", _pod("a", nodeName="n1", terminationGracePeriodSeconds=7))
    entry, gone = store.delete(PODS, "ns", "a")
    assert not gone
    assert entry.obj["metadata"]["deletionGracePeriodSeconds"] == 7
    assert entry.obj["metadata"]["deletionTimestamp"].endswith("Z")
    again, _ = store.delete(PODS, "ns", "a", grace_period=30)  # longer: no change
    assert again.resource_version == entry.resource_version
    store.finalise_pod("ns", "a")
    assert store.find(PODS, "ns", "a") is None


def test_delete_preconditions(store: Store) -> None:
    store.create(PODS, "ns", _pod("a"))
    with pytest.raises(KubeApiError) as caught:
        store.delete(PODS, "ns", "a", preconditions={"uid": "other"})
    assert caught.value.code == 409
    assert "Precondition failed" in caught.value.status["message"]


def test_watch_history_is_bounded_and_older_versions_expire(store: Store) -> None:
    start = store.rv
    for i in range(10):
        store.create(PODS, "ns", _pod(f"p{i}"))
    with pytest.raises(KubeApiError) as caught:
        store.watch(PODS, namespace=None, resource_version=str(start), fields=FieldSelector(),
                    labels=LabelSelector(), bookmarks=False)
    assert caught.value.code == 410
    recent = store.watch(PODS, namespace=None, resource_version=str(store.rv - 2),
                         fields=FieldSelector(), labels=LabelSelector(), bookmarks=False)
    lines = recent.drain(current_rv=store.rv).splitlines()
    assert [line.count(b'"ADDED"') for line in lines] == [1, 1]
    store.unwatch(recent)
    assert store.watchers() == []


def test_paging_with_limit_and_continue(store: Store) -> None:
    store.create(NAMESPACES, "", {"metadata": {"name": "aa"}})
    for ns in ("aa", "ns"):
        for i in range(3):
            store.create(PODS, ns, _pod(f"p{i}"))
    seen: list[tuple[str, str]] = []
    token = ""
    pages = 0
    while True:
        page = store.list_entries(PODS, limit=2, continue_token=token)
        seen += [(e.namespace, e.name) for e in page.entries]
        pages += 1
        token = page.continue_token
        if not token:
            break
        assert page.remaining == 6 - len(seen)
    assert pages == 3
    assert seen == sorted(seen)
    assert len(seen) == 6
    first = store.list_entries(PODS, namespace="ns", limit=1)
    store.compact()  # the current version stays readable ...
    assert store.list_entries(PODS, continue_token=first.continue_token).entries
    store.create(PODS, "ns", _pod("later"))
    store.compact()  # ... until something newer is written and compacted
    with pytest.raises(KubeApiError) as caught:
        store.list_entries(PODS, namespace="ns", limit=1, continue_token=first.continue_token)
    assert caught.value.code == 410
    assert caught.value.reason == "Expired"


def test_watcher_applies_selector_transitions(store: Store) -> None:
    store.create(PODS, "ns", _pod("a", nodeName="n1"))
    watcher = store.watch(
        PODS, namespace="ns", resource_version=str(store.rv),
        fields=parse_field_selector("status.phase=Running", supported=PODS.fields),
        labels=LabelSelector(), bookmarks=False,
    )
    assert isinstance(watcher, Watcher)
    pod = store.get(PODS, "ns", "a").full()
    for phase in ("Running", "Running", "Failed"):
        pod = store.get(PODS, "ns", "a").full()
        pod["status"] = {"phase": phase, "reason": str(store.rv)}
        store.update(PODS, "ns", "a", pod, subresource="status")
    types = [line.split(b'"')[3] for line in watcher.drain(current_rv=store.rv).splitlines()]
    assert types == [b"ADDED", b"MODIFIED", b"DELETED"]
    store.unwatch(watcher)


def test_a_closed_watcher_never_ends_with_a_bookmark(store: Store) -> None:
    watcher = store.watch(PODS, namespace=None, resource_version=str(store.rv),
                          fields=FieldSelector(), labels=LabelSelector(), bookmarks=True)
    store.create(PODS, "ns", _pod("a"))
    watcher.want_bookmark()
    watcher.close()  # the pending ADDED is dropped: a bookmark past it would skip it
    watcher.want_bookmark()
    assert watcher.drain(current_rv=store.rv) == b""
    store.unwatch(watcher)


def test_a_consumer_too_far_behind_is_cut_off() -> None:
    store = Store(watch_max_pending=3)
    store.create(NAMESPACES, "", {"metadata": {"name": "ns"}})
    slow = store.watch(PODS, namespace=None, resource_version=str(store.rv),
                       fields=FieldSelector(), labels=LabelSelector(), bookmarks=True)
    keeping_up = store.watch(PODS, namespace=None, resource_version=str(store.rv),
                             fields=FieldSelector(), labels=LabelSelector(), bookmarks=False)
    for i in range(4):
        store.create(PODS, "ns", _pod(f"p{i}"))
        assert keeping_up.drain(current_rv=store.rv).count(b'"ADDED"') == 1
    # the fourth undelivered event ends the slow stream: nothing more, not even a
    # bookmark, so its client must relist rather than resume past what it missed
    assert slow.closed
    slow.want_bookmark()
    assert slow.drain(current_rv=store.rv) == b""
    assert not keeping_up.closed
    store.unwatch(slow)
    store.unwatch(keeping_up)
