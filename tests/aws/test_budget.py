"""StsBudget: pure, time passed in (seconds)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiam.aws.budget import Priority, StsBudget, Ticket
from tests.fuzzing import fuzz

pytestmark = pytest.mark.fuzz


def budget(qps: float = 10, burst: int = 5, **options: float) -> StsBudget:
    return StsBudget(qps=qps, burst=burst, now=0.0, **options)


def test_a_full_bucket_grants_a_burst_then_paces_at_qps() -> None:
    b = budget(qps=10, burst=5)
    tickets = [b.enqueue(Priority.PREFETCH) for _ in range(8)]
    assert b.waiting == 8
    assert b.grant(now=0.0) == tickets[:5]
    assert all(t.granted for t in tickets[:5]) and not tickets[5].granted
    assert b.waiting == 3
    assert b.wait(now=0.0) == pytest.approx(0.1)
    assert b.grant(now=0.05) == []
    assert b.wait(now=0.05) == pytest.approx(0.05)
    assert b.grant(now=0.1) == [tickets[5]]
    assert b.grant(now=0.35) == tickets[6:]
    assert b.wait(now=0.35) is None  # nobody waits


def test_tokens_refill_up_to_the_burst_and_not_beyond() -> None:
    b = budget(qps=10, burst=5)
    assert b.tokens(now=0.0) == 5
    for _ in range(5):
        b.enqueue(Priority.POD)
    b.grant(now=0.0)
    assert b.tokens(now=0.0) == 0
    assert b.tokens(now=0.2) == pytest.approx(2)
    assert b.tokens(now=100.0) == 5
    assert b.capacity == 5


def test_a_clock_that_goes_back_refills_nothing() -> None:
    b = budget(qps=10, burst=2)
    b.enqueue(Priority.POD)
    b.enqueue(Priority.POD)
    b.grant(now=10.0)
    assert b.tokens(now=5.0) == 0
    b.enqueue(Priority.POD)
    assert b.grant(now=5.0) == []
    assert b.tokens(now=10.1) == pytest.approx(1)


def test_pods_first_then_refreshes_by_deadline_then_prefetch() -> None:
    b = budget(qps=1, burst=1)
    b.enqueue(Priority.POD)
    b.grant(now=0.0)  # the bucket is empty now: everything below waits
    prefetch = b.enqueue(Priority.PREFETCH)
    late = b.enqueue(Priority.REFRESH, deadline=0.5)  # small: below the arrival numbers
    early = b.enqueue(Priority.REFRESH, deadline=0.25)
    pod = b.enqueue(Priority.POD, deadline=1.0)  # a pod's deadline does not matter
    second_pod = b.enqueue(Priority.POD, deadline=0.0)
    order = [b.grant(now=float(t)) for t in range(1, 6)]
    assert order == [[pod], [second_pod], [early], [late], [prefetch]]


def test_a_late_refresh_still_goes_before_an_early_prefetch() -> None:
    b = budget(qps=1, burst=1)
    b.enqueue(Priority.POD)
    b.grant(now=0.0)
    prefetch = b.enqueue(Priority.PREFETCH)
    refresh = b.enqueue(Priority.REFRESH, deadline=1e9)
    assert [b.grant(now=1.0), b.grant(now=2.0)] == [[refresh], [prefetch]]
    assert [int(p) for p in Priority] == [0, 1, 2]


def test_a_waiting_call_with_a_token_there_waits_no_time() -> None:
    b = budget(qps=1, burst=1)
    b.enqueue(Priority.PREFETCH)
    assert b.wait(now=0.0) == 0.0


def test_the_default_cooldown_is_a_second() -> None:
    b = budget(qps=16, burst=1)
    assert b.throttled(now=10.0) is True
    assert b.throttled(now=10.99) is False
    assert b.throttled(now=11.0) is True
    assert b.rate == 4


def test_prefetches_go_in_arrival_order_whatever_their_deadline() -> None:
    b = budget(qps=1, burst=1)
    b.enqueue(Priority.POD)
    b.grant(now=0.0)
    first = b.enqueue(Priority.PREFETCH, deadline=9.0)
    second = b.enqueue(Priority.PREFETCH, deadline=1.0)
    assert b.head() is first
    b.promote(first, Priority.PREFETCH)  # the same priority: it keeps its place
    assert b.head() is first
    assert [b.grant(now=1.0), b.grant(now=2.0)] == [[first], [second]]


def test_a_promoted_call_moves_up_and_keeps_one_place() -> None:
    b = budget(qps=1, burst=1)
    b.enqueue(Priority.POD)
    b.grant(now=0.0)
    refresh = b.enqueue(Priority.REFRESH, deadline=5.0)
    prefetch = b.enqueue(Priority.PREFETCH)
    b.promote(prefetch, Priority.POD)
    assert prefetch.priority is Priority.POD
    assert b.waiting == 2
    assert b.head() is prefetch
    b.promote(prefetch, Priority.PREFETCH)  # never down
    assert b.head() is prefetch
    assert b.grant(now=1.0) == [prefetch]
    b.promote(prefetch, Priority.POD)  # granted: nothing to move
    assert b.waiting == 1
    assert b.grant(now=2.0) == [refresh]
    assert b.grant(now=3.0) == []
    assert b.head() is None


def test_a_cancelled_call_leaves_the_queue_and_a_granted_one_returns_its_token() -> None:
    b = budget(qps=1, burst=1)
    waiting = b.enqueue(Priority.POD)
    queued = b.enqueue(Priority.PREFETCH)
    assert b.grant(now=0.0) == [waiting]
    b.cancel(queued)
    assert b.waiting == 0 and b.head() is None
    assert b.tokens(now=0.0) == 0
    b.cancel(waiting)  # granted, but the call will not be made
    assert not waiting.granted
    assert b.tokens(now=0.0) == 1
    b.cancel(waiting)  # twice is harmless
    b.cancel(queued)
    assert b.tokens(now=0.0) == 1 and b.waiting == 0


def test_a_returned_token_never_overfills_the_bucket() -> None:
    b = budget(qps=1, burst=2)
    ticket = b.enqueue(Priority.POD)
    b.grant(now=0.0)
    assert b.tokens(now=5.0) == 2
    b.grant(now=5.0)  # refills the bucket: 2 tokens
    b.cancel(ticket)
    assert b.tokens(now=5.0) == 2


def test_throttling_halves_the_rate_once_per_cooldown_and_empties_the_bucket() -> None:
    b = budget(qps=16, burst=8, cooldown=1.0)
    assert b.throttled(now=0.0) is True
    assert b.rate == 8
    assert b.tokens(now=0.0) == 0
    assert b.throttled(now=0.5) is False  # the same overload
    assert b.rate == 8
    assert b.throttled(now=1.0) is True
    assert b.rate == 4
    assert b.capacity == 2  # the burst shrinks with the rate
    assert b.tokens(now=100.0) == 2


def test_the_rate_never_falls_below_the_floor() -> None:
    b = budget(qps=10, burst=4, floor=3.0)
    for t in range(10):
        b.throttled(now=float(t))
    assert b.rate == 3
    assert b.capacity == pytest.approx(1.2)
    assert budget(qps=0.5, burst=1).floor == 0.5  # never above qps
    assert budget(qps=10, burst=1).floor == 1.0
    assert budget(qps=10, burst=1, floor=20.0).floor == 10.0


def test_success_adds_the_increase_back_up_to_qps() -> None:
    b = budget(qps=20, burst=4)
    assert b.increase == 1.0  # qps / 20 by default
    b.throttled(now=0.0)
    assert b.rate == 10
    for _ in range(4):
        b.succeeded()
    assert b.rate == 14
    for _ in range(10):
        b.succeeded()
    assert b.rate == 20
    custom = budget(qps=20, burst=4, increase=5.0, decrease=0.25)
    custom.throttled(now=0.0)
    assert custom.rate == 5
    custom.succeeded()
    assert custom.rate == 10


def test_the_slower_rate_paces_the_queue() -> None:
    b = budget(qps=10, burst=1)
    b.throttled(now=0.0)  # 5 calls/s, empty bucket
    b.enqueue(Priority.POD)
    assert b.wait(now=0.0) == pytest.approx(0.2)
    assert b.grant(now=0.19) == []
    assert len(b.grant(now=0.2)) == 1


_NEEDS = "^the STS budget needs qps > 0 and burst >= 1$"
_FACTOR = "^the decrease factor must be between 0 and 1$"


@pytest.mark.parametrize(
    ("options", "message"),
    [({"qps": 0, "burst": 1}, _NEEDS), ({"qps": 1, "burst": 0}, _NEEDS),
     ({"qps": 1, "burst": 1, "decrease": 1.0}, _FACTOR),
     ({"qps": 1, "burst": 1, "decrease": 0.0}, _FACTOR),
     ({"qps": 1, "burst": 1, "concurrency": 0}, "^concurrency must be at least 1$")],
)
def test_nonsense_is_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StsBudget(now=0.0, **options)  # type: ignore[arg-type]
    StsBudget(now=0.0, qps=0.5, burst=1, decrease=0.9, concurrency=1)  # the edges are fine


def test_a_ticket_shows_what_it_waits_as() -> None:
    b = budget()
    ticket = b.enqueue(Priority.REFRESH, deadline=3.0)
    assert isinstance(ticket, Ticket)
    assert ticket.queued is True
    assert (ticket.priority, ticket.deadline, ticket.granted) == (Priority.REFRESH, 3.0, False)
    granted = b.grant(now=0.0)
    assert ticket in granted
    assert (ticket.queued, ticket.granted) == (False, True)
    assert ticket.queued is False
    b.finished(ticket)
    assert ticket.granted is False
    other = b.enqueue(Priority.PREFETCH)
    b.cancel(other)
    assert other.queued is False
    assert "_order" not in repr(ticket)
    assert b.enqueue(Priority.POD).deadline == 0.0


# -- properties -----------------------------------------------------------------------

_steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=2.0),
        st.sampled_from([*Priority, "throttled", "succeeded"]),
    ),
    max_size=60,
)


@fuzz(200)
@given(qps=st.integers(1, 100), burst=st.integers(1, 50), steps=_steps)
def test_grants_never_exceed_burst_plus_rate_times_time(
    qps: int, burst: int, steps: list[tuple[float, Priority | str]]
) -> None:
    """Whatever happens, tokens handed out by time t are at most burst + qps * t, and
    the rate stays within [floor, qps]."""
    b = StsBudget(qps=qps, burst=burst, now=0.0)
    now, granted = 0.0, 0
    for gap, action in steps:
        now += gap
        if action == "throttled":
            b.throttled(now=now)
        elif action == "succeeded":
            b.succeeded()
        else:
            assert isinstance(action, Priority)
            b.enqueue(action)
        granted += len(b.grant(now=now))
        assert granted <= burst + qps * now + 1e-9
        assert b.floor <= b.rate <= qps
        assert 0 <= b.tokens(now=now) <= b.capacity


@fuzz(200)
@given(st.lists(st.tuples(st.sampled_from(list(Priority)),
                          st.floats(min_value=0, max_value=1e6)), min_size=1, max_size=30))
def test_the_queue_serves_by_priority_then_deadline_for_refreshes(
    calls: list[tuple[Priority, float]],
) -> None:
    b = StsBudget(qps=1, burst=1, now=0.0)
    b.enqueue(Priority.POD)
    b.grant(now=0.0)
    tickets = [b.enqueue(p, deadline=d) for p, d in calls]
    served = [b.grant(now=float(i + 1)) for i in range(len(tickets))]
    assert all(len(one) == 1 for one in served)
    order = [one[0] for one in served]
    assert sorted(order, key=id) == sorted(tickets, key=id)  # each exactly once

    def rank(t: Ticket) -> tuple[int, float, int]:
        deadline = t.deadline if t.priority is Priority.REFRESH else 0.0
        return (t.priority, deadline, tickets.index(t))

    assert order == sorted(tickets, key=rank)
    assert b.wait(now=math.inf) is None


def test_background_calls_need_a_place_pods_do_not() -> None:
    b = budget(qps=100, burst=100, concurrency=2)
    first, second, third = (b.enqueue(Priority.PREFETCH) for _ in range(3))
    assert b.grant(now=0.0) == [first, second]
    assert b.running == 2
    assert b.wait(now=0.0) is None  # the head waits for a place, not for time
    pod = b.enqueue(Priority.POD)
    refresh = b.enqueue(Priority.REFRESH, deadline=1.0)
    assert b.grant(now=0.0) == [pod]  # never held back by background work
    assert b.wait(now=0.0) is None
    b.finished(pod)
    assert b.running == 2
    b.finished(first)
    assert b.running == 1
    assert b.grant(now=0.0) == [refresh]
    b.finished(first)  # twice is harmless
    b.cancel(second)  # granted and not made: its place and its token go back
    assert b.running == 1
    assert b.grant(now=0.0) == [third]
    assert b.running == 2
    assert b.tokens(now=0.0) == 96
    b.finished(third)
    b.finished(refresh)
    assert b.running == 0
