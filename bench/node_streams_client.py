"""The simulated agents of ``bench.node_streams``: ONE process holding a ``WatchNode``
stream per node, and one direct pod watch of the emulator beside them (the baseline).

Run as ``python -m bench.node_streams_client --address HOST:PORT --certs DIR
--kubeconfig PATH --nodes N [--streams-per-channel K]``. It prints ``{"ready": ...}``
once every stream has its snapshot, then waits for a line on stdin; then it prints
``{"stream": {pod: time}, "watch": {pod: time}, ...}``: when each pod's first entry
arrived on its node's stream, and when its ADDED event arrived on the direct watch
(``time.monotonic()``, comparable with the stand-ins process's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import orjson
from grpc import aio

from bench.pods import node_name
from kiam.k8s.client import KubeClient
from kiam.k8s.pod_cache import PODS_PATH
from kiam.wire import kiam_pb2, kiam_pb2_grpc


class Agents:
    def __init__(self) -> None:
        self.stream: dict[str, float] = {}
        self.watch: dict[str, float] = {}
        self.counts = {"entry": 0, "removed_ip": 0, "heartbeat": 0, "snapshot_complete": 0}
        self.errors: list[str] = []
        self.snapshots = 0
        self.all_ready = asyncio.Event()
        self.nodes = 0

    async def follow(self, stub: kiam_pb2_grpc.KiamNodeServiceAsyncStub, node: str) -> None:
        """One agent's stream; UNAVAILABLE (not synced yet) is retried, as agents do."""
        while True:
            try:
                await self._follow_once(stub, node)
                return
            except aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(0.5)

    async def _follow_once(self, stub: kiam_pb2_grpc.KiamNodeServiceAsyncStub,
                           node: str) -> None:
        call = stub.WatchNode(kiam_pb2.WatchNodeRequest(node_name=node))
        try:
            async for message in call:
                kind = message.WhichOneof("kind") or ""
                self.counts[kind] = self.counts.get(kind, 0) + 1
                if kind == "entry":
                    name = message.entry.pod_name
                    if name not in self.stream:
                        self.stream[name] = time.monotonic()
                elif kind == "snapshot_complete":
                    self.snapshots += 1
                    if self.snapshots == self.nodes:
                        self.all_ready.set()
        except aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNAVAILABLE:
                raise
            if exc.code() is not grpc.StatusCode.CANCELLED:
                self.errors.append(f"{node}: {exc.code().name} {exc.details()}")

    async def watch_directly(self, client: KubeClient, since: str) -> None:
        params: dict[str, Any] = {"resourceVersion": since, "timeoutSeconds": 3600}
        stream = client.watch(PODS_PATH, params, inactivity_timeout=3600.0)
        async with contextlib.aclosing(stream):
            async for event in stream:
                if event.get("type") == "ADDED":
                    name = event["object"]["metadata"]["name"]
                    self.watch.setdefault(name, time.monotonic())


def _say(doc: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    certs = Path(args.certs)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "agent-key.pem").read_bytes(),
        certificate_chain=(certs / "agent.pem").read_bytes(),
    )
    agents = Agents()
    agents.nodes = args.nodes
    channels = [aio.secure_channel(args.address, credentials)
                for _ in range(-(-args.nodes // args.streams_per_channel))]
    client = await KubeClient.create(args.kubeconfig)
    tasks: list[asyncio.Task[None]] = []
    try:
        listed = await client.get_json(PODS_PATH, {"limit": 1})
        since = str(listed["metadata"]["resourceVersion"])
        tasks.append(asyncio.create_task(agents.watch_directly(client, since)))
        for n in range(args.nodes):
            stub = kiam_pb2_grpc.KiamNodeServiceStub(channels[n // args.streams_per_channel])
            tasks.append(asyncio.create_task(agents.follow(stub, node_name(n))))
        try:
            async with asyncio.timeout(300):
                while not agents.all_ready.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(agents.all_ready.wait(), 5)
                    print(f"{agents.snapshots}/{args.nodes} snapshots; errors: "
                          f"{agents.errors[:3]}", file=sys.stderr, flush=True)
        except TimeoutError:
            raise SystemExit(f"only {agents.snapshots} of {args.nodes} snapshots arrived; "
                             f"errors: {agents.errors[:5]}") from None
        _say({"ready": agents.snapshots, "entries": agents.counts["entry"]})
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        _say({"stream": agents.stream, "watch": agents.watch, "counts": agents.counts,
              "errors": agents.errors[:10]})
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for channel in channels:
            await channel.close(None)
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.node_streams_client")
    parser.add_argument("--address", required=True)
    parser.add_argument("--certs", required=True)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--streams-per-channel", type=int, default=25)
    asyncio.run(main(parser.parse_args()))
