"""``python -m kiam_testbed.kube``: serve the emulator until SIGTERM or SIGINT.

The first line of stdout is the base URL (flushed), so a parent process can read it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from kiam_testbed.kube.emulator import KubeEmulator


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kiam_testbed.kube", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--kubeconfig", default="", help="write a kubeconfig for it here")
    parser.add_argument("--bookmark-interval", type=float, default=60.0)
    parser.add_argument("--history-size", type=int, default=10_000)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    kube = KubeEmulator(bookmark_interval=args.bookmark_interval,
                        history_size=args.history_size)
    url = await kube.start(host=args.host, port=args.port)
    try:
        if args.kubeconfig:
            kube.write_kubeconfig(args.kubeconfig)
        sys.stdout.write(url + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await kube.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(_serve(_parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
