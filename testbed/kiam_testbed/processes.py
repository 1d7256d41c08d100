"""The asyncio face of :class:`kiam_testbed.stack.Stack` for the server suite: the
stand-ins in the test's process, ``kiam`` as its console command.

API::

    certs = await make_certs(tmp_path / "certs")       # `kiam certs --out DIR`
    async with server_stack(tmp_path, certs=certs, server_args=("--session", "x")) as stack:
        stack.kube                  # KubeEmulator (kiam_testbed.kube), already serving
        stack.sts                   # StsStandIn (kiam_testbed.sts), already serving
        stack.server.address        # "127.0.0.1:PORT" the `kiam server` process listens on
        stack.server.logs           # its output lines so far (kiam_testbed.child.AsyncChild)
        await stack.server.wait_for_log("caches synced")
        stub = stack.stub()         # KiamService stub over an mTLS channel (agent cert)
        stack.agent_tls             # TLSSettings of the agent certificate, for other clients
    # leaving the block: channels closed, server stopped (SIGTERM, then SIGKILL).

``namespaces`` maps name -> ``iam.amazonaws.com/permitted`` (created before the server
starts); ``wait_synced`` waits for "caches synced" (grpc.health.v1 SERVING from then on);
``base_arn=""`` leaves ``--role-base-arn`` out. Lower level: :func:`start_server` and
:func:`start_kiam` (any subcommand), both an :class:`~kiam_testbed.child.AsyncChild`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc import aio

from kiam.certs import CertPaths
from kiam.common.settings import TLSSettings
from kiam.common.tls import channel_credentials
from kiam.wire import kiam_pb2_grpc
from kiam_testbed.child import AsyncChild
from kiam_testbed.commands import ROLE_BASE_ARN, SERVING, aws_test_env, kiam_command
from kiam_testbed.kube import KubeEmulator
from kiam_testbed.stack import Placement, Stack
from kiam_testbed.sts import StsStandIn


async def start_kiam(
    argv: Sequence[str], *, log_dir: Path, env: Mapping[str, str] | None = None
) -> AsyncChild:
    """``kiam ARGV...`` as a child process, its output in a new file in ``log_dir``."""
    name = f"kiam-{argv[0]}-{secrets.token_hex(4)}"
    env = aws_test_env() if env is None else env
    return AsyncChild(Stack(log_dir).spawn(name, kiam_command(*argv), env=env))


class ServerProcess(AsyncChild):
    """``kiam server``; :attr:`address` is what it logged as "serving on"."""

    address: str = ""


async def make_certs(directory: str | os.PathLike[str]) -> CertPaths:
    """``kiam certs --out DIRECTORY`` (server names include 127.0.0.1 and localhost)."""
    out = Path(directory)
    await asyncio.to_thread(Stack(out.parent, certs=out).make_certs)
    return CertPaths(directory=out)


def agent_tls(certs: CertPaths) -> TLSSettings:
    return TLSSettings(cert=str(certs.agent_cert), key=str(certs.agent_key), ca=str(certs.ca))


async def start_server(
    *,
    kubeconfig: str | os.PathLike[str],
    sts_url: str,
    certs: CertPaths,
    base_arn: str = ROLE_BASE_ARN,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """:meth:`Stack.start_server` on a free port, its log beside the kubeconfig, once it
    listens."""
    config = Path(kubeconfig)
    stack = Stack(config.parent, Placement(server_port=0), sts_url=sts_url, kubeconfig=config,
                  certs=certs.directory)
    # started in the loop's thread: a child dies with the thread that started it
    server = ServerProcess(stack.start_server(extra=args, env=env, base_arn=base_arn, wait=False))
    try:
        await server.wait_for_log(SERVING)
        server.address = server.child.wait_for(SERVING)[1]  # logged by now
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
        channels, self._channels, self._stub = self._channels, [], None
        for channel in channels:
            await channel.close(None)


@contextlib.asynccontextmanager
async def server_stack(
    directory: str | os.PathLike[str],
    *,
    certs: CertPaths | None = None,
    base_arn: str = ROLE_BASE_ARN,
    server_args: Sequence[str] = (),
    namespaces: Mapping[str, str] | None = None,
    wait_synced: bool = True,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[ServerStack]:
    """Kubernetes emulator + STS stand-in (in this process) + certificates + a
    ``kiam server`` process."""
    root = Path(directory)  # must exist (pytest's tmp_path)
    paths = certs or await make_certs(root / "certs")
    async with KubeEmulator() as kube, StsStandIn() as sts:
        for name, permitted in (namespaces or {}).items():
            kube.create_namespace(name, annotations={"iam.amazonaws.com/permitted": permitted})
        server = await start_server(kubeconfig=kube.write_kubeconfig(root / "kubeconfig"),
                                    sts_url=sts.url, certs=paths, base_arn=base_arn,
                                    args=server_args, env=env)
        stack = ServerStack(kube=kube, sts=sts, certs=paths, server=server, directory=root)
        try:
            if wait_synced:
                await server.wait_for_log("caches synced")
            yield stack
        finally:
            await stack.close_channels()
            await server.stop()
