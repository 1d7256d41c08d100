"""Connection-level behaviour of the real ``kiam server`` process: gRPC keepalive and
max-connection-age options, and certificates reloaded from disk without a restart.

A small TCP relay on 127.0.0.1 sits between client and server to count the TCP
connections (and the client's writes) the server sees; the TLS inside is untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc import aio

from kiam.certs import CertPaths
from kiam.common.tls import channel_credentials
from kiam.wire import kiam_pb2, kiam_pb2_grpc
from kiam_testbed.commands import ROLE_BASE_ARN as BASE_ARN
from kiam_testbed.processes import agent_tls, make_certs, server_stack

ROLE = "iam.amazonaws.com/role"
# Channels here must not share a subchannel (and so a connection) with another channel.
LOCAL = ("grpc.use_local_subchannel_pool", 1)


class Relay:
    """Forwards every TCP connection to ``target``; counts connections and client writes."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.client_writes = 0
        self.changed = asyncio.Event()
        self.address = ""

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def _bump(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        self._bump()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            self._writers.add(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer, from_client=True),
                self._pipe(up_reader, writer, from_client=False),
            )
        except OSError:
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_client: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if from_client:
                    self.client_writes += 1
                    self._bump()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    async def wait_until(self, check: Callable[[], bool]) -> None:
        while not check():
            await self.changed.wait()


@contextlib.asynccontextmanager
async def channel_to(
    address: str, certs: CertPaths, *options: tuple[str, int]
) -> AsyncIterator[kiam_pb2_grpc.KiamServiceAsyncStub]:
    credentials = channel_credentials(agent_tls(certs))
    channel = aio.secure_channel(address, credentials, options=[LOCAL, *options])
    try:
        yield kiam_pb2_grpc.KiamServiceStub(channel)
    finally:
        await channel.close(None)


async def test_max_connection_age_recycles_connections_without_failing_requests(
    tmp_path: Path, certs: CertPaths
) -> None:
    args = (
        "--grpc-max-connection-age-duration",
        "1s",
        "--grpc-max-connection-age-grace-duration",
        "1s",
        "--grpc-keepalive-time-duration",
        "1s",
        "--grpc-keepalive-timeout-duration",
        "1s",
    )
    async with server_stack(
        tmp_path, certs=certs, namespaces={"team": ".*"}, server_args=args
    ) as stack:
        stack.kube.create_pod("team", "web", ip="10.1.0.5", annotations={ROLE: "reader"})
        request = kiam_pb2.GetPodRoleRequest(ip="10.1.0.5")
        async with Relay(stack.server.address) as relay, channel_to(relay.address, certs) as stub:
            answered = 0
            async with asyncio.timeout(30):
                # the server closes each connection after about a second; the client
                # must reconnect on its own, and no request may fail on the way
                while relay.connections < 3:
                    answer = await stub.GetPodRole(request, timeout=5)
                    assert answer.name == "reader"
                    answered += 1
                    await asyncio.sleep(0.02)
            assert answered > 3


WATCH = 4.0
"""Seconds a connection is watched: well past a 1s limit, well short of the 15m default."""


async def _leaves_ready(address: str, certs: CertPaths) -> bool:
    """Whether a connection, READY after one call and then idle, stops being READY
    (the server's GOAWAY) within :data:`WATCH` seconds."""
    channel = aio.secure_channel(address, channel_credentials(agent_tls(certs)), options=[LOCAL])
    try:
        stub = kiam_pb2_grpc.KiamServiceStub(channel)
        await stub.GetHealth(kiam_pb2.GetHealthRequest(), timeout=5)
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        try:
            async with asyncio.timeout(WATCH):
                await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
        except TimeoutError:
            return False
        return True
    finally:
        await channel.close(None)


@pytest.mark.parametrize(
    ("args", "closed"),
    [
        (("--grpc-max-connection-age-duration=1s", "--grpc-max-connection-age-grace-duration=1s"),
         True),
        (("--grpc-max-connection-idle-duration=1s",), True),
        ((), False),  # Go Kiam's defaults: 15m each
    ],
    ids=["max-age", "max-idle", "defaults"],
)
async def test_go_kiams_connection_limits_close_connections(
    tmp_path: Path, certs: CertPaths, args: tuple[str, ...], closed: bool
) -> None:
    async with server_stack(tmp_path, certs=certs, server_args=args) as stack:
        assert await _leaves_ready(stack.server.address, certs) is closed


