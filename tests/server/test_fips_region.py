"""``kiam server --region us-east-1-fips`` starts and sends AssumeRole to the FIPS host
(``kiam.aws.arn.sts_endpoint``), as Go Kiam does. The server's HTTPS goes through a
recording proxy on 127.0.0.1 that notes each CONNECT target and refuses it, so nothing
leaves the machine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiam.certs import CertPaths
from kiam_testbed.commands import ROLE_BASE_ARN, SERVING, aws_test_env, server_args, tls_args
from kiam_testbed.kube import KubeEmulator
from kiam_testbed.processes import start_kiam


class RecordingProxy:
    """An HTTP proxy that records each ``CONNECT host:port`` and answers 502."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.seen = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _version = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            self.targets.append(f"{method} {target}")
            self.seen.set()
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def proxy() -> AsyncIterator[RecordingProxy]:
    async with RecordingProxy() as recording:
        yield recording


async def test_fips_region_sends_assume_role_to_the_fips_host(
    tmp_path: Path, certs: CertPaths, proxy: RecordingProxy
) -> None:
    async with KubeEmulator() as kube:
        kube.create_namespace(
            "team", annotations={"iam.amazonaws.com/permitted": ROLE_BASE_ARN + ".*"}
        )
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        env = aws_test_env(HTTPS_PROXY=proxy.url, NO_PROXY="127.0.0.1,localhost")
        tls = tls_args(cert=certs.server_cert, key=certs.server_key, ca=certs.ca)
        # an empty --sts-endpoint: the region alone decides where AssumeRole goes
        argv = server_args(bind="127.0.0.1:0", kubeconfig=kubeconfig, sts_url="", tls=tls,
                           extra=["--region", "us-east-1-fips"])
        server = await start_kiam(argv, log_dir=tmp_path, env=env)
        async with server:
            await server.wait_for_log(SERVING)
            # a pod appearing makes the server prefetch its credentials: one AssumeRole
            kube.create_pod("team", "web", ip="10.1.0.5",
                            annotations={"iam.amazonaws.com/role": "reader"})
            await asyncio.wait_for(proxy.seen.wait(), timeout=20)
    assert proxy.targets[0] == "CONNECT sts-fips.us-east-1.amazonaws.com:443", proxy.targets
    assert all("sts-fips.us-east-1.amazonaws.com" in t for t in proxy.targets), proxy.targets
