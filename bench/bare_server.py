"""Baseline for the agent benchmark: a bare aiohttp server answering the same documents
from memory, with no lookup at all. Prints its URL on the first line.

``--body-file`` holds the credentials JSON to serve (the bench copies kiam's real answer,
so both sides send the same bytes); a path ending in ``/`` gets ``--role`` as text, as
the role-list route does.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web

BODY = (
    b'{"Code":"Success","LastUpdated":"2026-01-01T00:00:00Z","Type":"AWS-HMAC",'
    b'"AccessKeyId":"ASIAEXAMPLEEXAMPLE12","SecretAccessKey":"x' + b"x" * 39 + b'",'
    b'"Token":"' + b"t" * 600 + b'","Expiration":"2026-01-01T01:00:00Z"}'
)


async def serve(host: str, *, body: bytes, role: str) -> None:
    role_body = role.encode()

    async def handle(request: web.Request) -> web.Response:
        if request.path.endswith("/"):
            return web.Response(body=role_body, content_type="text/plain")
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--body-file", default="")
    parser.add_argument("--role", default="bench-role")
    args = parser.parse_args()
    served = Path(args.body_file).read_bytes() if args.body_file else BODY
    asyncio.run(serve(args.host, body=served, role=args.role))
