"""A watch-fed cache of namespaces and their ``iam.amazonaws.com/permitted`` expression."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import NoReturn

from kiam.k8s.client import KubeClient
from kiam.k8s.model import NamespaceInfo, namespace_info_from_json
from kiam.k8s.watching import DELETED, Backoff, ListWatch

log = logging.getLogger(__name__)

NAMESPACES_PATH = "/api/v1/namespaces"


class NamespaceCache:
    """Namespaces by name, kept current by list+watch."""

    def __init__(
        self,
        client: KubeClient,
        *,
        resync_interval: float,
        watch_timeout: float = 300.0,
        inactivity_timeout: float | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.synced = asyncio.Event()
        """Set once the first full list is in."""
        self._namespaces: dict[str, NamespaceInfo] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.watch = ListWatch(
            client,
            path=NAMESPACES_PATH,
            decode=namespace_info_from_json,
            on_replace=self._replace,
            on_event=self._apply,
            resync_interval=resync_interval,
            watch_timeout=watch_timeout,
            inactivity_timeout=inactivity_timeout,
            backoff=backoff,
        )

    async def run(self) -> NoReturn:
        await self.watch.run()

    def __len__(self) -> int:
        return len(self._namespaces)

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (info := self._namespaces.get(name)) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(name, []).append(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                return self._namespaces.get(name)
            finally:
                waiters = self._waiters.get(name)
                if waiters is not None:
                    with contextlib.suppress(ValueError):
                        waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[name]
        return info

    def _wake(self, name: str) -> None:
        for waiter in self._waiters.pop(name, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _apply(self, kind: str, info: NamespaceInfo) -> None:
        if kind == DELETED:
            self._namespaces.pop(info.name, None)
            return
        self._namespaces[info.name] = info
        self._wake(info.name)

    def _replace(self, namespaces: list[NamespaceInfo]) -> None:
        self._namespaces = {info.name: info for info in namespaces}
        for name in [name for name in self._waiters if name in self._namespaces]:
            self._wake(name)
        self.synced.set()
