"""In-memory stand-ins for what the server's services are given (the namespace cache, the
event sink, the gRPC context), shared by its unit suites (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import grpc

from kiam.k8s.model import NamespaceInfo, PodInfo
from kiam.wire import status


class FakeNamespaces:
    """The namespace cache (``kiam.server.prefetch.Namespaces``): ``known`` maps a name to
    its permitted expression; a wait finds a known name, or one of ``arriving``, which it
    then knows. Records each lookup (``lookups``) and each wait's timeout (``waits``)."""

    def __init__(self, known: Mapping[str, str],
                 arriving: Mapping[str, str] | None = None) -> None:
        self.synced = asyncio.Event()
        self.synced.set()
        self.known = dict(known)
        self.arriving = dict(arriving or {})
        self.lookups: list[str] = []
        self.waits: list[float] = []

    def permitted(self, namespace: str) -> str | None:
        self.lookups.append(namespace)
        return self.known.get(namespace)

    async def wait_for_namespace(
        self,
        name: str,
        *,
        timeout: float,  # noqa: ASYNC109
    ) -> NamespaceInfo | None:
        self.waits.append(timeout)
        if name in self.arriving:
            self.known[name] = self.arriving.pop(name)
        if name in self.known:
            return NamespaceInfo(name=name, permitted=self.known[name])
        return None


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, reason: str) -> None:
        super().__init__(f"{code}: {details} ({reason})")
        self.code = code
        self.details = details
        """The status message, as Go's agent compares it."""
        self.reason = reason
        """The human reason: beside a fixed message, or the message itself."""


class FakeContext:
    def __init__(self, remaining: float | None = 2.0) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        beside = dict(trailing_metadata).get(status.REASON_KEY)
        raise Aborted(code, details, beside.decode() if beside is not None else details)


class FakeEvents:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, str]] = []

    def warning(self, pod: PodInfo, reason: str, message: str) -> None:
        self.recorded.append((pod.key, reason, message))
