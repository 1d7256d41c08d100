"""--role-base-arn-autodetect against a tiny IMDS stand-in on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web

from kiam.aws.base_arn import detect_base_arn
from kiam.aws.errors import BaseArnUnavailable

PROFILE = "arn:aws:iam::123456789012:instance-profile/nodes/kiam-server"
TOKEN = "imds-token-1"


@dataclass
class Imds:
    url: str = ""
    issue_tokens: bool = True
    require_token: bool = True
    info_status: int = 200
    info_body: bytes = orjson.dumps({"Code": "Success", "InstanceProfileArn": PROFILE})
    requests: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        async def token(request: web.Request) -> web.Response:
            self.requests.append(f"PUT {request.path}")
            if not self.issue_tokens:
                return web.Response(status=404)
            if "X-aws-ec2-metadata-token-ttl-seconds" not in request.headers:
                return web.Response(status=400)
            return web.Response(text=TOKEN)

        async def info(request: web.Request) -> web.Response:
            self.requests.append(f"GET {request.path}")
            given = request.headers.get("X-aws-ec2-metadata-token")
            if self.require_token and given != TOKEN:
                return web.Response(status=401)
            return web.Response(status=self.info_status, body=self.info_body)

        app = web.Application()
        app.router.add_put("/latest/api/token", token)
        app.router.add_get("/latest/meta-data/iam/info", info)
        return app


@pytest.fixture
async def imds() -> AsyncIterator[Imds]:
    stand_in = Imds()
    runner = web.AppRunner(stand_in.app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stand_in.url = f"http://127.0.0.1:{port}"
    yield stand_in
    await runner.cleanup()


async def test_detects_with_an_imdsv2_token(imds: Imds) -> None:
    assert await detect_base_arn(imds.url) == "arn:aws:iam::123456789012:role/"
    assert imds.requests == ["PUT /latest/api/token", "GET /latest/meta-data/iam/info"]


async def test_trailing_slash_in_the_endpoint(imds: Imds) -> None:
    assert await detect_base_arn(imds.url + "/") == "arn:aws:iam::123456789012:role/"


async def test_falls_back_to_imdsv1(imds: Imds) -> None:
    imds.issue_tokens = False
    imds.require_token = False
    assert await detect_base_arn(imds.url) == "arn:aws:iam::123456789012:role/"


async def test_no_instance_profile(imds: Imds) -> None:
    imds.info_status = 404
    with pytest.raises(BaseArnUnavailable, match=r"HTTP 404.*--role-base-arn"):
        await detect_base_arn(imds.url)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"{}", orjson.dumps({"InstanceProfileArn": "arn:aws:iam::1:role/x"}), b"[]"],
)
async def test_unexpected_document(imds: Imds, body: bytes) -> None:
    imds.info_body = body
    with pytest.raises(BaseArnUnavailable, match="unexpected"):
        await detect_base_arn(imds.url)


async def test_unreachable() -> None:
    # a port held bound but not listening: a connection to it is refused, and nothing
    # else can listen there meanwhile
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(BaseArnUnavailable, match="unreachable"):
            await detect_base_arn(f"http://127.0.0.1:{port}")
