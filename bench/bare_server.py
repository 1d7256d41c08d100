"""Baseline for the agent benchmark: a bare aiohttp server answering the same credentials
JSON from memory, with no lookup at all. Prints its URL on the first line."""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

BODY = (
    b'{"Code":"Success","LastUpdated":"2026-01-01T00:00:00Z","Type":"AWS-HMAC",'
    b'"AccessKeyId":"ASIAEXAMPLEEXAMPLE12","SecretAccessKey":"x' + b"x" * 39 + b'",'
    b'"Token":"' + b"t" * 600 + b'","Expiration":"2026-01-01T01:00:00Z"}'
)


async def serve(host: str) -> None:
    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

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
    asyncio.run(serve(parser.parse_args().host))
