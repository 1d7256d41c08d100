"""The agent's follower of ``KiamNodeService.WatchNode``: it keeps the replica fed.

One stream at a time, on the channels the :class:`~kiam.agent.client.KiamClient`
already holds (one per server target). docs/architecture.md, "The node replica":

* a stream that **breaks** (any status, or the server ends it) is re-opened at once on
  the next server in the list; only when a whole round of servers fails before a
  snapshot completes (or within :data:`MIN_HEALTHY` of it) does the follower wait
  (:data:`BACKOFF`, growing per round);
* a stream **silent** for three heartbeat intervals is cancelled as broken (the
  replica has stopped answering at that moment already); before the first
  ``snapshot_complete`` the limit is :data:`OPEN_TIMEOUT`;
* a server answering **UNIMPLEMENTED** (Go Kiam) is logged once and not asked again for
  :data:`UNIMPLEMENTED_RETRY`, so an agent in front of Go servers stays on the RPC path
  without a retry storm, yet notices within minutes when the servers are upgraded.

Each stream starts the replica over (:meth:`Replica.opened`), and whatever ends it
stops the replica answering (:meth:`Replica.closed`) until the next snapshot completes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Literal

import grpc
from grpc import aio

from kiam.agent import metrics
from kiam.agent.bad_requests import WarnLimiter
from kiam.agent.replica import Replica
from kiam.wire import kiam_pb2, kiam_pb2_grpc
from kiam.wire.client import describe

log = logging.getLogger(__name__)

BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds to wait after a whole round of servers failed, by consecutive round."""
OPEN_TIMEOUT = 30.0
"""Seconds a stream may go without a message before its first ``snapshot_complete``."""
UNIMPLEMENTED_RETRY = 600.0
"""Seconds before a server that answered UNIMPLEMENTED is asked again."""
MIN_HEALTHY = 1.0
"""A stream that served for less than this counts as failed: servers that break every
stream right after its snapshot get the backoff, not a reconnect loop."""

Outcome = Literal["served", "broken", "stale", "unimplemented"]


class NodeStream:
    def __init__(
        self,
        *,
        channels: Sequence[aio.Channel],
        targets: Sequence[str],
        node_name: str,
        replica: Replica,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.targets = tuple(targets)
        self._stubs: list[kiam_pb2_grpc.KiamNodeServiceAsyncStub] = [
            kiam_pb2_grpc.KiamNodeServiceStub(c)
            for c in channels
        ]
        self.node_name = node_name
        self.replica = replica
        self._clock = clock
        self._unimplemented: dict[int, float] = {}
        """Server index -> when it answered UNIMPLEMENTED."""
        self._told_unimplemented = False
        self._unreachable = WarnLimiter()
        """One warning a minute per server whose stream breaks; the retries are info."""
        self.current: str | None = None
        """The target whose stream is open (None between streams)."""

    async def run(self) -> None:
        """Follow streams until cancelled."""
        start, failed_rounds, failures = 0, 0, 0
        while True:
            candidates = self._candidates(start)
            if not candidates:
                self.replica.closed("unimplemented")
                await asyncio.sleep(self._until_retry())
                continue
            index = candidates[0]
            start = index + 1  # the next stream goes to the next server
            began = self._clock()
            try:
                outcome = await self.follow(index)
            except Exception:  # a bug: logged, and the follower goes on after a pause
                log.exception("node stream failed", extra={"fields": self._fields(index)})
                self.replica.closed()
                outcome = "broken"
            if outcome == "served" and self._clock() - began >= MIN_HEALTHY:
                failed_rounds = failures = 0
                continue
            if outcome == "unimplemented":
                continue
            failures += 1
            if failures >= len(candidates):
                # every server failed once: a short pause, growing while it lasts
                delay = BACKOFF[min(failed_rounds, len(BACKOFF) - 1)]
                failed_rounds, failures = failed_rounds + 1, 0
                await asyncio.sleep(delay)

    def _candidates(self, start: int) -> list[int]:
        now = self._clock()
        count = len(self._stubs)
        order = [(start + i) % count for i in range(count)]
        return [
            i
            for i in order
            if now - self._unimplemented.get(i, -UNIMPLEMENTED_RETRY) >= UNIMPLEMENTED_RETRY
        ]

    def _until_retry(self) -> float:
        earliest = min(self._unimplemented.values())
        return max(earliest + UNIMPLEMENTED_RETRY - self._clock(), 0.1)

    def _fields(self, index: int) -> dict[str, object]:
        return {"server": self.targets[index], "node": self.node_name}

    async def follow(self, index: int) -> Outcome:
        """One stream on server ``index``, until it ends; what ended it."""
        request = kiam_pb2.WatchNodeRequest(node_name=self.node_name)
        call = self._stubs[index].WatchNode(request)
        updates = aiter(call)
        self.replica.opened(now=self._clock())
        self.current = self.targets[index]
        metrics.node_streams.labels("opened").inc()
        served = False
        complained = False
        fields = self._fields(index)
        try:
            while True:
                limit = self.replica.stale_after if served else OPEN_TIMEOUT
                try:
                    update = await asyncio.wait_for(anext(updates), timeout=limit or OPEN_TIMEOUT)
                except TimeoutError:
                    metrics.node_streams.labels("stale").inc()
                    log.warning(
                        "node stream silent for %.1f s; re-opening it",
                        limit or OPEN_TIMEOUT,
                        extra={"fields": fields},
                    )
                    self.replica.closed()
                    return "served" if served else "stale"
                except StopAsyncIteration:
                    raise _Ended() from None
                problem = self.replica.apply(update, now=self._clock())
                if problem and not complained:
                    complained = True
                    log.warning("node stream: %s", problem, extra={"fields": fields})
                if not served and update.WhichOneof("kind") == "snapshot_complete":
                    served = True
                    metrics.node_streams.labels("complete").inc()
                    log.info(
                        "node replica serving",
                        extra={"fields": {**fields, "entries": len(self.replica)}},
                    )
        except _Ended:
            metrics.node_streams.labels("broken").inc()
            log.warning("node stream ended by the server; re-opening it", extra={"fields": fields})
            self.replica.closed()
            return "served" if served else "broken"
        except aio.AioRpcError as exc:
            return self._failed(index, exc, served=served)
        finally:
            self.current = None
            call.cancel()

    def _failed(self, index: int, exc: aio.AioRpcError, *, served: bool) -> Outcome:
        fields = self._fields(index)
        if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
            self._unimplemented[index] = self._clock()
            self.replica.closed("unimplemented")
            metrics.node_streams.labels("unimplemented").inc()
            if not self._told_unimplemented:
                self._told_unimplemented = True
                log.warning(
                    "kiam server does not offer the node stream (a Go Kiam server?): "
                    "answering from RPCs; asking it again every %d s",
                    UNIMPLEMENTED_RETRY,
                    extra={"fields": fields},
                )
            return "unimplemented"
        self._unimplemented.pop(index, None)
        self.replica.closed()
        metrics.node_streams.labels("broken").inc()
        # the cause, once a minute per server; each retry after that at info
        target = self.targets[index]
        warn = self._unreachable.should_warn(target, now=self._clock())
        log.log(
            logging.WARNING if warn else logging.INFO,
            "node stream broken (%s); re-opening it",
            describe(target, exc),
            extra={"fields": fields},
        )
        return "served" if served else "broken"


class _Ended(Exception):
    """The server ended the stream with OK, which it never should: treated as broken."""
