"""Properties of the node replica's table (kiam/agent/replica.py): whatever the order of
entries and removals, the replica answers what the last change said, and nothing of a
snapshot before it is complete."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiam.agent.replica import Replica
from kiam.wire import kiam_pb2
from tests.fuzzing import fuzz

pytestmark = pytest.mark.fuzz

IPS = [f"10.0.0.{i}" for i in range(1, 6)]
ROLES = ["", "a", "b"]

change = st.one_of(
    st.tuples(st.sampled_from(IPS), st.sampled_from(ROLES)),  # an entry: (ip, role)
    st.sampled_from(IPS),  # a removal
)


def as_update(item: tuple[str, str] | str) -> kiam_pb2.NodeUpdate:
    if isinstance(item, tuple):
        ip, role = item
        return kiam_pb2.NodeUpdate(entry=kiam_pb2.NodeEntry(ip=ip, role=role))
    return kiam_pb2.NodeUpdate(removed_ip=item)


def apply_to(model: dict[str, str], item: tuple[str, str] | str) -> None:
    if isinstance(item, tuple):
        model[item[0]] = item[1]
    else:
        model.pop(item, None)


def answered(replica: Replica, ip: str) -> str | None:
    found = replica.role(ip, now=0)
    if isinstance(found, str):
        assert found == "not_in_replica"
        return None
    return found.role


@given(
    old=st.lists(change, max_size=10),
    snapshot=st.lists(change, max_size=10),
    changes=st.lists(change, max_size=30),
)
@fuzz(300)
def test_the_replica_answers_the_last_change(
    old: list[tuple[str, str] | str],
    snapshot: list[tuple[str, str] | str],
    changes: list[tuple[str, str] | str],
) -> None:
    replica = Replica(session_refresh=300)
    done = kiam_pb2.NodeUpdate(
        snapshot_complete=kiam_pb2.SnapshotComplete(heartbeat_interval_ms=1000)
    )
    # a first stream, then a second one whose snapshot replaces the first's table
    replica.opened(now=0)
    for item in old:
        replica.apply(as_update(item), now=0)
    replica.apply(done, now=0)
    replica.closed()
    replica.opened(now=0)
    model: dict[str, str] = {}
    for item in snapshot:
        replica.apply(as_update(item), now=0)
        apply_to(model, item)
        assert all(replica.role(ip, now=0) == "no_stream" for ip in IPS)
    replica.apply(done, now=0)
    for item in changes:
        replica.apply(as_update(item), now=0)
        apply_to(model, item)
        for ip in IPS:
            assert answered(replica, ip) == model.get(ip)
    assert len(replica) == len(model)
