"""The IP ownership rule, as a table of cluster situations."""

from __future__ import annotations

from datetime import datetime

import pytest

from kiam.k8s.errors import AmbiguousPodIP
from kiam.k8s.model import PodInfo
from kiam.k8s.ownership import GRACE_MARGIN, owner_of_ip
from tests.k8s.factories import pod

NOW = datetime.fromisoformat("2026-06-01T12:00:00Z").timestamp()
GRACE_ENDS_LATER = "2026-06-01T12:00:30Z"
GRACE_ENDED = "2026-06-01T11:59:00Z"
GRACE_JUST_ENDED = "2026-06-01T11:59:58Z"  # within GRACE_MARGIN

old_a = pod("old", role="a", created="2026-06-01T10:00:00Z")
new_b = pod("new", role="b", created="2026-06-01T11:00:00Z")


def _owner(*pods: PodInfo) -> PodInfo | None:
    return owner_of_ip(pods, ip="10.0.0.1", now=NOW)


def test_no_candidates() -> None:
    assert _owner() is None


def test_single_live_pod() -> None:
    assert _owner(old_a) is old_a


@pytest.mark.parametrize("phase", ["Pending", "Running", "Unknown"])
def test_live_phases_match(phase: str) -> None:
    p = pod(role="a", phase=phase)
    assert _owner(p) is p


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_never_match(phase: str) -> None:
    assert _owner(pod(role="a", phase=phase)) is None


def test_host_network_pods_never_match() -> None:
    assert _owner(pod(role="a", host_network=True)) is None


def test_reuse_after_old_pod_finished_gives_only_new_role() -> None:
    finished = pod("old", role="a", phase="Succeeded", created="2026-06-01T10:00:00Z")
    assert _owner(finished, new_b) is new_b
    assert _owner(new_b, pod("old", role="a", phase="Failed")) is new_b


def test_reuse_after_old_pod_gone() -> None:
    assert _owner(new_b) is new_b


def test_reuse_next_to_host_network_pod_on_node_ip() -> None:
    host = pod("agent", role="node-role", host_network=True)
    assert _owner(host, new_b) is new_b


def test_same_credentials_pick_newest_whatever_the_order() -> None:
    a1 = pod("a1", role="r", created="2026-06-01T10:00:00Z")
    a2 = pod("a2", role="r", created="2026-06-01T11:00:00Z")
    assert _owner(a1, a2) is a2
    assert _owner(a2, a1) is a2


def test_same_credentials_same_creation_tie_broken_by_uid() -> None:
    x = pod("x", uid="uid-2", role="r")
    y = pod("y", uid="uid-1", role="r")
    assert _owner(x, y) is x
    assert _owner(y, x) is x


def test_same_credentials_one_terminating_still_answers() -> None:
    leaving = pod("leaving", role="r", deleting=GRACE_ENDS_LATER, created="2026-06-01T11:00:00Z")
    staying = pod("staying", role="r", created="2026-06-01T10:00:00Z")
    assert _owner(leaving, staying) is leaving  # newest; credentials are the same anyway


def test_different_roles_both_live_is_ambiguous() -> None:
    with pytest.raises(AmbiguousPodIP) as caught:
        _owner(old_a, new_b)
    assert caught.value.ip == "10.0.0.1"
    assert caught.value.claimants == ("default/new", "default/old")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (pod("x", role="r", namespace="ns1"), pod("y", role="r", namespace="ns2")),
        (pod("x", role="r", session_name="s1"), pod("y", role="r", session_name="s2")),
        (pod("x", role="r", external_id="e1"), pod("y", role="r", external_id="e2")),
        (pod("x", role="r"), pod("y", role="")),
    ],
)
def test_any_credential_difference_is_ambiguous(a: PodInfo, b: PodInfo) -> None:
    with pytest.raises(AmbiguousPodIP):
        _owner(a, b)


def test_reuse_during_grace_period_is_ambiguous() -> None:
    # the old pod may still be running and asking for role a: neither answer is safe
    terminating = pod("old", role="a", deleting=GRACE_ENDS_LATER)
    with pytest.raises(AmbiguousPodIP):
        _owner(terminating, new_b)


def test_reuse_within_margin_after_grace_is_still_ambiguous() -> None:
    terminating = pod("old", role="a", deleting=GRACE_JUST_ENDED)
    with pytest.raises(AmbiguousPodIP):
        _owner(terminating, new_b)


def test_reuse_after_grace_period_gives_the_new_pod() -> None:
    expired = pod("old", role="a", deleting=GRACE_ENDED)
    assert _owner(expired, new_b) is new_b
    assert _owner(new_b, expired) is new_b


def test_grace_margin_boundary() -> None:
    expired = pod("old", role="a", deleting=GRACE_ENDED)
    deadline = datetime.fromisoformat(GRACE_ENDED).timestamp()
    assert owner_of_ip([expired, new_b], now=deadline + GRACE_MARGIN) is new_b
    with pytest.raises(AmbiguousPodIP):
        owner_of_ip([expired, new_b], now=deadline + GRACE_MARGIN - 1)


def test_two_terminating_pods_past_grace_with_different_roles_is_ambiguous() -> None:
    x = pod("x", role="a", deleting=GRACE_ENDED)
    y = pod("y", role="b", deleting=GRACE_ENDED)
    with pytest.raises(AmbiguousPodIP):
        _owner(x, y)


def test_expired_pod_does_not_hide_a_live_disagreement() -> None:
    expired = pod("old", role="a", deleting=GRACE_ENDED)
    c = pod("c", role="c")
    with pytest.raises(AmbiguousPodIP):
        _owner(expired, new_b, c)


def test_unreadable_deletion_timestamp_counts_as_possibly_running() -> None:
    odd = pod("old", role="a", deleting="soon")
    with pytest.raises(AmbiguousPodIP):
        _owner(odd, new_b)


def test_pending_pod_with_ip_next_to_finished_pod() -> None:
    pending = pod("new", role="b", phase="Pending")
    finished = pod("old", role="a", phase="Succeeded")
    assert _owner(finished, pending) is pending


def test_pending_pod_with_ip_next_to_running_pod_with_other_role() -> None:
    pending = pod("new", role="b", phase="Pending")
    with pytest.raises(AmbiguousPodIP):
        _owner(old_a, pending)


def test_default_clock_is_the_wall_clock() -> None:
    long_gone = pod("old", role="a", deleting="2000-01-01T00:00:00Z")
    assert owner_of_ip([long_gone, new_b]) is new_b
    far_future = pod("old", role="a", deleting="2999-01-01T00:00:00Z")
    with pytest.raises(AmbiguousPodIP):
        owner_of_ip([far_future, new_b])


def test_agreeing_claimants_all_past_their_grace_period_answer_the_newest() -> None:
    # Rule 3 comes before rule 4: pods that would all get the same credentials need no
    # grace-period reasoning, even when every one of them is terminating and expired.
    older = pod("old", role="a", created="2026-06-01T10:00:00Z", deleting=GRACE_ENDED)
    newer = pod("new", role="a", created="2026-06-01T11:00:00Z", deleting=GRACE_ENDED)
    assert _owner(older, newer) is newer
    assert _owner(newer, older) is newer


def test_ambiguity_without_an_ip_says_one_ip() -> None:
    with pytest.raises(AmbiguousPodIP) as refused:
        owner_of_ip([old_a, new_b], now=NOW)
    assert refused.value.ip == ""
    assert str(refused.value).startswith("one IP is claimed by live pods with different roles")
