"""Prometheus metrics of the AWS side, keeping Go Kiam's names."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ASSUMEROLE_TIMING = Histogram(
    "kiam_sts_assumerole_timing_seconds",
    "Time taken by STS AssumeRole calls, retries included",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ASSUMEROLE_CURRENT = Gauge(
    "kiam_sts_assumerole_current",
    "STS AssumeRole calls in flight",
)
ISSUING_ERRORS = Counter(
    "kiam_sts_issuing_errors",
    "STS AssumeRole calls that ended in an error (after retries)",
)
CACHE_HIT = Counter(
    "kiam_sts_cache_hit",
    "Credential requests answered from the cache",
)
CACHE_MISS = Counter(
    "kiam_sts_cache_miss",
    "Credential requests that needed an STS call",
)
REFUSALS = Gauge(
    "kiam_sts_refusals_remembered",
    "Permanent STS refusals kept per credential key for --sts-error-ttl",
)
REFUSAL_HITS = Counter(
    "kiam_sts_refusal_hits",
    "Credential requests answered with a remembered STS refusal, without an STS call",
)
BACKOFF_SKIPS = Counter(
    "kiam_sts_backoff_skips",
    "Credential requests answered with STS's throttling error while their key backs off, "
    "without an STS call",
)
ASSUMEROLE_CALLS = Counter(
    "kiam_sts_assumerole_calls",
    "STS AssumeRole calls for pods, by outcome: success, throttled, denied, unavailable, "
    "failed",
    ("outcome",),
)
for _outcome in ("success", "throttled", "denied", "unavailable", "failed"):
    ASSUMEROLE_CALLS.labels(outcome=_outcome)  # exported as 0 before the first call
BUDGET_RATE = Gauge(
    "kiam_sts_budget_rate",
    "Calls per second the server-wide STS budget allows now (--sts-qps, lower after "
    "Throttling)",
)
BUDGET_TOKENS = Gauge(
    "kiam_sts_budget_tokens",
    "Tokens in the server-wide STS budget's bucket (calls that may start at once)",
)
BUDGET_WAITING = Gauge(
    "kiam_sts_budget_waiting",
    "STS calls waiting for a token of the server-wide budget",
)
BUDGET_WAIT = Histogram(
    "kiam_sts_budget_wait_seconds",
    "Time STS calls waited for a token of the server-wide budget, by priority",
    ("priority",),
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
