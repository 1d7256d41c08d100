"""``python -m kiam_testbed.sts --host 127.0.0.1 --port 0 [--rate-limit N --burst B]``

Prints the proxy URL as the first line of stdout, then serves until SIGTERM or SIGINT
(exit 0). Faults are queued over HTTP: see :mod:`kiam_testbed.sts.standin`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from kiam_testbed.sts.standin import StsStandIn, StsStandInError


async def serve(*, host: str, port: int, rate_limit: float = 0.0, burst: int = 0) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with StsStandIn(host=host, port=port, rate_limit=rate_limit, burst=burst) as sts:
        print(sts.url, flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kiam_testbed.sts", description="moto STS behind a fault-injecting proxy"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address for the proxy")
    parser.add_argument("--port", type=int, default=0, help="port for the proxy (0: any)")
    parser.add_argument(
        "--rate-limit", type=float, default=float(os.environ.get("KIAM_STS_RATE_LIMIT", "0")),
        help="AssumeRole calls per second per account, Throttling beyond (0: no limit; "
        "env KIAM_STS_RATE_LIMIT)",
    )
    parser.add_argument(
        "--burst", type=int, default=int(os.environ.get("KIAM_STS_BURST", "0")),
        help="calls at once above --rate-limit (default: one second's worth; env "
        "KIAM_STS_BURST)",
    )
    ns = parser.parse_args(argv)
    # Warnings only: werkzeug logs every request moto serves at INFO, and a parent that
    # does not drain our stderr must not see us block on a full pipe.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(host=ns.host, port=ns.port, rate_limit=ns.rate_limit, burst=ns.burst))
    except StsStandInError as exc:
        print(f"sts stand-in: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
