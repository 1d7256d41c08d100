"""The node replica's table rules (kiam/agent/replica.py), without a network."""

from __future__ import annotations

import grpc
import orjson

from kiam.agent.client import refusal_error
from kiam.agent.replica import Replica, prepare
from kiam.wire import kiam_pb2, status
from kiam.wire.credentials import parse_timestamp

EXPIRATION = "2030-01-01T01:00:00Z"
EXPIRES = parse_timestamp(EXPIRATION).timestamp()
REFRESH = 300.0


def entry(
    ip: str, role: str = "app", *, key: str = "ASIAKEY", **fields: kiam_pb2.Refusal
) -> kiam_pb2.NodeEntry:
    message = kiam_pb2.NodeEntry(ip=ip, role=role, pod_uid=f"uid-{ip}", **fields)
    if key and "credentials_refusal" not in fields:
        message.credentials.CopyFrom(
            kiam_pb2.Credentials(
                access_key_id=key,
                secret_access_key="s",
                token="t",
                expiration=EXPIRATION,
                last_updated="2030-01-01T00:00:00Z",
            )
        )
    return message


def update(item: kiam_pb2.NodeEntry | str | int) -> kiam_pb2.NodeUpdate:
    if isinstance(item, kiam_pb2.NodeEntry):
        return kiam_pb2.NodeUpdate(entry=item)
    if isinstance(item, str):
        return kiam_pb2.NodeUpdate(removed_ip=item)
    done = kiam_pb2.SnapshotComplete(entries=item, heartbeat_interval_ms=1000)
    return kiam_pb2.NodeUpdate(snapshot_complete=done)


def serving(*entries: kiam_pb2.NodeEntry, now: float = 0.0) -> Replica:
    replica = Replica(session_refresh=REFRESH)
    replica.opened(now=now)
    for item in entries:
        assert replica.apply(update(item), now=now) == ""
    assert replica.apply(update(len(entries)), now=now) == ""
    return replica


def test_nothing_is_served_before_the_snapshot_completes() -> None:
    replica = Replica(session_refresh=REFRESH)
    assert replica.role("10.0.0.1", now=0) == "no_stream"
    replica.opened(now=0)
    replica.apply(update(entry("10.0.0.1")), now=0)
    assert replica.role("10.0.0.1", now=0) == "no_stream"
    replica.apply(update(1), now=0)
    found = replica.role("10.0.0.1", now=0)
    assert not isinstance(found, str)
    assert found.role_answer.body == b"app"


def test_a_new_stream_replaces_the_table_only_at_its_snapshot_complete() -> None:
    replica = serving(entry("10.0.0.1"), entry("10.0.0.2"))
    replica.closed()
    assert replica.role("10.0.0.1", now=0) == "no_stream"
    replica.opened(now=1)
    replica.apply(update(entry("10.0.0.2", role="other")), now=1)
    assert replica.role("10.0.0.2", now=1) == "no_stream"
    replica.apply(update(1), now=1)
    assert replica.role("10.0.0.1", now=1) == "not_in_replica"
    found = replica.role("10.0.0.2", now=1)
    assert not isinstance(found, str) and found.role == "other"
    assert len(replica) == 1


def test_changes_apply_in_order() -> None:
    replica = serving(entry("10.0.0.1", role="old"))
    replica.apply(update("10.0.0.1"), now=0)
    assert replica.role("10.0.0.1", now=0) == "not_in_replica"
    replica.apply(update(entry("10.0.0.1", role="new")), now=0)
    found = replica.role("10.0.0.1", now=0)
    assert not isinstance(found, str) and found.role == "new"


def test_stale_after_three_heartbeat_intervals() -> None:
    replica = serving(entry("10.0.0.1"), now=10.0)
    assert replica.serving(now=13.0)
    assert replica.role("10.0.0.1", now=13.01) == "stale"
    replica.apply(kiam_pb2.NodeUpdate(heartbeat=kiam_pb2.Heartbeat()), now=13.5)
    assert replica.serving(now=16.4)


def test_a_closed_stream_says_why() -> None:
    replica = serving(entry("10.0.0.1"))
    replica.closed("unimplemented")
    assert replica.role("10.0.0.1", now=0) == "unimplemented"
    assert len(replica) == 0
    assert replica.apply(update(entry("10.0.0.1")), now=0) != ""


