"""Watchers: per-stream filtering and buffering of changes, as the apiserver's watch cache.

A watcher is fed synchronously by the store (no await between a change and its delivery
to every watcher, so a watch never misses or reorders events). It holds ready-made
newline-delimited JSON lines; the HTTP handler drains them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import orjson

from kiam_testbed.kube.errors import JsonObject
from kiam_testbed.kube.resources import ResourceType, field_value
from kiam_testbed.kube.selectors import FieldSelector, LabelSelector

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"


class Entry:
    """One stored object (without ``kind``/``apiVersion``) and its cached serialisations.

    Stored objects are never mutated: every change builds a new ``Entry``, so the bytes
    can be cached and shared by lists, gets and watch events.
    """

    __slots__ = ("_full", "_item", "obj", "rt")

    def __init__(self, rt: ResourceType, obj: JsonObject) -> None:
        self.rt = rt
        self.obj = obj
        self._item: bytes | None = None
        self._full: bytes | None = None

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace", ""))

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def resource_version(self) -> int:
        return int(self.obj["metadata"]["resourceVersion"])

    def item_bytes(self) -> bytes:
        """As a list item: the apiserver omits ``kind`` and ``apiVersion`` there."""
        if self._item is None:
            self._item = orjson.dumps(self.obj)
        return self._item

    def full_bytes(self) -> bytes:
        if self._full is None:
            head = b'{"kind":"%s","apiVersion":"%s"' % (
                self.rt.kind.encode(),
                self.rt.api_version.encode(),
            )
            item = self.item_bytes()
            self._full = head + (b"," + item[1:] if item != b"{}" else b"}")
        return self._full

    def full(self) -> JsonObject:
        """A fresh deep copy with ``kind`` and ``apiVersion``, safe to hand to callers."""
        result: JsonObject = orjson.loads(self.full_bytes())
        return result


@dataclass(frozen=True, slots=True)
class Change:
    rv: int
    type: str
    entry: Entry
    """The new state; for DELETED the last state, stamped with the deletion's version."""
    prev: JsonObject | None
    """The state before a MODIFIED or DELETED change (selectors compare both)."""


def event_line(event_type: str, entry: Entry) -> bytes:
    return b'{"type":"%s","object":%s}\n' % (event_type.encode(), entry.full_bytes())


class Watcher:
    """One open watch stream: filters changes and buffers their event lines."""

    def __init__(
        self,
        *,
        rt: ResourceType,
        namespace: str | None,
        fields: FieldSelector,
        labels: LabelSelector,
        bookmarks: bool,
        max_pending: int,
    ) -> None:
        self.rt = rt
        self.namespace = namespace
        self.fields = fields
        self.labels = labels
        self.bookmarks = bookmarks
        self._max_pending = max_pending
        self._initial: deque[Entry] = deque()
        self._pending: deque[bytes] = deque()
        self._bookmark_wanted = False
        self.closed = False
        self.wakeup = asyncio.Event()

    def matches(self, obj: JsonObject) -> bool:
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if not self.labels.matches(meta.get("labels") or {}):
            return False
        return self.fields.matches(lambda field: field_value(obj, field))

    def add_initial(self, entries: list[Entry]) -> None:
        """The synthetic ADDED events a watch without a resourceVersion starts with."""
        self._initial.extend(entries)
        self.wakeup.set()

    def offer(self, change: Change) -> None:
        if self.closed:
            return
        now = self.matches(change.entry.obj)
        before = change.prev is not None and self.matches(change.prev)
        line: bytes | None = None
        if change.type == ADDED:
            line = event_line(ADDED, change.entry) if now else None
        elif change.type == DELETED:
            line = event_line(DELETED, change.entry) if now else None
        elif now and before:
            line = event_line(MODIFIED, change.entry)
        elif now:
            line = event_line(ADDED, change.entry)
        elif before and change.prev is not None:
            # It left the selection: DELETED with the previous state at the new version,
            # exactly what the apiserver's watch cache sends.
            prev = dict(change.prev)
            prev["metadata"] = {**change.prev["metadata"], "resourceVersion": str(change.rv)}
            line = event_line(DELETED, Entry(change.entry.rt, prev))
        if line is None:
            return
        self._pending.append(line)
        if len(self._pending) > self._max_pending:
            # A consumer this far behind is cut off, as the apiserver does; it relists.
            self.close()
        self.wakeup.set()

    def want_bookmark(self) -> None:
        # a closed stream must not end with a bookmark past events it never delivered
        if self.bookmarks and not self.closed:
            self._bookmark_wanted = True
            self.wakeup.set()

    def close(self) -> None:
        self.closed = True
        self._bookmark_wanted = False
        self._pending.clear()
        self._initial.clear()
        self.wakeup.set()

    def drain(self, *, current_rv: int, max_bytes: int = 1 << 20) -> bytes:
        """Lines ready to send (up to about ``max_bytes``), then a bookmark if one is due.

        A bookmark carries ``current_rv`` only once every earlier change has been
        drained, so a client resuming from it never skips an event.
        """
        chunks: list[bytes] = []
        size = 0
        while self._initial and size < max_bytes:
            line = event_line(ADDED, self._initial.popleft())
            chunks.append(line)
            size += len(line)
        while self._pending and size < max_bytes:
            line = self._pending.popleft()
            chunks.append(line)
            size += len(line)
        if self._bookmark_wanted and not self.closed and not self._initial and not self._pending:
            self._bookmark_wanted = False
            chunks.append(self.bookmark_line(current_rv))
        if not self._initial and not self._pending:
            self.wakeup.clear()
        return b"".join(chunks)

    def bookmark_line(self, rv: int) -> bytes:
        obj = {
            "kind": self.rt.kind,
            "apiVersion": self.rt.api_version,
            "metadata": {"resourceVersion": str(rv)},
        }
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"
