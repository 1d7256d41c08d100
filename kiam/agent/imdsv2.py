"""IMDSv2 session tokens, answered by the agent itself.

Pods ``PUT /{v}/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` and send the
token back in ``X-aws-ec2-metadata-token``. A token is random, bound to the IP it was
issued to and expires after its TTL. The store is bounded: expired tokens are purged,
and when it is still full the oldest token goes first, so a flood of PUTs cannot grow
memory without bound (the evicted pod simply gets a 401 and asks for a new token, as
every SDK does).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from kiam.agent.errors import BadRequest

TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MIN_TTL = 1
MAX_TTL = 21600


def parse_ttl(value: str | None) -> int:
    """The TTL header's value in seconds, 1-21600; BadRequest otherwise (IMDS answers 400)."""
    if value is None:
        raise BadRequest(f"missing {TTL_HEADER} header")
    text = value.strip()
    if not text.isdigit() or not MIN_TTL <= int(text) <= MAX_TTL:
        raise BadRequest(f"{TTL_HEADER} must be an integer from {MIN_TTL} to {MAX_TTL}")
    return int(text)


@dataclass(frozen=True, slots=True)
class _Issued:
    ip: str
    expires: float


class TokenStore:
    """Tokens by value; ``check`` is True only for a live token issued to that IP."""

    def __init__(
        self, *, max_tokens: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._tokens: dict[str, _Issued] = {}
        self._max = max_tokens
        self._clock = clock

    def __len__(self) -> int:
        return len(self._tokens)

    def issue(self, *, ip: str, ttl: int) -> str:
        if len(self._tokens) >= self._max:
            self.purge()
        while len(self._tokens) >= self._max:
            # dicts keep insertion order: the first key is the oldest token
            del self._tokens[next(iter(self._tokens))]
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _Issued(ip=ip, expires=self._clock() + ttl)
        return token

    def check(self, token: str, *, ip: str) -> bool:
        issued = self._tokens.get(token)
        if issued is None:
            return False
        if issued.expires <= self._clock():
            del self._tokens[token]
            return False
        return secrets.compare_digest(issued.ip, ip)

    def purge(self) -> int:
        """Drop expired tokens; return how many went."""
        now = self._clock()
        expired = [t for t, issued in self._tokens.items() if issued.expires <= now]
        for token in expired:
            del self._tokens[token]
        return len(expired)
