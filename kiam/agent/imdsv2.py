"""IMDSv2 session tokens, answered by the agent itself.

Pods ``PUT /{v}/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` and send the
token back in ``X-aws-ec2-metadata-token``. A token is random, bound to the IP it was
issued to and expires after its TTL. The store is bounded twice, so a flood of PUTs
can neither grow memory nor push other pods' tokens out:

* per address: at most ``max_per_ip`` live tokens; a new one evicts that address's
  oldest, so a pod that floods the token route only ever loses its own tokens;
* in total: at most ``max_tokens``; expired tokens are purged first, then the oldest
  token of all goes (only reached when very many addresses ask at once).

An evicted token is answered 401, and the SDKs then ask for a new one.
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
    # ASCII digits only: str.isdigit() is also true of "²" (which int() refuses) and of
    # other scripts' digits, which IMDS does not accept either
    if not (text.isascii() and text.isdigit()) or not MIN_TTL <= int(text) <= MAX_TTL:
        raise BadRequest(f"{TTL_HEADER} must be an integer from {MIN_TTL} to {MAX_TTL}")
    return int(text)


@dataclass(frozen=True, slots=True)
class _Issued:
    ip: str
    expires: float


class TokenStore:
    """Tokens by value; ``check`` is True only for a live token issued to that IP."""

    def __init__(
        self,
        *,
        max_tokens: int = 10_000,
        max_per_ip: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens: dict[str, _Issued] = {}
        # per address, its tokens in issue order (a dict as an ordered set)
        self._by_ip: dict[str, dict[str, None]] = {}
        self._max = max_tokens
        self._max_per_ip = max_per_ip
        self._clock = clock

    def __len__(self) -> int:
        return len(self._tokens)

    def count(self, ip: str) -> int:
        """Tokens held for ``ip`` (live or not yet purged)."""
        return len(self._by_ip.get(ip, ()))

    def issue(self, *, ip: str, ttl: int) -> str:
        mine = self._by_ip.get(ip, {})
        while len(mine) >= self._max_per_ip:
            self._drop(next(iter(mine)))
        if len(self._tokens) >= self._max:
            self.purge()
        while len(self._tokens) >= self._max:
            # dicts keep insertion order: the first key is the oldest token
            self._drop(next(iter(self._tokens)))
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _Issued(ip=ip, expires=self._clock() + ttl)
        self._by_ip.setdefault(ip, {})[token] = None
        return token

    def check(self, token: str, *, ip: str) -> bool:
        issued = self._tokens.get(token)
        if issued is None:
            return False
        if issued.expires <= self._clock():
            self._drop(token)
            return False
        return secrets.compare_digest(issued.ip, ip)

    def purge(self) -> int:
        """Drop expired tokens; return how many went."""
        now = self._clock()
        expired = [t for t, issued in self._tokens.items() if issued.expires <= now]
        for token in expired:
            self._drop(token)
        return len(expired)

    def _drop(self, token: str) -> None:
        issued = self._tokens.pop(token)
        mine = self._by_ip[issued.ip]
        del mine[token]
        if not mine:
            del self._by_ip[issued.ip]
