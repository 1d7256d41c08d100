"""1,500 randomised hostile requests against the real agent (docs/SECURITY.md): odd
methods, bytes HTTP forbids, ``#``, ``@``, ``%`` sequences and dot segments in the
target, huge and empty token headers. Every answer is below 500 (the fake server and
IMDS answer every well-formed request), nothing the allow-list refuses reaches the
node's metadata service, and the agent logs no traceback."""

from __future__ import annotations

import asyncio
import random
import re

import pytest

from tests import fuzzing
from tests.agent.conftest import ALLOW, ImdsStandIn
from tests.agent.standins import AgentProcess, send_bytes

pytestmark = pytest.mark.fuzz

COUNT = fuzzing.count(1500)
SEED = fuzzing.seed(20261202)
METHODS = [b"GET", b"HEAD", b"PUT", b"POST", b"DELETE", b"OPTIONS", b"TRACE", b"PATCH",
           b"CONNECT", b"GeT", b"G\xc3\xa9T", b"", b"GET GET"]
PIECES = [b"/", b"//", b".", b"..", b"latest", b"meta-data", b"iam", b"security-credentials",
          b"api", b"token", b"instance-id", b"role-7", b"user-data", b"%2e", b"%2f", b"%25",
          b"%41", b"%", b"%zz", b"#", b"?", b"@", b"\\", b"%00", b"\xc3\xa9", b"\xff", b" ",
          b"\t", b"~", b"Security-Credentials", b"..%2f", b"%252e", b":", b"*"]
HEADERS = [
    b"",
    b"X-aws-ec2-metadata-token: \r\n",
    b"X-aws-ec2-metadata-token: " + b"A" * 7000 + b"\r\n",
    b"X-aws-ec2-metadata-token: \xff\xfe\r\n",
    b"X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n",
    b"X-aws-ec2-metadata-token-ttl-seconds: -1\r\n",
    b"X-aws-ec2-metadata-token-ttl-seconds: \xb2\r\n",
    b"X-Forwarded-For: 10.0.0.1\r\n",
]
# (headers, body): a body the framing announces, and one it gets wrong
BODIES = [(b"", b""), (b"Content-Length: 5\r\n", b"hello"),
          (b"Transfer-Encoding: chunked\r\n", b"zz\r\n")]


def _request(rng: random.Random) -> bytes:
    target = b"/" + b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 10)))
    if rng.random() < 0.1:
        target = target.lstrip(b"/")
    head = rng.choice(METHODS) + b" " + target + b" HTTP/1.1\r\nHost: 169.254.169.254\r\n"
    framing, body = rng.choice(BODIES)
    # Connection: close, so each answer ends with the connection (read until EOF)
    return head + rng.choice(HEADERS) + framing + b"Connection: close\r\n\r\n" + body


async def _status(port: int, data: bytes, source: str) -> int | None:
    try:
        answer = await send_bytes(port, data, source=source)
    except (ConnectionError, TimeoutError):
        return None
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(match.group(1)) if match else None


async def test_randomised_hostile_requests(agent: AgentProcess, fake_imds: ImdsStandIn) -> None:
    print(f"{COUNT} hostile requests, seed {SEED} (replay: {fuzzing.SEED_ENV}={SEED})")
    rng = random.Random(SEED)
    requests = [_request(rng) for _ in range(COUNT)]
    before = len(fake_imds.state.requests)
    limit = asyncio.Semaphore(16)

    async def one(i: int, data: bytes) -> tuple[int, int | None]:
        async with limit:
            # callers spread over many pod addresses (127.0.1.x are pods with roles)
            return i, await _status(agent.port, data, source=f"127.0.1.{100 + i % 100}")

    answers = await asyncio.gather(*(one(i, data) for i, data in enumerate(requests)))
    server_errors = [(i, s, requests[i][:120]) for i, s in answers if s is not None and s >= 500]
    assert server_errors == []
    silent = [requests[i][:100] for i, s in answers if s is None]
    assert len(silent) <= COUNT * 0.01, silent[:10]
    reached = [r.path for r in fake_imds.state.requests[before:] if r.method != "PUT"]
    assert all(re.search(ALLOW, path) for path in reached), reached
    log = agent.child.log()
    assert "Traceback" not in log
    assert "Error handling request" not in log
