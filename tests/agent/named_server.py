"""``python -m tests.agent.named_server --bind HOST:PORT --certs DIR --name NAME``

A scripted ``kiam.KiamService`` over mTLS that puts its own name in every answer
(``GetPodRole`` answers the role ``from-NAME``, credentials carry the access key id
``ASIAFROMNAME``), so a test can tell which of several
servers behind one DNS name served a request. Prints ``ready`` once listening, serves
until SIGTERM. With ``--hold-file PATH`` every call for a pod prints ``held`` and waits
until PATH exists, so a test can keep a request in flight as long as it needs. Used
inside network namespaces the tests create, where a process of its own is the only way
to listen.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path

import grpc

from kiam.certs import CertPaths
from kiam.common.settings import TLSSettings
from kiam.common.tls import server_credentials
from kiam.wire import kiam_pb2, kiam_pb2_grpc


class NamedKiam(kiam_pb2_grpc.KiamServiceServicer):
    def __init__(self, name: str, hold_file: Path | None) -> None:
        self.name = name
        self.hold_file = hold_file

    def GetPodRole(
        self, request: kiam_pb2.GetPodRoleRequest, context: grpc.ServicerContext
    ) -> kiam_pb2.Role:
        self._hold(context)
        return kiam_pb2.Role(name=f"from-{self.name}")

    def _hold(self, context: grpc.ServicerContext) -> None:
        if self.hold_file is not None:
            print("held", flush=True)
            while not self.hold_file.exists() and context.is_active():
                time.sleep(0.01)

    def GetPodCredentials(
        self, request: kiam_pb2.GetPodCredentialsRequest, context: grpc.ServicerContext
    ) -> kiam_pb2.Credentials:
        self._hold(context)
        return kiam_pb2.Credentials(
            code="Success",
            type="AWS-HMAC",
            access_key_id=f"ASIAFROM{self.name.upper()}",
            secret_access_key="dummy-secret",
            token="dummy-token",
            expiration="2030-01-01T01:00:00Z",
            last_updated="2030-01-01T00:00:00Z",
        )

    def GetHealth(
        self, request: kiam_pb2.GetHealthRequest, context: grpc.ServicerContext
    ) -> kiam_pb2.HealthStatus:
        return kiam_pb2.HealthStatus(message=f"ok from {self.name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.agent.named_server")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--certs", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--hold-file", type=Path, default=None)
    ns = parser.parse_args(argv)
    certs = CertPaths(directory=Path(ns.certs))
    tls = TLSSettings(cert=str(certs.server_cert), key=str(certs.server_key), ca=str(certs.ca))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    kiam_pb2_grpc.add_KiamServiceServicer_to_server(NamedKiam(ns.name, ns.hold_file), server)
    if not server.add_secure_port(ns.bind, server_credentials(tls)):
        print(f"cannot listen on {ns.bind}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print("ready", flush=True)
    stop.wait()
    server.stop(grace=None).wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
