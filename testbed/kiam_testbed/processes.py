"""Real ``kiam`` processes with their stand-ins, for the server, agent and e2e suites.

The product runs as its console command (``.venv/bin/kiam ...``), exactly as deployed;
only the stand-ins (Kubernetes emulator, STS stand-in) live in the test's process.

API::

    certs = await make_certs(tmp_path / "certs")       # `kiam certs --out DIR` as a process
    async with server_stack(tmp_path, certs=certs, server_args=("--session", "x")) as stack:
        stack.kube                  # KubeEmulator (kiam_testbed.kube), already serving
        stack.sts                   # StsStandIn (kiam_testbed.sts), already serving
        stack.server.address        # "127.0.0.1:PORT" the `kiam server` process listens on
        stack.server.logs           # its stderr lines so far
        await stack.server.wait_for_log("caches synced")
        stub = stack.stub()         # KiamService stub over an mTLS channel (agent cert)
        await stub.GetPodRole(kiam_pb2.GetPodRoleRequest(ip="10.0.0.1"), timeout=2)
        stack.agent_tls             # TLSSettings of the agent certificate, for other clients
    # leaving the block: channels closed, server SIGTERMed (SIGKILLed after a grace),
    # stand-ins stopped.

``server_stack(directory, *, certs=None, base_arn=BASE_ARN, server_args=(),
namespaces=None, wait_synced=True, env=None, kube=None, sts=None)``:
``namespaces`` maps name -> ``iam.amazonaws.com/permitted`` (created before the server
starts); ``kube=``/``sts=`` reuse running stand-ins (left running); ``wait_synced``
waits for the server's "caches synced" log line (its grpc.health.v1 is SERVING from then
on); ``base_arn=""`` leaves ``--role-base-arn`` out.

Lower level: ``start_server(kubeconfig=..., sts_url=..., certs=..., ...) -> ServerProcess``
and ``KiamProcess.start(argv, env=...)`` for any other subcommand (the agent suite starts
``kiam agent`` with it: ``await KiamProcess.start(["agent", ...], env=aws_test_env())`` then
``wait_for_log("...")``). ``KiamProcess.stop()`` sends SIGTERM and returns the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
from grpc import aio

from kiam.certs import CertPaths
from kiam.common.settings import TLSSettings
from kiam.common.tls import channel_credentials
from kiam.wire import kiam_pb2_grpc
from kiam_testbed.commands import (
    ROLE_BASE_ARN,
    aws_test_env,
    kiam_command,
    server_args,
    tls_args,
)
from kiam_testbed.kube import KubeEmulator
from kiam_testbed.sts import StsStandIn

BASE_ARN = ROLE_BASE_ARN
STOP_TIMEOUT = 10.0
"""Seconds a process gets after SIGTERM before SIGKILL."""
READY_TIMEOUT = 30.0
"""Seconds a process gets to say it is serving (start-up imports are slow on busy CI)."""

_SERVING = re.compile(r"serving on ([^\s\"]+)")  # text or --json-log


class ProcessError(Exception):
    """A kiam process failed to start or ended unexpectedly; carries its log tail."""


class KiamProcess:
    """One ``kiam`` subcommand as a child process; its stdout and stderr are collected
    line by line into :attr:`logs` (so the pipes never fill up)."""

    def __init__(self, process: asyncio.subprocess.Process, argv: Sequence[str]) -> None:
        self.process = process
        self.argv = list(argv)
        self.logs: list[str] = []
        self._changed = asyncio.Condition()
        self._readers = [
            asyncio.create_task(self._read(stream), name=f"kiam-{argv[0]}-{which}")
            for which, stream in (("stdout", process.stdout), ("stderr", process.stderr))
            if stream is not None
        ]

    @classmethod
    async def start(cls, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Self:
        process = await asyncio.create_subprocess_exec(
            *kiam_command(),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else aws_test_env(),
        )
        return cls(process, argv)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            async with self._changed:
                self.logs.append(line.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.logs[-lines:])

    async def wait_for_log(self, pattern: str, *, timeout: float = READY_TIMEOUT) -> str:  # noqa: ASYNC109
        """The first log line matching the regex ``pattern`` (``re.search``), waiting for
        it; ProcessError if the process ends (or ``timeout`` passes) first."""
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in self.logs if regex.search(line)), None)

        def ended() -> bool:
            return all(reader.done() for reader in self._readers)

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: found() is not None or ended())
        except TimeoutError:
            raise ProcessError(
                f"kiam {self.argv[0]}: no log line matching {pattern!r} within {timeout}s;"
                f" last lines:\n{self.log_tail()}"
            ) from None
        line = found()
        if line is None:
            await self.process.wait()
            raise ProcessError(
                f"kiam {self.argv[0]} exited with {self.returncode} before logging "
                f"{pattern!r}; last lines:\n{self.log_tail()}"
            )
        return line

    def count_logs(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.logs if regex.search(line))

    def signal(self, sig: signal.Signals) -> None:
        if self.process.returncode is None:
            self.process.send_signal(sig)

    async def wait(self, *, timeout: float = STOP_TIMEOUT) -> int:  # noqa: ASYNC109
        """Wait for the process to exit (and its output to be read); the exit code."""
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
            await asyncio.gather(*self._readers)
        return code

    async def stop(self, *, timeout: float = STOP_TIMEOUT) -> int:  # noqa: ASYNC109
        """SIGTERM, then SIGKILL after ``timeout``; the exit code. Safe to call twice."""
        self.signal(signal.SIGTERM)
        try:
            return await self.wait(timeout=timeout)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            return await self.wait(timeout=timeout)
        finally:
            for reader in self._readers:
                reader.cancel()
            await asyncio.gather(*self._readers, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class ServerProcess(KiamProcess):
    """``kiam server``; :attr:`address` is set once it logs "serving on"."""

    address: str = ""

    async def wait_serving(self, *, timeout: float = READY_TIMEOUT) -> str:  # noqa: ASYNC109
        line = await self.wait_for_log(_SERVING.pattern, timeout=timeout)
        match = _SERVING.search(line)
        assert match is not None
        self.address = match.group(1)
        return self.address


async def make_certs(directory: str | os.PathLike[str]) -> CertPaths:
    """Run ``kiam certs --out DIRECTORY`` (server names include 127.0.0.1 and localhost)."""
    process = await KiamProcess.start(["certs", "--out", str(directory)])
    try:
        # wait for it to finish: stop() would SIGTERM it, killing a slow start-up
        code = await process.wait(timeout=READY_TIMEOUT)
    finally:
        await process.stop()
    if code != 0:
        raise ProcessError(f"kiam certs exited with {code}:\n{process.log_tail()}")
    return CertPaths(directory=Path(directory))


def server_tls(certs: CertPaths) -> TLSSettings:
    return TLSSettings(cert=str(certs.server_cert), key=str(certs.server_key), ca=str(certs.ca))


def agent_tls(certs: CertPaths) -> TLSSettings:
    return TLSSettings(cert=str(certs.agent_cert), key=str(certs.agent_key), ca=str(certs.ca))


async def start_server(
    *,
    kubeconfig: str | os.PathLike[str],
    sts_url: str,
    certs: CertPaths,
    base_arn: str = BASE_ARN,
    bind: str = "127.0.0.1:0",
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Start ``kiam server`` and wait until it listens (port 0 picks a free port).

    ``base_arn=""`` leaves ``--role-base-arn`` out (pass ``--role-base-arn-autodetect``
    in ``args`` then)."""
    argv = server_args(
        bind=bind,
        kubeconfig=kubeconfig,
        sts_url=sts_url,
        tls=tls_args(cert=certs.server_cert, key=certs.server_key, ca=certs.ca),
        base_arn=base_arn,
        extra=args,
    )
    server = await ServerProcess.start(argv, env=aws_test_env(**(env or {})))
    try:
        await server.wait_serving()
    except BaseException:
        await server.stop()
        raise
    return server


