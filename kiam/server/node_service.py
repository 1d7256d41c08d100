"""``kiam.KiamNodeService``: the node replica stream, ``WatchNode`` (docs/architecture.md,
"The node replica").

A stream sends the node's snapshot (one ``entry`` per IP), ``snapshot_complete``, then
every change as :class:`~kiam.server.node_feed.NodeFeed` pushes it, with a ``heartbeat``
whenever :data:`HEARTBEAT_INTERVAL` passes without a message. Refusals:

- UNAVAILABLE before both caches have synced and while the server drains (as the
  KiamService RPCs: the agent goes to another server at once);
- INVALID_ARGUMENT for an empty node name;
- RESOURCE_EXHAUSTED beyond ``--node-stream-limit`` open streams;
- ABORTED when the stream fell ``--node-stream-buffer`` updates behind (cut off: the
  agent reconnects and gets a new snapshot).

These codes end a stream; they are not rows of :mod:`kiam.wire.status`, which an agent
answers pods with: an agent without a stream asks the KiamService RPCs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import grpc
from grpc import aio

from kiam.server import metrics
from kiam.server.node_feed import NodeFeed, Subscription
from kiam.wire import kiam_pb2, kiam_pb2_grpc, status

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 1.0
"""Seconds without a message before a heartbeat. The agent stops answering from its
replica after three intervals of silence, so this bounds how long an agent can answer
from a replica whose server is gone (3 s, about an RPC's timeout), at the cost of one
small message a second per stream (500 streams: 500 messages a second, nothing)."""

Context = aio.ServicerContext[Any, Any]


class Synced(Protocol):
    @property
    def synced(self) -> asyncio.Event: ...


class KiamNodeService(kiam_pb2_grpc.KiamNodeServiceServicer):
    """The servicer; :meth:`drain` ends every stream with UNAVAILABLE."""

    def __init__(
        self,
        *,
        feed: NodeFeed,
        caches: tuple[Synced, ...],
        stream_limit: int,
        stream_buffer: int,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self._feed = feed
        self._caches = caches
        self._limit = stream_limit
        self._buffer = stream_buffer
        self._heartbeat = heartbeat_interval
        self._open = 0
        self.draining = False

    def drain(self) -> None:
        """Shutdown: end open streams and refuse new ones with UNAVAILABLE."""
        self.draining = True
        self._feed.end_all(grpc.StatusCode.UNAVAILABLE, "kiam server is shutting down")

    async def WatchNode(self, request: kiam_pb2.WatchNodeRequest, context: Context) -> None:  # type: ignore[override]
        node = request.node_name
        await self._admit(node, context)
        # Headers go out now, on their own: a stream that ends (drain, cut off) while
        # its first message is still being written must not need to send them with
        # its status, which gRPC refuses while that write is outstanding.
        await context.send_initial_metadata(())
        entries, subscription = self._feed.subscribe(node, buffer=self._buffer)
        self._open += 1
        metrics.NODE_STREAMS.inc()
        log.info(
            "node stream opened",
            extra={"fields": {"node": node, "entries": len(entries), "peer": context.peer()}},
        )
        try:
            await self._stream(entries, subscription, context)
        finally:
            self._feed.unsubscribe(subscription)
            self._open -= 1
            metrics.NODE_STREAMS.dec()

    async def _admit(self, node: str, context: Context) -> None:
        if self.draining:
            await status.abort(context, status.UNAVAILABLE, "kiam server is shutting down")
        if not all(cache.synced.is_set() for cache in self._caches):
            await status.abort(
                context,
                status.UNAVAILABLE,
                "kiam server has not synced its pod and namespace caches yet",
            )
        if not node:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "node_name is empty")
        if self._open >= self._limit:
            reason = (
                f"kiam server already serves {self._open} node streams "
                f"(--node-stream-limit {self._limit}); use another server or the RPCs"
            )
            log.warning("node stream refused: %s", reason, extra={"fields": {"node": node}})
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, reason)

    async def _stream(
        self, entries: list[kiam_pb2.NodeEntry], subscription: Subscription, context: Context
    ) -> None:
        for entry in entries:
            await self._write(context, subscription, kiam_pb2.NodeUpdate(entry=entry))
        metrics.NODE_ENTRIES_SENT.inc(len(entries))
        complete = kiam_pb2.SnapshotComplete(
            entries=len(entries), heartbeat_interval_ms=round(self._heartbeat * 1000)
        )
        await self._write(context, subscription, kiam_pb2.NodeUpdate(snapshot_complete=complete))
        heartbeat = kiam_pb2.NodeUpdate(heartbeat=kiam_pb2.Heartbeat())
        while True:
            update = subscription.take()
            if update is None:
                await subscription.wait(self._heartbeat)
                update = subscription.take()
            if subscription.ended.done():
                await self._end(context, subscription)
            if update is None:
                await self._write(context, subscription, heartbeat)
                continue
            message, observed = update
            await self._write(context, subscription, message)
            metrics.NODE_PUSH_LATENCY.observe(time.monotonic() - observed)
            if message.HasField("entry"):
                metrics.NODE_ENTRIES_SENT.inc()

    async def _write(
        self, context: Context, subscription: Subscription, message: kiam_pb2.NodeUpdate
    ) -> None:
        """Write, unless the stream ends first (a client that does not read blocks the
        write; the feed then cuts the subscription off, which ends it here)."""
        write = asyncio.ensure_future(context.write(message))
        write.add_done_callback(_consume)
        try:
            pending: set[asyncio.Future[Any]] = {write, subscription.ended}
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            write.cancel()
            raise
        if not write.done():
            await self._end(context, subscription)
        write.result()

    async def _end(self, context: Context, subscription: Subscription) -> None:
        code, reason = subscription.ended.result()
        if code is grpc.StatusCode.ABORTED:
            metrics.NODE_STREAMS_CUT_OFF.inc()
            log.warning("node stream cut off: %s", reason,
                        extra={"fields": {"node": subscription.node, "peer": context.peer()}})
        await context.abort(code, reason)


def _consume(write: asyncio.Future[None]) -> None:
    # a write the end overtook fails with the stream; nobody waits for it any more
    if not write.cancelled():
        write.exception()
