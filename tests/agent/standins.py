"""Stand-ins for the agent's integration tests, on 127.0.0.1 with port 0.

* :func:`start_scripted_kiam` - the test bed's scripted server
  (:mod:`kiam_testbed.node_stream_server`, real mTLS with the project's own
  certificates) answering from a fixed table by caller IP, for the error paths a real
  server cannot easily produce. It records every call.
* :class:`FakeImds` - a tiny instance metadata service recording every request that
  reaches it; it insists on its own IMDSv2 session token.
* :class:`AgentProcess` - the real ``kiam agent``, started by the test bed's ``Stack``.
* :func:`raw_request` - HTTP/1.1 over a plain socket from a chosen source address, so
  a request target reaches the agent byte for byte (HTTP clients normalise paths).

All synchronous servers run in threads, so module-scoped fixtures can share them
across tests without sharing an event loop.
"""

from __future__ import annotations

import asyncio
import http.server
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from kiam.certs import CertPaths
from kiam.wire import kiam_pb2
from kiam_testbed.child import Child
from kiam_testbed.node_stream_server import ScriptedNodeServer
from kiam_testbed.stack import AGENT_READY, Placement, Stack

EXPIRATION = "2030-01-01T01:00:00Z"
LAST_UPDATED = "2030-01-01T00:00:00.123456+00:00"


def _refusal(code: grpc.StatusCode) -> kiam_pb2.Refusal:
    return kiam_pb2.Refusal(code=code.value[0], message=f"scripted {code.name}")


def _pod(ip: str, role: str = "", *, error: grpc.StatusCode | None = None,
         credentials_error: grpc.StatusCode | None = None,
         expiration: str = EXPIRATION) -> kiam_pb2.NodeEntry:
    entry = kiam_pb2.NodeEntry(ip=ip, role=role)
    entry.credentials.CopyFrom(kiam_pb2.Credentials(
        code="Success", type="AWS-HMAC", access_key_id=f"ASIA{role.upper().replace('-', '')}",
        secret_access_key="dummy-secret", token="dummy-token", expiration=expiration,
        last_updated=LAST_UPDATED,
    ))
    if error is not None:
        entry.role_refusal.CopyFrom(_refusal(error))
    if error is not None or credentials_error is not None:
        entry.credentials_refusal.CopyFrom(_refusal(error or credentials_error))
    return entry


# What the scripted server answers, by caller IP (any other: NOT_FOUND).
# 127.0.1.x are ordinary pods with role "role-x".
PODS = [
    _pod("127.0.0.2", "app-role"),
    _pod("127.0.0.3"),
    _pod("127.0.0.5", error=grpc.StatusCode.FAILED_PRECONDITION),
    _pod("127.0.0.6", "broken", credentials_error=grpc.StatusCode.INTERNAL),
    _pod("127.0.0.7", "slow"),
    _pod("127.0.0.8", error=grpc.StatusCode.UNAVAILABLE),
    _pod("127.0.0.9", "garbled", expiration="not a time"),
    _pod("127.0.0.10", "draining"),
    _pod("::1", "v6-role"),
    *(_pod(f"127.0.1.{x}", f"role-{x}") for x in range(256)),
]
DELAYS = {"127.0.0.7": 3600.0, "127.0.0.10": 0.3}
"""127.0.0.7 answers after the agent's deadline, 127.0.0.10 after a pause."""


def start_scripted_kiam(certs: CertPaths) -> ScriptedNodeServer:
    """A :class:`ScriptedNodeServer` answering from :data:`PODS`."""
    server = ScriptedNodeServer()
    for entry in PODS:
        server.put(entry, stream=False)
    server.delays.update(DELAYS)
    return server.start(certs)


# ------------------------------------------------------------------ IMDS stand-in


@dataclass
class ImdsRecord:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class ImdsState:
    requests: list[ImdsRecord] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self, method: str = "GET") -> list[str]:
        with self.lock:
            return [r.path for r in self.requests if r.method == method]


class _ImdsHandler(http.server.BaseHTTPRequestHandler):
    state: ImdsState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _record(self) -> None:
        with self.state.lock:
            self.state.requests.append(
                ImdsRecord(self.command, self.path, {k: v for k, v in self.headers.items()})
            )

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        self._record()
        if self.path != "/latest/api/token" or "X-Forwarded-For" in self.headers:
            self._send(403, b"forbidden")
            return
        token = "upstream-" + secrets.token_hex(8)
        with self.state.lock:
            self.state.tokens.add(token)
        self._send(200, token.encode())

    def do_GET(self) -> None:
        self._record()
        if self.path.endswith("/reset"):
            self.close_connection = True
            self.connection.shutdown(2)
            return
        with self.state.lock:
            valid = self.headers.get("X-aws-ec2-metadata-token") in self.state.tokens
        if not valid:
            self._send(401, b"")
            return
        self._send(200, f"upstream:{self.path}".encode())


def start_fake_imds() -> tuple[http.server.ThreadingHTTPServer, ImdsState, int]:
    state = ImdsState()
    handler = type("Handler", (_ImdsHandler,), {"state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fake-imds", daemon=True).start()
    return server, state, server.server_address[1]


# ------------------------------------------------------------------ the agent process

_LISTENING = r"listening on \S*?:(\d+)"


@dataclass
class AgentProcess:
    """``kiam agent`` (:meth:`Stack.start_agent`) on port 0 and every address with the
    given certificates; :attr:`port` is where it listens."""

    child: Child
    port: int

    @classmethod
    def start(
        cls, args: list[str], *, certs: CertPaths, workdir: Path, wrap: Sequence[str] = (),
        ready: bool = True,
    ) -> AgentProcess:
        """Start ``kiam agent ... ARGS`` (``wrap`` prefixes the command, e.g.
        ``ip netns exec NS``); ``args`` should name the ``--server-address``. Returns once
        it logged ``kiam agent ready`` (``ready=False``: once it listens)."""
        placement = Placement(wrap=lambda argv: [*wrap, *argv], agent_listen="", agent_port=0)
        stack = Stack(workdir / f"agent-{secrets.token_hex(4)}", placement,
                      certs=certs.directory)
        child = stack.start_agent(extra=["--gateway-timeout-creation", "2s", *args])
        try:
            port = int(child.wait_for(_LISTENING)[1])
            if ready:
                child.wait_for(AGENT_READY)
            return cls(child=child, port=port)
        except BaseException:
            child.stop()
            raise

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def stop(self, timeout: float = 15.0) -> int:
        return self.child.stop(timeout=timeout)


# ------------------------------------------------------------------ raw HTTP


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


async def send_bytes(port: int, data: bytes, *, source: str) -> bytes:
    """Send ``data`` from ``source`` as it is and read until the agent closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()


async def raw_request(
    port: int,
    target: str,
    *,
    method: str = "GET",
    source: str = "127.0.0.2",
    headers: dict[str, str] | None = None,
) -> RawResponse:
    """Send ``target`` exactly as given; read the whole response (Connection: close)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 169.254.169.254", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    data = await send_bytes(port, ("\r\n".join(lines) + "\r\n\r\n").encode(), source=source)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    return RawResponse(status=int(status_line.split()[1]), headers=parsed, body=body)