@dataclass(kw_only=True)
class ServerStack:
    """Everything :func:`server_stack` started; see the module docstring."""

    kube: KubeEmulator
    sts: StsStandIn
    certs: CertPaths
    server: ServerProcess
    directory: Path
    _channels: list[aio.Channel] = field(default_factory=list)
    _stub: kiam_pb2_grpc.KiamServiceAsyncStub | None = None

    @property
    def agent_tls(self) -> TLSSettings:
        return agent_tls(self.certs)

    def channel(self, credentials: grpc.ChannelCredentials | None = None) -> aio.Channel:
        """A channel to the server (agent certificate unless ``credentials``); closed with
        the stack."""
        creds = credentials or channel_credentials(self.agent_tls)
        channel = aio.secure_channel(self.server.address, creds)
        self._channels.append(channel)
        return channel

    def stub(self) -> kiam_pb2_grpc.KiamServiceAsyncStub:
        """A stub on one shared channel with the agent certificate, as an agent holds one
        (a channel per call would cost a connection and file descriptors per call)."""
        if self._stub is None:
            self._stub = kiam_pb2_grpc.KiamServiceStub(self.channel())
        return self._stub

    async def close_channels(self) -> None:
        channels, self._channels = self._channels, []
        self._stub = None
        for channel in channels:
            await channel.close(None)


@contextlib.asynccontextmanager
async def server_stack(
    directory: str | os.PathLike[str],
    *,
    certs: CertPaths | None = None,
    base_arn: str = BASE_ARN,
    server_args: Sequence[str] = (),
    namespaces: Mapping[str, str] | None = None,
    wait_synced: bool = True,
    env: Mapping[str, str] | None = None,
    kube: KubeEmulator | None = None,
    sts: StsStandIn | None = None,
) -> AsyncIterator[ServerStack]:
    """Kubernetes emulator + STS stand-in + certificates + a ``kiam server`` process.

    A running ``kube`` or ``sts`` passed in is used (and left running) instead of a new
    one, e.g. to run several servers against one cluster.
    """
    root = Path(directory)  # must exist (pytest's tmp_path)
    paths = certs or await make_certs(root / "certs")
    async with contextlib.AsyncExitStack() as owned:
        if kube is None:
            kube = await owned.enter_async_context(KubeEmulator())
        if sts is None:
            sts = await owned.enter_async_context(StsStandIn())
        for name, permitted in (namespaces or {}).items():
            kube.create_namespace(name, annotations={"iam.amazonaws.com/permitted": permitted})
        kubeconfig = kube.write_kubeconfig(root / "kubeconfig")
        server = await start_server(
            kubeconfig=kubeconfig,
            sts_url=sts.url,
            certs=paths,
            base_arn=base_arn,
            args=server_args,
            env=env,
        )
        stack = ServerStack(kube=kube, sts=sts, certs=paths, server=server, directory=root)
        try:
            if wait_synced:
                await server.wait_for_log("caches synced")
            yield stack
        finally:
            await stack.close_channels()
            await server.stop()
