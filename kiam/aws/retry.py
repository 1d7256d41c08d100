"""Retry policy for STS calls: which errors to retry, how long to wait, how often.

botocore's own retries are switched off in :mod:`kiam.aws.sts`, so this is the only
policy and the attempt counts it logs are exact.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from kiam.aws.errors import AwsError, StsThrottled

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by attempts and a total time budget.

    The defaults keep a pod's credential request well within its SDK's patience:
    at most 4 attempts, waiting 0.1-0.2s, 0.2-0.4s, 0.4-0.8s between them.
    """

    max_attempts: int = 4
    """Attempts in total, the first one included."""
    base_delay: float = 0.1
    """Delay before the second attempt; doubled for each further one."""
    max_delay: float = 2.0
    """Cap on a single delay."""
    budget: float = 5.0
    """Give up instead of sleeping when the delays so far would exceed this many seconds."""
    jitter: float = 1.0
    """How random each delay is: 1 draws it from [delay/2, delay]; 0 makes it fixed."""
    retry_throttled: bool = True
    """Retry throttling errors too. The pod calls of :class:`kiam.aws.sts.StsGateway` do
    not: there the credential cache backs off per key (:mod:`kiam.aws.backoff`), so a
    throttled call is one attempt, not four on a service already saying "slow down"."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        full = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return full * (1.0 - self.jitter) + full * self.jitter * (0.5 + rng() / 2)

    def is_retryable(self, error: BaseException) -> bool:
        if isinstance(error, StsThrottled):
            return self.retry_throttled
        return isinstance(error, AwsError) and error.retryable

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        description: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> T:
        """Run ``operation`` until it succeeds, fails permanently, or the policy gives up.

        Raises the last error unchanged.
        """
        waited = 0.0
        attempt = 1
        while True:
            try:
                return await operation()
            except AwsError as error:
                if not self.is_retryable(error) or attempt >= self.max_attempts:
                    log.warning(
                        "%s failed, attempt %d/%d, giving up: %s",
                        description,
                        attempt,
                        self.max_attempts,
                        error,
                    )
                    raise
                pause = self.delay(attempt)
                if waited + pause > self.budget:
                    log.warning(
                        "%s failed, attempt %d/%d, retry budget of %gs spent: %s",
                        description,
                        attempt,
                        self.max_attempts,
                        self.budget,
                        error,
                    )
                    raise
                log.info(
                    "%s failed, attempt %d/%d, retrying in %.2fs: %s",
                    description,
                    attempt,
                    self.max_attempts,
                    pause,
                    error,
                )
                await sleep(pause)
                waited += pause
                attempt += 1
