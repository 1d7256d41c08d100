"""Credentials cached per (role ARN, session name, external ID), refreshed ahead of need.

Rules (docs/architecture.md, kiam.aws):

- one STS call at a time per key, however many callers wait (single-flight); a waiter
  that is cancelled never cancels the call the others wait for;
- errors reach every waiter of that call. A permanent refusal is kept for ``refusals``'
  window (:mod:`kiam.aws.refusals`): until then ``get`` raises its remembered copy and
  background work skips the key, without an STS call; ``forget_refusals`` ends the window
  early. Throttling opens a backoff step for the key (:mod:`kiam.aws.backoff`): until it
  ends ``get`` raises the throttling error at once and background work waits, so a key
  costs at most one STS call per step; credentials still cached keep being served.
  Other errors are not kept: the next ``get`` retries;
- credentials with ``session_refresh`` or less left are never served;
- ``run()`` refreshes a key shortly before it would fall below ``session_refresh``
  (``refresh_margin`` earlier) while ``keys_in_use()`` still names it, and drops it
  otherwise;
- background work (``prefetch`` and refreshes) makes at most ``fetchers`` STS calls at
  once. A pod's own request (``get``) never queues behind that work: it starts its call
  at once, or joins the one already running for its key;
- with a ``pacer`` (:mod:`kiam.aws.pacing`), every STS call first waits for a token of
  the server-wide budget (:mod:`kiam.aws.budget`): a pod's call before refreshes (by
  deadline) before prefetch. The budget's ``concurrency`` then stands for ``fetchers``:
  a background call gets its token and its place together, in that order; what STS
  answers adjusts the budget's rate;
- a key a pod or ``prefetch`` asked for whose fetch failed without a refusal
  (throttling, an outage) is fetched again in the background once its backoff step (or
  ``retry_after_failure``) has passed, while ``keys_in_use()`` names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Container, Iterable
from datetime import datetime, timedelta
from typing import Protocol

from kiam.aws import metrics
from kiam.aws.backoff import ThrottleBackoff
from kiam.aws.budget import Priority
from kiam.aws.clock import SYSTEM_CLOCK, Clock
from kiam.aws.credentials import CredentialKey, Credentials
from kiam.aws.errors import AwsError, StsFailure, StsThrottled, StsUnavailable
from kiam.aws.pacing import Pacer
from kiam.aws.refusals import RefusalMemory

log = logging.getLogger(__name__)

KeysInUse = Callable[[], Container[CredentialKey]]


class CredentialSource(Protocol):
    """What the cache needs from :class:`kiam.aws.sts.StsGateway`."""

    async def assume_role(self, key: CredentialKey, *, duration: float) -> Credentials: ...


def _no_keys() -> Container[CredentialKey]:
    return frozenset()


class _Everything:
    def __contains__(self, item: object) -> bool:
        return True


_EVERY_KEY: Container[CredentialKey] = _Everything()


class CredentialCache:
    """See the module docstring. ``run()`` must be running for refreshes and drops."""

    def __init__(
        self,
        gateway: CredentialSource,
        *,
        session_duration: float,
        session_refresh: float,
        fetchers: int,
        clock: Clock = SYSTEM_CLOCK,
        keys_in_use: KeysInUse | None = None,
        refresh_margin: float = 60.0,
        retry_after_failure: float = 10.0,
        refusals: RefusalMemory | None = None,
        backoff: ThrottleBackoff | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        if session_refresh >= session_duration:
            raise ValueError("session refresh must be shorter than the session duration")
        if fetchers < 1:
            raise ValueError("fetchers must be at least 1")
        self._gateway = gateway
        self._duration = session_duration
        self._refresh = timedelta(seconds=session_refresh)
        # refresh early, but never so early that fresh credentials are due at once
        self._margin = timedelta(
            seconds=max(0.0, min(refresh_margin, (session_duration - session_refresh) / 2))
        )
        self._retry_after_failure = timedelta(seconds=retry_after_failure)
        self._clock = clock
        self._keys_in_use: KeysInUse = keys_in_use or _no_keys
        self._slots = asyncio.Semaphore(fetchers)
        self._cached: dict[CredentialKey, Credentials] = {}
        self._flights: dict[CredentialKey, asyncio.Future[Credentials]] = {}
        self._queued: dict[CredentialKey, asyncio.Task[None]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._failed_at: dict[CredentialKey, datetime] = {}
        self._refusals = RefusalMemory(ttl=0) if refusals is None else refusals
        self._backoff = ThrottleBackoff() if backoff is None else backoff
        self._pacer = pacer
        # not cached, the last fetch failed: fetch again (True: it was throttled)
        self._wanted: dict[CredentialKey, bool] = {}
        self._wake = asyncio.Event()
        self._closed = False
        self._listeners: list[Callable[[CredentialKey, Credentials], None]] = []

    def add_listener(self, listener: Callable[[CredentialKey, Credentials], None]) -> None:
        """Call ``listener(key, credentials)`` whenever credentials are stored (fetched or
        refreshed): the server's node replica pushes them. It must not block."""
        self._listeners.append(listener)

    def set_keys_in_use(self, keys_in_use: KeysInUse) -> None:
        """Name the keys live pods still use; ``run()`` refreshes those and drops the rest."""
        self._keys_in_use = keys_in_use

    def __len__(self) -> int:
        return len(self._cached)

    def __contains__(self, key: object) -> bool:
        return key in self._cached

    # -- serving ----------------------------------------------------------------------

    async def get(self, key: CredentialKey) -> Credentials:
        """Credentials for ``key`` with more than ``session_refresh`` left.

        Raises :class:`kiam.aws.errors.AwsError` when STS fails.
        """
        cached = self._cached.get(key)
        if cached is not None and cached.remaining(self._clock.now()) > self._refresh:
            metrics.CACHE_HIT.inc()
            return cached
        flight = self._flights.get(key)
        if flight is None:
            now = self._clock.now()
            refusal = self._refusals.recall(key, now=now)
            if refusal is not None:
                metrics.REFUSAL_HITS.inc()
                raise refusal
            throttled = self._backoff.blocked(key, now=now)
            if throttled is not None:
                metrics.BACKOFF_SKIPS.inc()
                raise throttled
        metrics.CACHE_MISS.inc()
        if flight is None:
            flight = self._start_flight(key)
        try:
            # shield: a cancelled caller must not cancel the call others wait for
            return await asyncio.shield(flight)
        except AwsError:
            self._refusals.reported(key)  # this caller reports it (kiam.aws.refusals)
            raise

    def forget_refusals(self, keys: Iterable[CredentialKey]) -> None:
        """End the refusal window of ``keys`` (their annotations changed): the next
        request asks STS again."""
        forgotten = self._refusals.forget(keys)
        if forgotten:
            metrics.REFUSALS.set(len(self._refusals))
            log.info("forgot %d remembered STS refusals after an annotation change", forgotten)

    def prefetch(self, key: CredentialKey) -> None:
        """Fetch ``key`` in the background unless it is fresh or on its way; never blocks."""
        if self._closed or key in self._queued or key in self._flights:
            return
        now = self._clock.now()
        if not self._due(key, now) or self._refused(key, now):
            return
        cached = self._cached.get(key)
        if cached is None:
            self._queue(key, Priority.PREFETCH)
        else:
            self._queue(key, Priority.REFRESH, deadline=self._deadline(cached))

    # -- background refresh ---------------------------------------------------------

    async def run(self) -> None:
        """Refresh keys in use ahead of expiry and drop the others, until cancelled.

        Sleeps until the next key is due, woken early whenever credentials are stored.
        Cancelling it also cancels background fetches.
        """
        try:
            while True:
                self._wake.clear()
                timeout = self._sweep()
                await self._clock.wait(self._wake, at_most=timeout)
        finally:
            await self.close()

    async def close(self) -> None:
        """Cancel every fetch; callers still waiting get :class:`StsUnavailable`."""
        self._closed = True
        tasks = [*self._queued.values(), *self._workers]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _sweep(self) -> float | None:
        """Queue refreshes, drop unused keys; return seconds until the next deadline."""
        now = self._clock.now()
        in_use: Container[CredentialKey] | None = None
        next_due: datetime | None = None
        for key, credentials in list(self._cached.items()):
            if key in self._queued or key in self._flights:
                continue  # its fetch will store new credentials and wake us
            due = credentials.expiration - self._refresh - self._margin
            if now < due:
                next_due = due if next_due is None else min(next_due, due)
                continue
            if in_use is None:
                in_use = self._in_use()
            if key not in in_use:
                del self._cached[key]
                self._failed_at.pop(key, None)
                self._backoff.succeeded(key)
                log.info(
                    "dropped credentials no live pod uses",
                    extra={"fields": _fields(key, credentials)},
                )
                continue
            retry_at = self._retry_at(key, now)
            if retry_at is not None:
                next_due = retry_at if next_due is None else min(next_due, retry_at)
                continue
            self._queue(key, Priority.REFRESH, deadline=self._deadline(credentials))
        for key in list(self._wanted):
            if key in self._queued or key in self._flights or key in self._cached:
                continue
            if in_use is None:
                in_use = self._in_use()
            if key not in in_use:
                del self._wanted[key]
                continue
            # throttled: its backoff step is the wait; otherwise retry_after_failure too
            throttled = self._wanted[key]
            retry_at = self._held_until(key, now) if throttled else self._retry_at(key, now)
            if retry_at is not None:
                next_due = retry_at if next_due is None else min(next_due, retry_at)
                continue
            self._queue(key, Priority.PREFETCH)
        if next_due is None:
            return None
        return max(0.0, (next_due - now).total_seconds())

    def _retry_at(self, key: CredentialKey, now: datetime) -> datetime | None:
        """When a refresh of ``key`` that failed may be tried again; None: now."""
        waits = [self._held_until(key, now)]
        failed_at = self._failed_at.get(key)
        if failed_at is not None and now < failed_at + self._retry_after_failure:
            waits.append(failed_at + self._retry_after_failure)
        ends = [when for when in waits if when is not None]
        return max(ends) if ends else None

    def _in_use(self) -> Container[CredentialKey]:
        try:
            return self._keys_in_use()
        except Exception:
            # a broken callback must not stop refreshes: keep every key this round
            log.exception("keys_in_use() failed; keeping every cached key")
            return _EVERY_KEY

    def _refused(self, key: CredentialKey, now: datetime) -> bool:
        """Refused or backing off: background work leaves the key alone for now."""
        return self._held_until(key, now) is not None

    def _held_until(self, key: CredentialKey, now: datetime) -> datetime | None:
        ends = [
            until
            for until in (self._refusals.until(key, now=now), self._backoff.until(key, now=now))
            if until is not None
        ]
        return max(ends) if ends else None

    def _due(self, key: CredentialKey, now: datetime) -> bool:
        """True when background work should fetch ``key`` now."""
        cached = self._cached.get(key)
        return cached is None or cached.remaining(now) <= self._refresh + self._margin

    def _deadline(self, credentials: Credentials) -> float:
        """When ``credentials`` stop being served: refreshes go to the budget by it."""
        return (credentials.expiration - self._refresh).timestamp()

    def _queue(self, key: CredentialKey, priority: Priority, *, deadline: float = 0.0) -> None:
        task = asyncio.create_task(
            self._background_fetch(key, priority, deadline), name=f"kiam-fetch:{key.role_arn}"
        )
        self._queued[key] = task

    async def _background_fetch(
        self, key: CredentialKey, priority: Priority, deadline: float
    ) -> None:
        ticket = None
        try:
            # with a pacer, its queue is the fetchers' too (its concurrency), by priority
            if self._pacer is not None:
                ticket = await self._pacer.turn(priority, deadline=deadline)
            async with self._slots if ticket is None else contextlib.nullcontext():
                joined = key in self._flights
                if joined:
                    flight = self._flights[key]  # a get() started it meanwhile
                elif self._due(key, now := self._clock.now()) and not self._refused(key, now):
                    flight = self._start_flight(key, paced=True)  # on this ticket
                else:
                    flight = None
                if ticket is not None and self._pacer is not None and (joined or flight is None):
                    self._pacer.unused(ticket)  # no call of ours: token and place go back
                    ticket = None
                if flight is None:
                    return
                # hold the slot for the whole call; errors are logged by the flight
                with contextlib.suppress(AwsError):
                    await asyncio.shield(flight)
        finally:
            if ticket is not None and self._pacer is not None:
                self._pacer.finished(ticket)
            self._queued.pop(key, None)
            # the loop skipped this key while it was queued: let it look again
            self._wake.set()

    # -- the single flight per key ---------------------------------------------------

    def _start_flight(
        self, key: CredentialKey, *, paced: bool = False
    ) -> asyncio.Future[Credentials]:
        """``paced``: the caller has its budget token already."""
        if self._closed:
            raise StsUnavailable("credential cache is shut down", role_arn=key.role_arn)
        flight: asyncio.Future[Credentials] = asyncio.get_running_loop().create_future()
        # nobody may be waiting when it fails (prefetch): mark the error as seen
        flight.add_done_callback(_consume_exception)
        self._flights[key] = flight
        worker = asyncio.create_task(
            self._fetch(key, flight, paced=paced), name=f"kiam-sts:{key.role_arn}"
        )
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)
        return flight

    async def _fetch(
        self, key: CredentialKey, flight: asyncio.Future[Credentials], *, paced: bool
    ) -> None:
        try:
            if self._pacer is not None and not paced:
                await self._pacer.turn(Priority.POD)
            try:
                credentials = await self._gateway.assume_role(key, duration=self._duration)
            except AwsError as error:
                if self._pacer is not None:
                    self._pacer.answered(error)
                raise
            if self._pacer is not None:
                self._pacer.answered(None)
            left = credentials.remaining(self._clock.now())
            if left <= self._refresh:
                raise StsFailure(
                    f"STS issued credentials for {key.role_arn} that expire in {left}, "
                    f"within the refresh window of {self._refresh}: check the clock and "
                    "--session-duration",
                    role_arn=key.role_arn,
                )
        except asyncio.CancelledError:
            self._flights.pop(key, None)
            flight.set_exception(
                StsUnavailable("credential cache is shut down", role_arn=key.role_arn)
            )
            raise
        except Exception as error:
            self._flights.pop(key, None)
            now = self._clock.now()
            self._failed_at[key] = now
            if isinstance(error, AwsError) and self._refusals.remember(key, error, now=now):
                self._refusals.expire(now=now)
                metrics.REFUSALS.set(len(self._refusals))
            if isinstance(error, AwsError):
                self._backoff.failed(key, error, now=now)
                if error.retryable and key not in self._cached:
                    self._wanted[key] = isinstance(error, StsThrottled)
                else:
                    self._wanted.pop(key, None)
            log.warning(
                "could not fetch credentials: %s",
                error,
                extra={"fields": {"role": key.role_arn, "session": key.session_name}},
            )
            self._wake.set()
            flight.set_exception(error)
            return
        self._cached[key] = credentials
        for listener in self._listeners:
            listener(key, credentials)
        self._wanted.pop(key, None)
        self._failed_at.pop(key, None)
        self._backoff.succeeded(key)
        self._flights.pop(key, None)
        log.info("fetched credentials", extra={"fields": _fields(key, credentials)})
        self._wake.set()
        flight.set_result(credentials)


def _consume_exception(future: asyncio.Future[Credentials]) -> None:
    if not future.cancelled():
        future.exception()


def _fields(key: CredentialKey, credentials: Credentials) -> dict[str, str]:
    return {
        "role": key.role_arn,
        "session": key.session_name,
        "access.key.id": credentials.access_key_id,
        "expiration": credentials.expiration.isoformat(),
    }
