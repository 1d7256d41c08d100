"""``python -m kiam_testbed.standins``: the Kubernetes emulator and the STS stand-in in
one process, driven over its stdin and stdout.

Its first line on stdout is ``{"kube": URL, "sts": URL or ""}``, once both serve and the
kubeconfig is written. Then each line on stdin is a call of a public method of one of
them, ``{"target": "kube" | "sts", "method": NAME, "args": [...], "kwargs": {...}}``,
answered by one line, ``{"result": ...}`` or ``{"error": "Type: message"}`` (a coroutine
is awaited, an optional ``"timeout"`` bounds it in seconds; results are JSON). So the
process a test drives offers exactly the in-process API of
:class:`~kiam_testbed.kube.KubeEmulator` and :class:`~kiam_testbed.sts.StsStandIn`
(``Stack.kube``, ``Stack.sts``: :class:`kiam_testbed.stack.StandIns`), wherever it
runs: a node namespace's loopback is reachable by pipe, not by HTTP from the host.

SIGTERM, SIGINT or the end of stdin stop it (exit 0). :func:`main` takes more targets, so
the benchmarks add their bulk commands (``bench.standins``) and spend that CPU here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from kiam_testbed.kube import KubeEmulator
from kiam_testbed.sts import StsStandIn

Target = Callable[[KubeEmulator, StsStandIn | None], object]
"""Makes one more call target from the running stand-ins."""


async def _answer(targets: Mapping[str, object], line: bytes) -> dict[str, Any]:
    limit: asyncio.Timeout | None = None
    try:
        call = orjson.loads(line)
        method = str(call["method"])
        if method.startswith("_") or call["target"] not in targets:
            raise AttributeError(f"no call {call['target']}.{method}")
        function = getattr(targets[call["target"]], method)
        async with (limit := asyncio.timeout(call.get("timeout"))):
            result = function(*call.get("args", ()), **call.get("kwargs", {}))
            return {"result": await result if inspect.isawaitable(result) else result}
    except Exception as exc:  # the caller raises it; this process keeps serving
        if limit is not None and limit.expired():  # the call's own limit, not its error
            return {"error": f"TimeoutError: no answer within {call['timeout']}s"}
        return {"error": f"{type(exc).__name__}: {exc}"}


def _say(reply: Mapping[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(reply, default=list) + b"\n")
    sys.stdout.flush()


async def _serve(options: argparse.Namespace, extra: Mapping[str, Target]) -> None:
    reader = asyncio.StreamReader(limit=1 << 24)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sts = None if options.no_sts else StsStandIn(
        host=options.sts_host, rate_limit=options.sts_rate_limit, burst=options.sts_burst)
    kube = KubeEmulator(history_size=options.history_size,
                        bookmark_interval=options.bookmark_interval)
    async with kube, sts or contextlib.nullcontext():
        kube.write_kubeconfig(options.kubeconfig)
        targets: dict[str, object] = {"kube": kube, **({"sts": sts} if sts else {})}
        targets.update((name, make(kube, sts)) for name, make in extra.items())
        _say({"kube": kube.url, "sts": sts.url if sts else ""})
        while line := await reader.readline():
            _say(await _answer(targets, line))


def main(argv: Sequence[str] | None = None, *, extra: Mapping[str, Target] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kiam_testbed.standins",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True, help="write the emulator's here")
    parser.add_argument("--history-size", type=int, default=10_000,
                        help="watch events the emulator keeps (older: 410 Gone)")
    parser.add_argument("--bookmark-interval", type=float, default=60.0)
    parser.add_argument("--no-sts", action="store_true", help="the emulator only")
    parser.add_argument("--sts-host", default="127.0.0.1",
                        help="address of the STS stand-in (the emulator: 127.0.0.1)")
    parser.add_argument("--sts-rate-limit", type=float, default=0.0,
                        help="AssumeRole calls per second per account, Throttling beyond")
    parser.add_argument("--sts-burst", type=int, default=0,
                        help="calls at once above the rate (0: one second's worth)")
    options = parser.parse_args(argv)
    # werkzeug logs each request moto serves at INFO: warnings only, on stderr (the log)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    async def run() -> None:
        serving = asyncio.create_task(_serve(options, extra or {}))
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, serving.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    asyncio.run(run())


if __name__ == "__main__":
    main()
