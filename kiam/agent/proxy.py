"""Forwarding allow-listed paths to the real instance metadata service.

The agent holds its own IMDSv2 session token for the real IMDS (fetched with a PUT,
cached until shortly before it expires, refreshed by one request at a time) and sends
it on every proxied request, so pods never need the node's hop limit to be above 1 and
their own tokens (issued by the agent) never leave the node. An IMDS that refuses the
token PUT (IMDSv1-only stand-ins, some emulators) is used without a token.

Only the normalised path is forwarded: no query string, no client headers (above all
not ``X-Forwarded-For``, which IMDS refuses).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from kiam.agent.errors import UpstreamFailed

log = logging.getLogger(__name__)

UPSTREAM_TTL = 21600
# Renew this long before expiry, so a token is never sent when about to lapse.
_RENEW_MARGIN = 300.0
# After a refused token PUT, proxy without a token for this long before asking again.
_NO_TOKEN_RETRY = 60.0
_TOKEN_HEADER = "X-aws-ec2-metadata-token"
_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
# Headers worth passing back to the pod; hop-by-hop ones must not be.
_PASS_BACK = ("Content-Type", "Last-Modified", "ETag")


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    body: bytes
    headers: dict[str, str]


class MetadataProxy:
    """GET a path from the real IMDS with the agent's own session token."""

    def __init__(
        self,
        *,
        endpoint: str,
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._session = session
        self._clock = clock
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = asyncio.Lock()

    async def _upstream_token(self, *, budget: float) -> str | None:
        async with self._lock:
            if self._clock() < self._token_expires:
                return self._token
            try:
                async with self._session.put(
                    f"{self._endpoint}/latest/api/token",
                    headers={_TTL_HEADER: str(UPSTREAM_TTL)},
                    timeout=aiohttp.ClientTimeout(total=budget),
                    allow_redirects=False,
                ) as resp:
                    if resp.status != 200:
                        # an IMDSv1-only service: go without a token, and ask again later
                        log.info("metadata service gave no session token (HTTP %d)", resp.status)
                        self._token = None
                        self._token_expires = self._clock() + _NO_TOKEN_RETRY
                        return None
                    token = (await resp.text()).strip()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamFailed(f"metadata service unreachable: {exc!r}") from None
            self._token = token
            self._token_expires = self._clock() + UPSTREAM_TTL - _RENEW_MARGIN
            return token

    def _forget_token(self) -> None:
        self._token = None
        self._token_expires = 0.0

    async def get(self, path: str, *, method: str = "GET", budget: float) -> UpstreamResponse:
        """Fetch ``path`` (already normalised and allow-listed). UpstreamFailed on errors."""
        deadline = self._clock() + budget
        for attempt in range(2):
            token = await self._upstream_token(budget=max(deadline - self._clock(), 0.01))
            headers = {_TOKEN_HEADER: token} if token else {}
            try:
                async with self._session.request(
                    method,
                    # encoded=True: send the normalised path byte for byte, no re-quoting
                    URL(f"{self._endpoint}{path}", encoded=True),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=max(deadline - self._clock(), 0.01)),
                    allow_redirects=False,
                ) as resp:
                    body = await resp.read()
                    if resp.status == 401 and token and attempt == 0:
                        # our token was revoked or the IMDS restarted: fetch a new one
                        self._forget_token()
                        continue
                    kept = {h: resp.headers[h] for h in _PASS_BACK if h in resp.headers}
                    return UpstreamResponse(status=resp.status, body=body, headers=kept)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamFailed(f"metadata service unreachable: {exc!r}") from None
        raise UpstreamFailed("metadata service refused the agent's session token")
