"""The per-caller limiter's bookkeeping (kiam/agent/fairness.py): pure, time injected."""

from __future__ import annotations

from kiam.agent.fairness import CAPACITY, CallerLimiter, CallerLimits, Refused

IN_FLIGHT = Refused(limit="in_flight", retry_after=1)


def limiter(
    *, max_in_flight: int = 0, rate: float = 0, burst: int = 0, capacity: int = CAPACITY
) -> CallerLimiter:
    limits = CallerLimits(max_in_flight=max_in_flight, rate=rate, burst=burst)
    return CallerLimiter(limits, capacity=capacity)


def admitted(lim: CallerLimiter, caller: str, *, now: float, times: int) -> int:
    """How many of ``times`` requests at ``now`` are admitted (none released)."""
    return sum(lim.admit(caller, now=now) is None for _ in range(times))


def test_in_flight_limit_per_caller() -> None:
    lim = limiter(max_in_flight=2)
    assert lim.admit("a", now=0.0) is None
    assert lim.admit("a", now=0.0) is None
    assert lim.admit("a", now=0.0) == IN_FLIGHT
    # another caller has its own count
    assert lim.admit("b", now=0.0) is None
    # one answer frees one place, not more
    lim.release("a", now=0.0)
    assert lim.admit("a", now=0.0) is None
    assert lim.admit("a", now=0.0) == IN_FLIGHT


def test_refusals_in_flight_do_not_take_a_place() -> None:
    lim = limiter(max_in_flight=1)
    assert lim.admit("a", now=0.0) is None
    for _ in range(5):
        assert lim.admit("a", now=0.0) == IN_FLIGHT
    lim.release("a", now=0.0)
    assert lim.admit("a", now=0.0) is None


def test_rate_burst_then_refill() -> None:
    lim = limiter(rate=10, burst=5)
    assert admitted(lim, "a", now=0.0, times=8) == 5
    assert lim.admit("a", now=0.0) == Refused(limit="rate", retry_after=1)
    # 10 per second: one token every 0.1 s
    assert admitted(lim, "a", now=0.25, times=5) == 2
    # refills up to the burst, no further
    assert admitted(lim, "a", now=100.0, times=9) == 5
    # others are untouched by a's flood
    assert admitted(lim, "b", now=100.0, times=5) == 5


def test_refused_requests_take_no_token() -> None:
    lim = limiter(rate=1, burst=1)
    assert lim.admit("a", now=0.0) is None
    for step in range(8):
        assert lim.admit("a", now=step / 8) is not None
    assert lim.admit("a", now=1.0) is None


def test_retry_after_is_the_wait_for_a_token_in_whole_seconds() -> None:
    lim = limiter(rate=0.25, burst=1)
    assert lim.admit("a", now=0.0) is None
    assert lim.admit("a", now=0.0) == Refused(limit="rate", retry_after=4)
    assert lim.admit("a", now=1.5) == Refused(limit="rate", retry_after=3)
    assert lim.admit("a", now=3.75) == Refused(limit="rate", retry_after=1)
    assert lim.admit("a", now=4.0) is None


def test_in_flight_is_checked_before_the_rate_and_takes_no_token() -> None:
    lim = limiter(max_in_flight=1, rate=1, burst=2)
    assert lim.admit("a", now=0.0) is None
    assert lim.admit("a", now=0.0) == IN_FLIGHT
    lim.release("a", now=0.0)
    assert lim.admit("a", now=0.0) is None
    lim.release("a", now=0.0)
    assert lim.admit("a", now=0.0) == Refused(limit="rate", retry_after=1)


def test_zero_turns_a_limit_off() -> None:
    assert admitted(limiter(rate=5, burst=5), "a", now=0.0, times=100) == 5
    assert admitted(limiter(max_in_flight=3), "a", now=0.0, times=100) == 3
    assert admitted(limiter(), "a", now=0.0, times=100) == 100


def test_a_clock_that_goes_back_refills_nothing_and_takes_nothing() -> None:
    lim = limiter(rate=1, burst=2)
    assert admitted(lim, "a", now=10.0, times=1) == 1
    assert admitted(lim, "a", now=5.0, times=3) == 1
    assert lim.admit("a", now=5.5) == Refused(limit="rate", retry_after=1)
    assert admitted(lim, "a", now=6.0, times=3) == 1


def test_a_caller_idle_with_a_full_bucket_is_forgotten() -> None:
    lim = limiter(max_in_flight=4, rate=8, burst=2)
    assert lim.admit("a", now=10.0) is None
    assert lim.admit("a", now=10.0) is None
    lim.release("a", now=10.0)
    assert len(lim) == 1  # one still in flight
    lim.release("a", now=10.0625)
    assert len(lim) == 1  # nothing in flight, but half a token in the bucket
    assert lim.admit("a", now=10.125) is None  # takes the one token back
    lim.release("a", now=10.25)
    assert len(lim) == 1  # one token of two
    assert lim.admit("a", now=10.375) is None  # full again, takes one
    lim.release("a", now=10.5)
    assert len(lim) == 0  # full again: the same as never seen
    assert admitted(lim, "a", now=10.5, times=3) == 2


def test_a_caller_with_requests_in_flight_is_remembered() -> None:
    lim = limiter(max_in_flight=1)
    assert lim.admit("a", now=0.0) is None
    assert lim.admit("a", now=50.0) == IN_FLIGHT
    assert len(lim) == 1
    lim.release("a", now=50.0)
    assert len(lim) == 0


def test_memory_is_bounded_the_caller_seen_longest_ago_forgotten_first() -> None:
    lim = limiter(max_in_flight=1, capacity=2)
    assert lim.admit("a", now=0.0) is None
    assert lim.admit("b", now=1.0) is None
    assert lim.admit("a", now=2.0) == IN_FLIGHT  # a seen again: b is now the oldest
    assert lim.admit("c", now=3.0) is None
    assert len(lim) == 2
    assert lim.admit("a", now=4.0) == IN_FLIGHT  # a still remembered
    assert lim.admit("b", now=4.0) is None  # b was forgotten: a fresh start (rule 5)
    # the forgotten caller's earlier request, answered now, releases nothing
    lim.release("c", now=5.0)  # c forgotten when b came back
    assert lim.admit("c", now=5.0) is None
    assert lim.admit("c", now=5.0) == IN_FLIGHT


def test_many_callers_stay_within_capacity() -> None:
    lim = limiter(max_in_flight=1, capacity=100)
    for i in range(10_000):
        assert lim.admit(f"10.0.{i // 256}.{i % 256}", now=float(i)) is None
        assert len(lim) <= 100
    assert len(lim) == 100
