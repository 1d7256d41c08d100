"""Requests the HTTP parser refuses (kiam/agent/bad_requests.py): through the real agent
process, 400 with one line, counted, one warning per caller per minute, no traceback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from kiam.agent.bad_requests import FIRST_REQUEST_TIMEOUT, WarnLimiter, one_line
from kiam.certs import CertPaths
from kiam_testbed.node_stream_server import ScriptedNodeServer
from kiam_testbed.stack import free_port
from tests.agent.standins import AgentProcess, send_bytes

MALFORMED = [
    b"GET /latest/meta-data/\x00x HTTP/1.1\r\nHost: a\r\n\r\n",  # NUL in the target
    b"GET /latest/meta-data/\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",  # raw non-ASCII
    b"GET /a b c HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",  # over-long request line
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",  # over-long header
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
    b"GET / HTTP/9.9x\r\n\r\n",
]


async def test_malformed_requests_are_400_one_line_counted_and_quiet(
    certs: CertPaths, fake_kiam: ScriptedNodeServer, tmp_path: Path
) -> None:
    metrics_port = free_port()
    agent = AgentProcess.start(
        ["--server-address", fake_kiam.address,
         "--prometheus-listen-addr", f"127.0.0.1:{metrics_port}"],
        certs=certs,
        workdir=tmp_path,
    )
    try:
        for _ in range(3):
            for i, data in enumerate(MALFORMED):
                answer = await send_bytes(agent.port, data, source="127.0.2.1")
                head, _, body = answer.partition(b"\r\n\r\n")
                # HTTP/1.0 when the version itself could not be read
                assert head.split(b" ", 2)[1] == b"400", (i, answer[:200])
                assert body.startswith(b"bad request: "), (i, body)
                assert body.count(b"\n") == 1, (i, body)
        # a second caller gets its own (single) warning
        await send_bytes(agent.port, MALFORMED[0], source="127.0.2.2")
        async with aiohttp.ClientSession() as session:
            # the agent still answers well-formed requests
            async with session.get(agent.url() + "/ping") as resp:
                assert (resp.status, await resp.text()) == (200, "pong")
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                text = await resp.text()
    finally:
        assert agent.stop() == 0
    log = agent.child.log()
    count = next(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kiam_metadata_bad_requests_total ")
    )
    assert count == 3 * len(MALFORMED) + 1
    assert "Traceback" not in log
    assert "Error handling request" not in log
    warnings = [line for line in log.splitlines() if "malformed request refused" in line]
    assert len(warnings) == 2, warnings
    assert "127.0.2.1" in warnings[0] and "127.0.2.2" in warnings[1]


def test_warn_limiter_once_per_key_per_interval() -> None:
    limiter = WarnLimiter(interval=60.0, capacity=2)
    assert limiter.should_warn("a", now=0.0)
    assert not limiter.should_warn("a", now=59.9)
    assert limiter.should_warn("a", now=60.0)
    assert limiter.should_warn("b", now=61.0)
    assert not limiter.should_warn("b", now=62.0)
    # a third key evicts the one warned about longest ago ("a", at 60.0)
    assert limiter.should_warn("c", now=63.0)
    assert limiter.should_warn("a", now=64.0)
    assert not limiter.should_warn("c", now=65.0)


@pytest.mark.parametrize(
    ("message", "line"),
    [
        ("Invalid URL", "Invalid URL"),
        ("Invalid header value char:\n\n  b'x'\n    ^", "Invalid header value char"),
        ("", "malformed HTTP request"),
        ("  \n ", "malformed HTTP request"),
    ],
)
def test_one_line(message: str, line: str) -> None:
    assert one_line(message) == line


async def test_a_connection_that_never_completes_a_request_is_closed(
    agent: AgentProcess,
) -> None:
    async def held(data: bytes) -> float:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", agent.port, local_addr=("127.0.2.3", 0)
        )
        started = asyncio.get_running_loop().time()
        try:
            writer.write(data)
            await writer.drain()
            await asyncio.wait_for(reader.read(), timeout=FIRST_REQUEST_TIMEOUT + 10)
        finally:
            writer.close()
        return asyncio.get_running_loop().time() - started

    # nothing at all, and headers that never end (a slow-loris client)
    silent, slow = await asyncio.gather(held(b""), held(b"GET / HTTP/1.1\r\nHost: a\r\n"))
    for elapsed in (silent, slow):
        assert FIRST_REQUEST_TIMEOUT - 1 <= elapsed < FIRST_REQUEST_TIMEOUT + 10
