"""A watch-fed cache of namespaces and their ``iam.amazonaws.com/permitted`` expression."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import NoReturn

from kiam.k8s.client import KubeClient
from kiam.k8s.model import NamespaceInfo, namespace_info_from_json
from kiam.k8s.waiters import KeyedWaiters
from kiam.k8s.watching import DELETED, ListWatch, WatchOptions

log = logging.getLogger(__name__)

NAMESPACES_PATH = "/api/v1/namespaces"


class NamespaceCache:
    """Namespaces by name, kept current by list+watch."""

    def __init__(
        self,
        client: KubeClient,
        *,
        options: WatchOptions,
        on_annotations_changed: Callable[[NamespaceInfo], None] | None = None,
    ) -> None:
        self.synced = asyncio.Event()
        """Set once the first full list is in."""
        self._on_annotations_changed = on_annotations_changed
        """Called with a cached namespace whose annotations changed (not for new ones)."""
        self._namespaces: dict[str, NamespaceInfo] = {}
        self._waiters = KeyedWaiters()
        self._listeners: list[Callable[[str], None]] = []
        self.watch = ListWatch(
            client,
            path=NAMESPACES_PATH,
            decode=namespace_info_from_json,
            on_replace=self._replace,
            on_event=self._apply,
            options=options,
        )

    async def run(self) -> NoReturn:
        await self.watch.run()

    def __len__(self) -> int:
        return len(self._namespaces)

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(name)`` after a namespace is added, changes its permitted
        expression or goes (a re-list included), with the cache already updated."""
        self._listeners.append(listener)

    def get(self, name: str) -> NamespaceInfo | None:
        return self._namespaces.get(name)

    def permitted(self, namespace: str) -> str | None:
        """The namespace's permitted expression (``""`` when unset), None when unknown."""
        info = self._namespaces.get(namespace)
        return None if info is None else info.permitted

    async def wait_for_namespace(
        self,
        name: str,
        *,
        timeout: float,  # noqa: ASYNC109
    ) -> NamespaceInfo | None:
        """The namespace, waiting up to ``timeout`` seconds for the watch to deliver it."""
        return await self._waiters.wait_for(
            name, lambda: self._namespaces.get(name), timeout=timeout
        )

    def _apply(self, kind: str, info: NamespaceInfo) -> None:
        if kind == DELETED:
            if self._namespaces.pop(info.name, None) is not None:
                self._tell(info.name)
            return
        old = self._namespaces.get(info.name)
        self._namespaces[info.name] = info
        self._waiters.wake([info.name])
        self._changed(old, info)
        if old is None or old.permitted != info.permitted:
            self._tell(info.name)

    def _replace(self, namespaces: list[NamespaceInfo]) -> None:
        old, self._namespaces = self._namespaces, {info.name: info for info in namespaces}
        for info in namespaces:
            self._changed(old.get(info.name), info)
        self._waiters.wake([n for n in self._waiters.waiting_keys() if n in self._namespaces])
        for name in old.keys() | self._namespaces.keys():
            before, after = old.get(name), self._namespaces.get(name)
            if before is None or after is None or before.permitted != after.permitted:
                self._tell(name)
        self.synced.set()

    def _tell(self, name: str) -> None:
        for listener in self._listeners:
            listener(name)

    def _changed(self, old: NamespaceInfo | None, info: NamespaceInfo) -> None:
        if (
            old is not None
            and old.annotations_digest != info.annotations_digest
            and self._on_annotations_changed is not None
        ):
            self._on_annotations_changed(info)
