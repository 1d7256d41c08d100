"""List, then watch from the list's resourceVersion, forever.

:class:`ListWatch` keeps the infinite loop thin (:meth:`ListWatch.run`) around one
testable step (:meth:`ListWatch.step`): a full (paged) list handed to ``on_replace``, or
one watch whose ADDED/MODIFIED/DELETED events go to ``on_event``. Around it:

- the watch resumes from the last resourceVersion seen (BOOKMARKs advance it) whenever a
  stream ends or breaks, so a dropped connection loses nothing;
- 410 Gone (HTTP or an ERROR event) means that version was compacted away: re-list, and
  the replace drops whatever was deleted while we were not watching;
- other errors back off (0.1s doubling to 10s, with jitter) and retry, logged with the
  attempt number;
- every ``resync_interval`` seconds the state is re-listed from scratch (``--sync``);
- a watch is cut when nothing arrives for ``inactivity_timeout`` or when it outlives its
  ``timeoutSeconds`` by a margin (a server or proxy that never ends it).

Objects are decoded page by page into small values (``decode``), so a list of 50,000 pods
never holds all the raw JSON at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

import orjson

from kiam.k8s.client import KubeClient, Params, error_for_status
from kiam.k8s.errors import KubeError, KubeGone

log = logging.getLogger(__name__)

T = TypeVar("T")

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Exponential backoff with jitter; ``attempt`` counts from 1."""

    initial: float = 0.1
    maximum: float = 10.0

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * 2.0 ** max(0, min(attempt - 1, 30)))
        # jitter spreads the reconnects of several servers after an API server restart
        return base * random.uniform(0.5, 1.0)


@dataclass(frozen=True, kw_only=True)
class WatchOptions:
    """How one collection is listed and watched; every cache takes one."""

    resync_interval: float
    """Seconds between full re-lists (``--sync``); 0 lists only when needed."""
    watch_timeout: float = 300.0
    """The ``timeoutSeconds`` asked of each watch (shorter when a resync is due sooner)."""
    inactivity_timeout: float | None = None
    """Seconds of silence that cut a watch; None: the watch's timeout plus a margin."""
    page_size: int = 500
    """Objects per list page."""
    backoff: Backoff = Backoff()
    """The delays between failed attempts."""


def _resource_version(obj: Any) -> str | None:
    if isinstance(obj, dict):
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            rv = meta.get("resourceVersion")
            if isinstance(rv, str) and rv:
                return rv
    return None


class ListWatch(Generic[T]):
    """Keep ``on_replace``/``on_event`` fed with the objects of one collection."""

    def __init__(
        self,
        client: KubeClient,
        *,
        path: str,
        decode: Callable[[dict[str, Any]], T],
        on_replace: Callable[[list[T]], None],
        on_event: Callable[[str, T], None],
        options: WatchOptions,
    ) -> None:
        self._client = client
        self._path = path
        self._decode = decode
        self._on_replace = on_replace
        self._on_event = on_event
        self._options = options
        self._next_resync = 0.0
        self.resource_version: str | None = None
        """Where the next watch starts; None means list first."""
        self.lists = 0
        """Completed lists (for tests and logs)."""

    async def run(self) -> NoReturn:
        attempt = 0
        gone = 0
        while True:
            try:
                progressed = await self.step()
            except KubeGone as exc:
                self.resource_version = None
                gone += 1
                log.info("%s: %s; re-listing", self._path, exc)
                if gone > 1:  # a server that keeps answering 410 must not spin us
                    await asyncio.sleep(self._options.backoff.delay(gone - 1))
                continue
            except KubeError as exc:
                attempt += 1
                delay = self._options.backoff.delay(attempt)
                log.warning(
                    "%s: list/watch failed (attempt %d), retrying in %.2fs: %s",
                    self._path,
                    attempt,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                continue
            if progressed:
                attempt = gone = 0
            else:
                # the stream ended at once with nothing in it: do not reconnect in a tight loop
                attempt += 1
                delay = self._options.backoff.delay(attempt)
                log.debug(
                    "%s: empty watch ended (attempt %d), next in %.2fs", self._path, attempt, delay
                )
                await asyncio.sleep(delay)

    async def step(self) -> bool:
        """List when needed (first time, after 410, resync due), else watch once.

        Answers whether anything happened (a list, or a watch that delivered events or
        lasted a while). Raises KubeError.
        """
        if self.resource_version is None or (
            self._options.resync_interval > 0 and time.monotonic() >= self._next_resync
        ):
            await self.relist()
            return True
        return await self.watch_once()

    async def relist(self) -> None:
        items: list[T] = []
        params: dict[str, str | int | bool] = {"limit": self._options.page_size}
        while True:
            body = await self._client.list_raw(self._path, params)
            try:
                page = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise KubeError(f"list {self._path}: invalid JSON: {exc}") from exc
            del body
            if not isinstance(page, dict):
                raise KubeError(f"list {self._path}: not an object")
            for obj in page.get("items") or ():
                item = self._decode_or_none(obj)
                if item is not None:
                    items.append(item)
            meta = page.get("metadata") if isinstance(page.get("metadata"), dict) else {}
            token = meta.get("continue") if isinstance(meta, dict) else None
            if not token:
                break
            params["continue"] = str(token)
            del page
        rv = _resource_version(page)
        if rv is None:
            raise KubeError(f"list {self._path}: no resourceVersion")
        self._on_replace(items)
        self.resource_version = rv
        self._next_resync = time.monotonic() + self._options.resync_interval
        self.lists += 1
        log.info("listed %d objects from %s at resourceVersion %s", len(items), self._path, rv)

    async def watch_once(self) -> bool:
        seconds = self._options.watch_timeout
        if self._options.resync_interval > 0:
            seconds = min(seconds, self._next_resync - time.monotonic())
        seconds = max(1, math.ceil(seconds))
        params: Params = {
            "resourceVersion": self.resource_version or "",
            "allowWatchBookmarks": True,
            "timeoutSeconds": seconds,
        }
        inactivity = self._options.inactivity_timeout or seconds + 30.0
        started = time.monotonic()
        received = 0
        try:
            async with asyncio.timeout(seconds + 30.0):
                events = self._client.watch(self._path, params, inactivity_timeout=inactivity)
                async with contextlib.aclosing(events):
                    async for event in events:
                        received += 1
                        self._handle(event)
        except TimeoutError:
            log.info("%s: watch outlived timeoutSeconds=%d; restarting it", self._path, seconds)
        return received > 0 or time.monotonic() - started >= 1.0

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object")
        if kind == "ERROR":
            status = obj if isinstance(obj, dict) else {}
            code = status.get("code")
            raise error_for_status(
                code if isinstance(code, int) else 500, str(status.get("message") or "")
            )
        rv = _resource_version(obj)
        if kind in (ADDED, MODIFIED, DELETED) and isinstance(obj, dict):
            item = self._decode_or_none(obj)
            if item is not None:
                self._on_event(kind, item)
        elif kind != "BOOKMARK":
            log.debug("%s: ignoring watch event of type %r", self._path, kind)
        if rv is not None:
            self.resource_version = rv

    def _decode_or_none(self, obj: Any) -> T | None:
        if not isinstance(obj, dict):
            return None
        try:
            return self._decode(obj)
        except ValueError as exc:
            log.warning("%s: skipping an object kiam cannot read: %s", self._path, exc)
            return None
