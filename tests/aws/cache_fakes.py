"""The credential-cache suites' fakes: virtual time, a scripted STS gateway, and the
cache they build (tests/aws/test_credential_cache.py, test_cache_budget.py,
test_cache_refusals.py). Pure: no sockets, no real time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY

from kiam.aws.arn import RoleArn
from kiam.aws.credential_cache import CredentialCache
from kiam.aws.credentials import CredentialKey, Credentials
from kiam.aws.errors import AwsError

START = datetime(2026, 1, 1, tzinfo=UTC)
DURATION = 900.0
REFRESH = 300.0
MARGIN = 60.0
# credentials fetched at START are refreshed from here on
DUE = DURATION - REFRESH - MARGIN


def key(name: str = "reader", external_id: str = "") -> CredentialKey:
    return CredentialKey(
        role_arn=RoleArn(f"arn:aws:iam::123456789012:role/{name}"),
        session_name="kiam-kiam",
        external_id=external_id,
    )


class FakeClock:
    """Virtual time: waits end only when time moves or their event is set."""

    def __init__(self) -> None:
        self.current = START
        self.waits: list[float | None] = []
        self._waiting: set[asyncio.Event] = set()

    def now(self) -> datetime:
        return self.current

    async def wait(self, event: asyncio.Event, *, at_most: float | None) -> None:
        self.waits.append(at_most)
        self._waiting.add(event)
        try:
            await event.wait()
        finally:
            self._waiting.discard(event)

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)
        for event in self._waiting:
            event.set()


class FakeGateway:
    """Issues numbered credentials valid for the requested duration; can block or fail."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[CredentialKey] = []
        self.failures: list[AwsError] = []
        self.gates: dict[CredentialKey, asyncio.Event] = {}
        self.gate_all: asyncio.Event | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    async def assume_role(self, key: CredentialKey, *, duration: float) -> Credentials:
        self.calls.append(key)
        number = len(self.calls)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate_all is not None:
                await self.gate_all.wait()
            if key in self.gates:
                await self.gates[key].wait()
            if self.failures:
                raise self.failures.pop(0)
            now = self.clock.now()
            return Credentials(
                access_key_id=f"ASIA{number}",
                secret_access_key=f"secret-{number}",
                session_token=f"token-{number}",
                expiration=now + timedelta(seconds=duration),
                last_updated=now,
            )
        finally:
            self.in_flight -= 1


async def settle() -> None:
    """Let every ready task run to its next real wait."""
    for _ in range(50):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0

def new_cache(clock: FakeClock, gateway: FakeGateway, **options: Any) -> CredentialCache:
    """The cache every suite starts from (three fetchers, the sizes above); ``options``
    adds to or overrides its keyword arguments (a pacer, a refusal memory, ...)."""
    settings: dict[str, Any] = {
        "session_duration": DURATION, "session_refresh": REFRESH, "fetchers": 3,
        "clock": clock, "refresh_margin": MARGIN, **options,
    }
    return CredentialCache(gateway, **settings)
