"""Errors of the Kubernetes side, translated at the client boundary.

::

    KubeError                 any failure talking to the API server (``status`` when HTTP)
    ├── KubeGone              410: the resourceVersion was compacted; re-list
    ├── KubeNotFound          404
    ├── KubeConflict          409 (e.g. creating an object that exists)
    └── KubeUnavailable       connection refused/reset, timeouts, 429 and 5xx: retry later
    AmbiguousPodIP            live pods that would get different credentials claim one IP

kubernetes_asyncio, aiohttp and asyncio timeout errors never leave :mod:`kiam.k8s.client`.
"""

from __future__ import annotations


class KubeError(Exception):
    """A request to the Kubernetes API failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeGone(KubeError):
    """HTTP 410 or a watch ERROR event with code 410: the requested version is too old."""


class KubeNotFound(KubeError):
    """HTTP 404."""


class KubeConflict(KubeError):
    """HTTP 409."""


class KubeUnavailable(KubeError):
    """The API server could not be reached or asked us to come back later."""


class AmbiguousPodIP(Exception):
    """Several live pods that would receive different credentials claim one IP.

    The server answers FAILED_PRECONDITION (the agent 409) instead of guessing.
    """

    def __init__(self, claimants: tuple[str, ...], *, ip: str = "") -> None:
        where = f"IP {ip}" if ip else "one IP"
        super().__init__(
            f"{where} is claimed by live pods with different roles: {', '.join(claimants)}"
        )
        self.ip = ip
        self.claimants = claimants
        """``namespace/name`` of each disagreeing claimant."""
