"""IMDSv2 TTL parsing and the token store, with a fake clock."""

from __future__ import annotations

import pytest

from kiam.agent.errors import BadRequest
from kiam.agent.imdsv2 import TokenStore, parse_ttl


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("value", "ttl"), [("1", 1), ("21600", 21600), (" 60 ", 60)])
def test_ttl_accepted(value: str, ttl: int) -> None:
    assert parse_ttl(value) == ttl


@pytest.mark.parametrize("value", [None, "", "0", "21601", "-1", "1.5", "abc", "1e3"])
def test_ttl_refused(value: str | None) -> None:
    with pytest.raises(BadRequest):
        parse_ttl(value)


def test_token_is_bound_to_ip_and_expires() -> None:
    clock = Clock()
    store = TokenStore(clock=clock)
    token = store.issue(ip="10.0.0.1", ttl=60)
    assert len(token) >= 32
    assert store.check(token, ip="10.0.0.1")
    assert not store.check(token, ip="10.0.0.2")
    assert not store.check("forged", ip="10.0.0.1")
    clock.now += 59.9
    assert store.check(token, ip="10.0.0.1")
    clock.now += 0.1
    assert not store.check(token, ip="10.0.0.1")
    assert len(store) == 0


def test_tokens_are_distinct() -> None:
    store = TokenStore()
    assert len({store.issue(ip="10.0.0.1", ttl=60) for _ in range(100)}) == 100


def test_store_is_bounded_purging_expired_first_then_oldest() -> None:
    clock = Clock()
    store = TokenStore(max_tokens=3, clock=clock)
    short = store.issue(ip="10.0.0.1", ttl=1)
    oldest = store.issue(ip="10.0.0.2", ttl=100)
    middle = store.issue(ip="10.0.0.3", ttl=100)
    clock.now += 2
    newer = store.issue(ip="10.0.0.4", ttl=100)  # the expired one makes room
    assert len(store) == 3
    assert not store.check(short, ip="10.0.0.1")
    assert store.check(oldest, ip="10.0.0.2")
    newest = store.issue(ip="10.0.0.5", ttl=100)  # nothing expired: the oldest goes
    assert len(store) == 3
    assert not store.check(oldest, ip="10.0.0.2")
    for token, ip in ((middle, "10.0.0.3"), (newer, "10.0.0.4"), (newest, "10.0.0.5")):
        assert store.check(token, ip=ip)


def test_purge_drops_only_expired() -> None:
    clock = Clock()
    store = TokenStore(clock=clock)
    store.issue(ip="10.0.0.1", ttl=1)
    keep = store.issue(ip="10.0.0.1", ttl=10)
    clock.now += 5
    assert store.purge() == 1
    assert store.check(keep, ip="10.0.0.1")
