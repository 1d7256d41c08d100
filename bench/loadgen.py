"""A fixed-concurrency HTTP load generator (aiohttp), run in its own process so the
client's CPU is not counted against the server under test."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import aiohttp
import orjson


async def _worker(
    session: aiohttp.ClientSession, url: str, *, headers: dict[str, str],
    deadline_count: list[int], latencies: list[float], errors: list[int],
    refused: list[int], until: float, interval: float,
) -> None:
    next_start = time.perf_counter()
    while deadline_count[0] > 0 and time.perf_counter() < until:
        deadline_count[0] -= 1
        if interval:
            # paced: one request per interval, the latency still measured from its start
            await asyncio.sleep(max(next_start - time.perf_counter(), 0.0))
            next_start += interval
        start = time.perf_counter()
        async with session.get(url, headers=headers) as response:
            await response.read()
            if response.status == 429:
                refused[0] += 1
            elif response.status != 200:
                errors[0] += 1
        latencies.append(time.perf_counter() - start)


async def run(url: str, *, concurrency: int, requests: int, local_addrs: list[str],
              token: str, seconds: float = 0.0, pace: float = 0.0) -> dict[str, float]:
    """``requests`` requests, or fewer when ``seconds`` (if not 0) pass first, each
    worker at most ``pace`` a second (if not 0); a 429 is counted as ``refused``, any
    other answer but 200 as an error."""
    latencies: list[float] = []
    errors = [0]
    refused = [0]
    remaining = [requests]
    headers = {"X-aws-ec2-metadata-token": token} if token else {}
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(addr, 0), limit=0))
        for addr in local_addrs
    ]
    try:
        # warm-up: one request per source address
        for session in sessions:
            async with session.get(url, headers=headers) as response:
                await response.read()
        start = time.perf_counter()
        until = start + seconds if seconds else float("inf")
        await asyncio.gather(*(
            _worker(sessions[i % len(sessions)], url, headers=headers, deadline_count=remaining,
                    latencies=latencies, errors=errors, refused=refused, until=until,
                    interval=1 / pace if pace else 0.0)
            for i in range(concurrency)
        ))
        elapsed = time.perf_counter() - start
    finally:
        for session in sessions:
            await session.close()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "rps": len(latencies) / elapsed,
        "p50": quantiles[49],
        "p99": quantiles[98],
        "errors": float(errors[0]),
        "refused": float(refused[0]),
        "requests": float(len(latencies)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--local-addr", action="append", default=None)
    parser.add_argument("--token", default="")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="stop after this long even if requests remain (0: never)")
    parser.add_argument("--pace", type=float, default=0.0,
                        help="requests per second per worker at most (0: as fast as it can)")
    args = parser.parse_args()
    result = asyncio.run(run(args.url, concurrency=args.concurrency, requests=args.requests,
                             local_addrs=args.local_addr or ["127.0.0.1"], token=args.token,
                             seconds=args.seconds, pace=args.pace))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
