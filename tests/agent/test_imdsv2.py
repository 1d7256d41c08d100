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


def test_a_flood_from_one_ip_is_bounded_and_evicts_only_its_own_tokens() -> None:
    store = TokenStore(max_tokens=1000, max_per_ip=8)
    neighbour = store.issue(ip="10.0.0.9", ttl=21600)
    flood = [store.issue(ip="10.0.0.1", ttl=21600) for _ in range(20_000)]
    # memory stays bounded by the per-address cap, far below the global one
    assert store.count("10.0.0.1") == 8
    assert len(store) == 9
    assert store.check(neighbour, ip="10.0.0.9")
    # the flooder keeps its newest tokens, loses its oldest
    assert all(store.check(t, ip="10.0.0.1") for t in flood[-8:])
    assert not store.check(flood[-9], ip="10.0.0.1")
    assert not store.check(flood[0], ip="10.0.0.1")


def test_bookkeeping_follows_expiry_and_purge() -> None:
    clock = Clock()
    store = TokenStore(max_per_ip=2, clock=clock)
    first = store.issue(ip="10.0.0.1", ttl=1)
    clock.now += 2
    assert not store.check(first, ip="10.0.0.1")  # expired: dropped on sight
    assert store.count("10.0.0.1") == 0
    store.issue(ip="10.0.0.1", ttl=1)
    store.issue(ip="10.0.0.2", ttl=100)
    clock.now += 2
    assert store.purge() == 1
    assert (store.count("10.0.0.1"), store.count("10.0.0.2"), len(store)) == (0, 1, 1)
