"""A scripted kiam server with the node stream: ``KiamNodeService`` + ``KiamService``.

grpc.aio on 127.0.0.1 with the project's mTLS certificates, on an event loop of its own
in a thread, so synchronous tests and module-scoped fixtures drive it with plain calls.

* :attr:`ScriptedNodeServer.truth` is what the RPCs answer, per IP, as the
  :class:`NodeEntry` the stream would carry (refusals as their status, with the reason
  under ``kiam-reason-bin``); an IP not in it is ``NOT_FOUND``.
* :meth:`put` / :meth:`remove` change the truth and, unless ``stream=False``, send the
  change to every open stream; a new stream gets the streamed table as its snapshot,
  then ``snapshot_complete``, then changes and a heartbeat every ``heartbeat_ms``.
* :meth:`hush` stops every message (heartbeats too, and snapshots of new streams) until
  :meth:`speak`; :meth:`break_streams` ends the open streams with a status;
  ``unimplemented`` makes ``WatchNode`` answer UNIMPLEMENTED, as a Go Kiam server does.
* :attr:`delays` holds an IP's RPCs that long before they answer (an hour: until the
  caller's deadline cancels them).
* Every pod RPC is recorded (:attr:`calls`), so a test counts what reached the server;
  ``GetHealth`` only counted (:attr:`health_checks`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc import aio

from kiam.certs import CertPaths
from kiam.common.settings import TLSSettings
from kiam.common.tls import server_credentials
from kiam.wire import kiam_pb2, kiam_pb2_grpc, status

T = TypeVar("T")
RPC_KEY = "ASIAFROMRPC"
"""The access key of credentials an RPC makes up for an entry that carries none."""
Context = aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class Call:
    method: str
    ip: str
    role: str = ""


def refusal(answer: status.Answer, reason: str) -> kiam_pb2.Refusal:
    """A refusal as the real server sends it (:func:`kiam.wire.status.abort`)."""
    assert answer.code is not None
    return kiam_pb2.Refusal(
        code=answer.code.value[0], message=answer.message or reason, reason=reason
    )


class ScriptedNodeServer(kiam_pb2_grpc.KiamNodeServiceServicer, kiam_pb2_grpc.KiamServiceServicer):
    def __init__(self, *, heartbeat_ms: int = 200) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.truth: dict[str, kiam_pb2.NodeEntry] = {}
        self.streamed: dict[str, kiam_pb2.NodeEntry] = {}
        self.calls: list[Call] = []
        self.watches: list[str] = []
        """The node name of every WatchNode call, in order."""
        self.unimplemented = False
        self.delays: dict[str, float] = {}
        self.health_checks = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._streams: set[asyncio.Queue[kiam_pb2.NodeUpdate | grpc.StatusCode]] = set()
        self._talking = asyncio.Event()
        self._talking.set()
        self._server: aio.Server | None = None
        self.port = 0

    # ------------------------------------------------------------ control (any thread)

    def start(self, certs: CertPaths) -> ScriptedNodeServer:
        self._thread.start()
        self.port = self._run(self._start(certs))
        return self

    async def _start(self, certs: CertPaths) -> int:
        self._server = aio.server()
        kiam_pb2_grpc.add_KiamNodeServiceServicer_to_server(self, self._server)
        kiam_pb2_grpc.add_KiamServiceServicer_to_server(self, self._server)
        tls = TLSSettings(
            cert=str(certs.server_cert), key=str(certs.server_key), ca=str(certs.ca)
        )
        port = self._server.add_secure_port("127.0.0.1:0", server_credentials(tls))
        await self._server.start()
        return port

    def stop(self) -> None:
        if self._server is not None:
            self._run(self._server.stop(None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()  # its self-pipe sockets, or they leak as ResourceWarnings

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(10)

    def put(self, entry: kiam_pb2.NodeEntry, *, stream: bool = True, rpc: bool = True) -> None:
        """``entry`` becomes what the RPCs answer (``rpc``) and what the stream says."""
        with self._lock:
            if rpc:
                self.truth[entry.ip] = entry
            if stream:
                self.streamed[entry.ip] = entry
        if stream:
            self._send(kiam_pb2.NodeUpdate(entry=entry))

    def remove(self, ip: str, *, stream: bool = True, rpc: bool = True) -> None:
        with self._lock:
            if rpc:
                self.truth.pop(ip, None)
            if stream:
                self.streamed.pop(ip, None)
        if stream:
            self._send(kiam_pb2.NodeUpdate(removed_ip=ip))

    def _send(self, item: kiam_pb2.NodeUpdate | grpc.StatusCode) -> None:
        def deliver() -> None:
            for queue in self._streams:
                queue.put_nowait(item)

        self._loop.call_soon_threadsafe(deliver)

    def break_streams(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self._send(code)

    def hush(self) -> None:
        self._loop.call_soon_threadsafe(self._talking.clear)

    def speak(self) -> None:
        self._loop.call_soon_threadsafe(self._talking.set)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def rpcs(self, ip: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if ip in (None, c.ip)]

    # ------------------------------------------------------------ KiamNodeService

    async def WatchNode(
        self, request: kiam_pb2.WatchNodeRequest, context: Context
    ) -> AsyncIterator[kiam_pb2.NodeUpdate]:
        with self._lock:
            self.watches.append(request.node_name)
            snapshot = list(self.streamed.values())
        if self.unimplemented:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        queue: asyncio.Queue[kiam_pb2.NodeUpdate | grpc.StatusCode] = asyncio.Queue()
        self._streams.add(queue)
        try:
            await self._talking.wait()
            for entry in snapshot:
                yield kiam_pb2.NodeUpdate(entry=entry)
            yield kiam_pb2.NodeUpdate(
                snapshot_complete=kiam_pb2.SnapshotComplete(
                    entries=len(snapshot), heartbeat_interval_ms=self.heartbeat_ms
                )
            )
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self.heartbeat_ms / 1000)
                except TimeoutError:
                    item = kiam_pb2.NodeUpdate(heartbeat=kiam_pb2.Heartbeat())
                await self._talking.wait()
                if isinstance(item, grpc.StatusCode):
                    await context.abort(item, "scripted break")
                yield item
        finally:
            self._streams.discard(queue)

    # ------------------------------------------------------------ KiamService

    async def _entry(self, method: str, ip: str, role: str = "") -> kiam_pb2.NodeEntry | None:
        with self._lock:
            self.calls.append(Call(method, ip, role))
        await asyncio.sleep(self.delays.get(ip, 0.0))
        with self._lock:
            return self.truth.get(ip)

    async def _refuse(self, context: Context, refused: kiam_pb2.Refusal) -> None:
        code = status.code_of(refused.code)
        metadata = ((status.REASON_KEY, refused.reason.encode()),) if refused.reason else ()
        await context.abort(code, refused.message, trailing_metadata=metadata)

    async def GetPodRole(
        self, request: kiam_pb2.GetPodRoleRequest, context: Context
    ) -> kiam_pb2.Role:
        entry = await self._entry("GetPodRole", request.ip)
        if entry is None:
            await status.abort(context, status.POD_NOT_FOUND, f"no running pod has IP {request.ip}")
        if entry.HasField("role_refusal"):
            await self._refuse(context, entry.role_refusal)
        return kiam_pb2.Role(name=entry.role)

    async def GetPodCredentials(
        self, request: kiam_pb2.GetPodCredentialsRequest, context: Context
    ) -> kiam_pb2.Credentials:
        entry = await self._entry("GetPodCredentials", request.ip, request.role)
        if entry is None:
            await status.abort(context, status.POD_NOT_FOUND, f"no running pod has IP {request.ip}")
        if entry.HasField("role_refusal") and entry.HasField("credentials_refusal"):
            await self._refuse(context, entry.credentials_refusal)
        if request.role != entry.role:
            await status.abort(
                context, status.ROLE_FORBIDDEN, f"role {request.role} is not the pod's"
            )
        if entry.HasField("credentials_refusal"):
            await self._refuse(context, entry.credentials_refusal)
        if not entry.HasField("credentials"):
            # what the server's cache would fetch for the request
            return kiam_pb2.Credentials(
                code="Success",
                type="AWS-HMAC",
                access_key_id=RPC_KEY,
                secret_access_key="rpc-secret",
                token="rpc-token",
                expiration="2099-01-01T00:00:00Z",
                last_updated="2026-01-01T00:00:00Z",
            )
        return entry.credentials

    async def GetHealth(
        self, request: kiam_pb2.GetHealthRequest, context: Context
    ) -> kiam_pb2.HealthStatus:
        self.health_checks += 1
        return kiam_pb2.HealthStatus(message="ok from scripted")
