"""Real ``kiam`` processes with their stand-ins, for the server, agent and e2e suites.

The product runs as its console command (``.venv/bin/kiam ...``), exactly as deployed,
started by :class:`kiam_testbed.stack.Stack` (the one builder of kiam's processes); only
the stand-ins (Kubernetes emulator, STS stand-in) live in the test's process.

API::

    certs = await make_certs(tmp_path / "certs")       # `kiam certs --out DIR` as a process
    async with server_stack(tmp_path, certs=certs, server_args=("--session", "x")) as stack:
        stack.kube                  # KubeEmulator (kiam_testbed.kube), already serving
        stack.sts                   # StsStandIn (kiam_testbed.sts), already serving
        stack.server.address        # "127.0.0.1:PORT" the `kiam server` process listens on
        stack.server.logs           # its output lines so far (kiam_testbed.child.AsyncChild)
        await stack.server.wait_for_log("caches synced")
        stub = stack.stub()         # KiamService stub over an mTLS channel (agent cert)
        await stub.GetPodRole(kiam_pb2.GetPodRoleRequest(ip="10.0.0.1"), timeout=2)
        stack.agent_tls             # TLSSettings of the agent certificate, for other clients
    # leaving the block: channels closed, server SIGTERMed (SIGKILLed after a grace),
    # stand-ins stopped.

``server_stack(directory, *, certs=None, base_arn=ROLE_BASE_ARN, server_args=(),
namespaces=None, wait_synced=True, env=None)``:
``namespaces`` maps name -> ``iam.amazonaws.com/permitted`` (created before the server
starts); ``wait_synced``
waits for the server's "caches synced" log line (its grpc.health.v1 is SERVING from then
on); ``base_arn=""`` leaves ``--role-base-arn`` out.

Lower level: ``start_server(kubeconfig=..., sts_url=..., certs=..., ...) -> ServerProcess``
and ``start_kiam(argv, log_dir=..., env=...)`` for any other subcommand; both return a
:class:`kiam_testbed.child.AsyncChild` (``wait_for_log``, ``logs``, ``wait``, ``stop``).
"""

from __future__ import annotations

import contextlib
import os
import re
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
from kiam_testbed.child import READY_TIMEOUT, AsyncChild, HarnessError
from kiam_testbed.commands import (
    ROLE_BASE_ARN,
    SERVING,
    aws_test_env,
    kiam_command,
)
from kiam_testbed.kube import KubeEmulator
from kiam_testbed.stack import Placement, Stack
from kiam_testbed.sts import StsStandIn


async def start_kiam(
    argv: Sequence[str], *, log_dir: Path, env: Mapping[str, str] | None = None
) -> AsyncChild:
    """``kiam ARGV...`` as a child process, its output in a new file in ``log_dir``."""
    log_path = log_dir / f"kiam-{argv[0]}-{secrets.token_hex(4)}.log"
    return await AsyncChild.start(
        f"kiam {argv[0]}",
        kiam_command(*argv),
        log_path=log_path,
        env=env if env is not None else aws_test_env(),
    )


class ServerProcess(AsyncChild):
    """``kiam server``; :attr:`address` is what it logged as "serving on"."""

    address: str = ""


async def make_certs(directory: str | os.PathLike[str]) -> CertPaths:
    """Run ``kiam certs --out DIRECTORY`` (server names include 127.0.0.1 and localhost)."""
    out = Path(directory)
    process = await start_kiam(["certs", "--out", str(out)], log_dir=out.parent)
    async with process:
        # wait for it to finish: stop() would SIGTERM it, killing a slow start-up
        code = await process.wait(timeout=READY_TIMEOUT)
    if code != 0:
        raise HarnessError(f"kiam certs exited with {code}:\n{process.log_tail()}")
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
    """Start ``kiam server`` (the stack's command line, on a free port) and wait until it
    listens; its log goes beside the kubeconfig.

    ``base_arn=""`` leaves ``--role-base-arn`` out (pass ``--role-base-arn-autodetect``
    in ``args`` then)."""
    config = Path(kubeconfig)
    stack = Stack(config.parent, Placement(server_port=0), sts_url=sts_url, kubeconfig=config,
                  certs=certs.directory)
    # started in the loop's thread: a child dies with the thread that started it
    server = ServerProcess(stack.start_server(extra=args, env=env, base_arn=base_arn, wait=False))
    try:
        line = await server.wait_for_log(SERVING)
    except BaseException:
        await server.stop()
        raise
    match = re.search(SERVING, line)
    assert match is not None
    server.address = match.group(1)
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