def test_credentials_only_for_the_entrys_role_and_with_time_left() -> None:
    replica = serving(entry("10.0.0.1"), entry("10.0.0.2", key=""))
    early = EXPIRES - REFRESH - 1
    found = replica.credentials("10.0.0.1", "app", now=0, wall=early)
    assert not isinstance(found, str) and found.credentials is not None
    assert orjson.loads(found.credentials.answer.body)["AccessKeyId"] == "ASIAKEY"
    assert replica.credentials("10.0.0.1", "app", now=0, wall=EXPIRES - REFRESH) == "expiring"
    assert replica.credentials("10.0.0.1", "other", now=0, wall=early) == "role_mismatch"
    assert replica.credentials("10.0.0.2", "app", now=0, wall=early) == "no_credentials"
    assert replica.credentials("10.0.0.3", "app", now=0, wall=early) == "not_in_replica"


def test_unreadable_credentials_are_asked_of_a_server() -> None:
    message = entry("10.0.0.1")
    message.credentials.expiration = "not a time"
    replica = serving(message)
    assert replica.credentials("10.0.0.1", "app", now=0, wall=0) == "no_credentials"


FORBIDDEN = kiam_pb2.Refusal(
    code=grpc.StatusCode.PERMISSION_DENIED.value[0],
    message=status.GO_FORBIDDEN,
    reason="namespace says no",
)


def test_a_refusal_wins_and_is_the_rpc_paths_text() -> None:
    message = entry("10.0.0.1", credentials_refusal=FORBIDDEN)
    message.credentials.CopyFrom(kiam_pb2.Credentials(access_key_id="ASIANO"))
    found = serving(message).credentials("10.0.0.1", "app", now=0, wall=0)
    assert not isinstance(found, str)
    assert found.credentials is None and found.credentials_refusal is not None
    expected = refusal_error(
        grpc.StatusCode.PERMISSION_DENIED,
        status.GO_FORBIDDEN,
        "namespace says no",
        what="GetPodCredentials",
    )
    assert found.credentials_refusal.status == 403
    assert found.credentials_refusal.body == (expected.message + "\n").encode()
    assert b"namespace says no" in found.credentials_refusal.body


def test_an_ambiguous_ip_refuses_every_role() -> None:
    ambiguous = kiam_pb2.Refusal(code=9, message="pods a and b", reason="pods a and b")
    message = entry("10.0.0.1", role="", role_refusal=ambiguous, credentials_refusal=ambiguous)
    replica = serving(message)
    role = replica.role("10.0.0.1", now=0)
    assert not isinstance(role, str) and role.role_answer.status == 409
    found = replica.credentials("10.0.0.1", "anything", now=0, wall=0)
    assert not isinstance(found, str) and found.credentials_refusal is not None
    assert found.credentials_refusal.status == 409


def test_no_role_is_the_404_of_the_rpc_path() -> None:
    found = serving(entry("10.0.0.1", role="", key="")).role("10.0.0.1", now=0)
    assert not isinstance(found, str)
    assert found.role_outcome == "no_role"
    assert found.role_answer.status == 404
    assert b"10.0.0.1 has no iam.amazonaws.com/role annotation" in found.role_answer.body


def test_bad_ips_are_ignored_and_ips_normalised() -> None:
    replica = Replica(session_refresh=REFRESH)
    replica.opened(now=0)
    assert "not an IP" in replica.apply(update(entry("nonsense")), now=0)
    assert replica.apply(update(entry("::ffff:10.0.0.9")), now=0) == ""
    assert "announced 5" in replica.apply(update(5), now=0)
    assert not isinstance(replica.role("10.0.0.9", now=0), str)


def test_a_zero_heartbeat_interval_is_never_fresh() -> None:
    interval = 0
    replica = Replica(session_refresh=REFRESH)
    replica.opened(now=0)
    done = kiam_pb2.SnapshotComplete(entries=0, heartbeat_interval_ms=interval)
    replica.apply(kiam_pb2.NodeUpdate(snapshot_complete=done), now=0)
    assert replica.role("10.0.0.1", now=0.001) == "stale"


def test_prepare_renders_once() -> None:
    rendered = prepare(entry("10.0.0.1"))
    assert rendered.role_answer.content_type == "text/plain; charset=utf-8"
    assert rendered.credentials is not None
    assert rendered.credentials.answer.content_type == "application/json"