async def test_idle_keepalive_pings_do_not_get_the_connection_closed(
    tmp_path: Path, certs: CertPaths
) -> None:
    # what an agent does: ping even with no RPC in flight. gRPC's server default would
    # count these as abuse and close the connection (GOAWAY too_many_pings).
    args = ("--grpc-keepalive-time-duration", "1s", "--grpc-keepalive-timeout-duration", "1s")
    async with server_stack(
        tmp_path, certs=certs, namespaces={"team": ".*"}, server_args=args
    ) as stack:
        pinging = (
            ("grpc.keepalive_time_ms", 1000),
            ("grpc.keepalive_timeout_ms", 1000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        )
        async with (
            Relay(stack.server.address) as relay,
            channel_to(relay.address, certs, *pinging) as stub,
        ):
            answer = await stub.GetHealth(kiam_pb2.GetHealthRequest(), timeout=5)
            assert answer.message == "ok"
            idle_from = relay.client_writes
            async with asyncio.timeout(30):
                # pings (ours, and acks of the server's) while no RPC is in flight
                await relay.wait_until(lambda: relay.client_writes >= idle_from + 8)
            answer = await stub.GetHealth(kiam_pb2.GetHealthRequest(), timeout=5)
            assert answer.message == "ok"
            assert relay.connections == 1


# ---------------------------------------------------------------- certificate reload


def _replace(path: Path, data: bytes) -> None:
    # as rotation tools do: write aside, then rename over (a new inode)
    aside = path.with_suffix(".new")
    aside.write_bytes(data)
    os.replace(aside, path)


def _rotate(served: CertPaths, *, to: CertPaths) -> None:
    """Replace the server's key, certificate and CA files with those of ``to``."""
    for name in ("server_key", "server_cert", "ca"):
        source: Path = getattr(to, name)
        _replace(getattr(served, name), source.read_bytes())


def _old_agent_trusting(old: CertPaths, *, new_ca: CertPaths, directory: Path) -> CertPaths:
    """The old agent pair next to the new CA (so the client itself accepts the server)."""
    paths = CertPaths(directory=directory)
    directory.mkdir()
    for name in ("agent_cert", "agent_key"):
        getattr(paths, name).write_bytes(getattr(old, name).read_bytes())
    paths.ca.write_bytes(new_ca.ca.read_bytes())
    return paths


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


async def _health_code(address: str, certs: CertPaths) -> grpc.StatusCode:
    async with channel_to(address, certs) as stub:
        try:
            await stub.GetHealth(kiam_pb2.GetHealthRequest(), timeout=5)
        except aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_certificates_reload_when_their_files_change(tmp_path: Path) -> None:
    served = await make_certs(tmp_path / "served")  # the files the server is started with
    rotated = await make_certs(tmp_path / "rotated")  # a new CA with new pairs
    assert _serial(served.ca) != _serial(rotated.ca)
    async with server_stack(
        tmp_path, certs=served, namespaces={"team": ".*"}, base_arn=BASE_ARN
    ) as stack:
        address = stack.server.address
        assert await _health_code(address, served) == grpc.StatusCode.OK
        # a client of the new CA neither trusts the server nor is trusted by it yet
        assert await _health_code(address, rotated) == grpc.StatusCode.UNAVAILABLE

        _rotate(served, to=rotated)

        # the next connection sees the new files: no restart
        assert await _health_code(address, rotated) == grpc.StatusCode.OK
        await stack.server.wait_for_log("reloaded TLS certificate")
        # and the old agent certificate is no longer accepted (its CA is gone)
        stale = _old_agent_trusting(served, new_ca=rotated, directory=tmp_path / "stale")
        assert await _health_code(address, stale) == grpc.StatusCode.UNAVAILABLE
        assert stack.server.returncode is None
