"""``kiam server``: the process that wires the caches, the policy, STS and gRPC together.

Its lifecycle is :class:`kiam.common.supervisor.Supervisor`'s. Start-up happens before
anything is served, and any problem there (a bad kubeconfig, a taken gRPC or
``/metrics`` port, unusable TLS files, no base ARN) ends the process with one line and
exit 1. ``/metrics`` (with ``--prometheus-listen-addr``) is bound then and serves until
the end. Then named root tasks run:

``pod-cache``, ``namespace-cache``  list+watch the API server
``events``                          posts the Warning Events the service records
``credential-cache``                refreshes credentials ahead of expiry while in use
``prefetch``                        fetches credentials for every pod with a role it sees
``node-feed``                       re-evaluates node replica entries that change with time
``grpc``                            serves ``kiam.KiamService``, ``kiam.KiamNodeService``
                                    (docs/architecture.md, "The node replica"),
                                    ``kiam.KiamTokenService`` (token credentials) and
                                    ``grpc.health.v1``

Health (both ``""`` and ``kiam.KiamService``) is NOT_SERVING until both caches have
synced; then ``caches synced; serving`` and ``kiam server ready`` are logged. SIGTERM/
SIGINT, in :data:`SHUTDOWN_ORDER`: health goes NOT_SERVING, node streams end with
UNAVAILABLE, the server stops accepting, in-flight RPCs get :data:`GRACE` seconds, then
the tasks stop, ``/metrics`` stops and the clients close.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # stubs predate aio

from kiam.aws.credential_cache import CredentialCache
from kiam.aws.credentials import CredentialKey
from kiam.aws.errors import AwsError
from kiam.aws.pacing import Pacer
from kiam.aws.refusals import RefusalMemory
from kiam.aws.sts import StsGateway
from kiam.common import logs
from kiam.common.limits import raise_open_file_limit
from kiam.common.metrics_http import MetricsError, start_metrics
from kiam.common.net import join_host_port, split_host_port
from kiam.common.supervisor import TASKS, Supervisor
from kiam.common.tls import TLSError, server_credentials
from kiam.k8s.client import KubeClient
from kiam.k8s.errors import KubeError
from kiam.k8s.events import EventRecorder
from kiam.k8s.model import NamespaceInfo, PodInfo
from kiam.k8s.namespace_cache import NamespaceCache
from kiam.k8s.pod_cache import PodCache
from kiam.k8s.token_review import TokenReviewer
from kiam.k8s.watching import WatchOptions
from kiam.server.metrics import ServerMetrics
from kiam.server.node_feed import NodeFeed
from kiam.server.node_service import KiamNodeService
from kiam.server.policy import Policy
from kiam.server.prefetch import keys_in_use, prefetch
from kiam.server.service import KiamService
from kiam.server.settings import ServerSettings
from kiam.server.token_service import KiamTokenService
from kiam.wire import kiam_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "kiam.KiamService"
GRACE = 5.0
"""Seconds in-flight RPCs get to finish once a shutdown starts."""
SHUTDOWN_TIMEOUT = 10.0
"""Seconds each task and cleanup gets to stop."""


class StartupError(Exception):
    """The server cannot start; the message is the one line the operator sees."""


def run_server(settings: ServerSettings) -> int:
    """Entry point of ``kiam server`` (from :mod:`kiam.cli`); returns the exit code."""
    logs.configure(json_log=settings.log.json_log, level=settings.log.level)
    raise_open_file_limit()
    try:
        return asyncio.run(serve(settings))
    except StartupError as exc:
        log.error("kiam server cannot start: %s", " ".join(str(exc).split()))
        return 1
    except KeyboardInterrupt:
        return 130


SHUTDOWN_ORDER = ("drain grpc", TASKS, "stop metrics", "close clients")
"""Drain first, while the caches still run (an in-flight request may be waiting for its
pod), then the root tasks, then what they used."""


async def serve(settings: ServerSettings) -> int:
    """Run the server until a signal or a failed task; the exit code."""
    async with Supervisor(
        "kiam server", shutdown_order=SHUTDOWN_ORDER, shutdown_timeout=SHUTDOWN_TIMEOUT
    ) as daemon:
        base_arn = await resolve_base_arn(settings)
        policy = Policy(
            base_arn=base_arn,
            default_session=settings.session,
            strict=not settings.disable_strict_namespace_regexp,
        )
        kube = await kube_client(settings)
        daemon.on_stop("close clients", kube.close)
        gateway = await sts_gateway(settings)
        daemon.on_stop("close clients", gateway.close)

        # a changed annotation may be the fix for a refused role: ask STS again at once
        def pod_changed(pod: PodInfo) -> None:
            key = policy.key_for(pod=pod, permitted=namespaces.permitted(pod.namespace))
            if key is not None:
                credentials.forget_refusals([key])

        def namespace_changed(info: NamespaceInfo) -> None:
            members = (pod for pod in pods.live_pods() if pod.namespace == info.name)
            credentials.forget_refusals(
                keys_in_use(members, permitted=namespaces.permitted, policy=policy)
            )

        watch = WatchOptions(resync_interval=settings.sync)
        pods = PodCache(
            kube,
            options=watch,
            announce_buffer=settings.prefetch_buffer_size,
            on_annotations_changed=pod_changed,
        )
        namespaces = NamespaceCache(
            kube, options=watch, on_annotations_changed=namespace_changed
        )
        events = EventRecorder(kube)

        def in_use() -> set[CredentialKey]:
            return keys_in_use(pods.live_pods(), permitted=namespaces.permitted, policy=policy)

        credentials = CredentialCache(
            gateway,
            session_duration=settings.session_duration,
            session_refresh=settings.session_refresh,
            fetchers=settings.fetchers,
            keys_in_use=in_use,
            refusals=RefusalMemory(ttl=settings.sts_error_ttl),
            pacer=Pacer.create(
                qps=settings.sts_qps, burst=settings.sts_burst, concurrency=settings.fetchers
            ),
        )
        feed = NodeFeed(
            pods=pods,
            permitted=namespaces.permitted,
            policy=policy,
            events=events,
            session_refresh=settings.session_refresh,
            fetch=credentials.prefetch,
        )
        pods.add_listener(feed.pod_changed)
        namespaces.add_listener(feed.namespace_changed)
        credentials.add_listener(feed.credentials_stored)
        service = KiamService(
            pods=pods,
            namespaces=namespaces,
            events=events,
            credentials=credentials,
            policy=policy,
        )
        tokens = KiamTokenService(
            reviewer=TokenReviewer(kube, audience=settings.token_audience),
            pods=pods,
            namespaces=namespaces,
            events=events,
            credentials=credentials,
            policy=policy,
            require_ready=service.require_ready,
        )
        node_service = KiamNodeService(
            feed=feed,
            caches=(pods, namespaces),
            stream_limit=settings.node_stream_limit,
            stream_buffer=settings.node_stream_buffer,
        )
        health = health_aio.HealthServicer()
        # grpcio's servicer starts with "" SERVING; nothing is served until the caches sync
        await _set_health(health, health_pb2.HealthCheckResponse.NOT_SERVING)
        server, address = _grpc_server(
            settings, service=service, node_service=node_service, tokens=tokens, health=health
        )
        if settings.prometheus_listen_addr:
            metrics_runner = await _metrics(settings.prometheus_listen_addr)
            daemon.on_stop("stop metrics", metrics_runner.cleanup)
        await _start(server, address)
        daemon.on_stop(
            "drain grpc",
            lambda: _drain(server, services=(service, node_service), health=health),
        )

        daemon.start("pod-cache", pods.run())
        daemon.start("namespace-cache", namespaces.run())
        daemon.start("events", events.run())
        daemon.start("credential-cache", credentials.run())
        daemon.start(
            "prefetch",
            prefetch(
                announcements=pods.announcements,
                namespaces=namespaces,
                synced=namespaces.synced,
                policy=policy,
                fetch=credentials.prefetch,
            ),
        )
        daemon.start("node-feed", feed.run())
        daemon.start("grpc", server.wait_for_termination())

        async def synced() -> None:
            await pods.synced.wait()
            await namespaces.synced.wait()
            await _set_health(health, health_pb2.HealthCheckResponse.SERVING)
            log.info("caches synced; serving")

        return await daemon.run(ready=synced, fields={"address": address})
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------- start-up


async def resolve_base_arn(settings: ServerSettings) -> str:
    from kiam.aws.arn import InvalidRoleArn, validate_base_arn

    # an explicit base wins over --role-base-arn-autodetect
    if settings.role_base_arn or not settings.role_base_arn_autodetect:
        try:
            return validate_base_arn(settings.role_base_arn)
        except InvalidRoleArn as exc:
            raise StartupError(str(exc)) from None
    from kiam.aws.base_arn import detect_base_arn

    try:
        base = await detect_base_arn(settings.metadata_endpoint)
    except AwsError as exc:
        raise StartupError(f"--role-base-arn-autodetect: {exc}") from None
    log.info("detected role base ARN", extra={"fields": {"base.arn": base}})
    return base


async def kube_client(settings: ServerSettings) -> KubeClient:
    try:
        return await KubeClient.create(settings.kubeconfig)
    except KubeError as exc:
        raise StartupError(str(exc)) from None


async def sts_gateway(settings: ServerSettings) -> StsGateway:
    try:
        return await StsGateway.create(
            region=settings.region,
            endpoint_url=settings.sts_endpoint,
            assume_role_arn=settings.assume_role_arn,
            session_name=f"kiam-{settings.session}",
            session_duration=settings.session_duration,
        )
    except (AwsError, ValueError) as exc:
        raise StartupError(f"STS: {exc}") from None


async def _metrics(listen_addr: str) -> web.AppRunner:
    try:
        return await start_metrics(listen_addr)
    except MetricsError as exc:
        raise StartupError(str(exc)) from None


def _grpc_options(settings: ServerSettings) -> list[tuple[str, Any]]:
    keepalive = settings.keepalive
    options: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", int(keepalive.time * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive.timeout * 1000)),
        # Agents ping every --grpc-keepalive-time-duration (10s by default), also with no
        # RPC in flight; gRPC's server default (5 minutes) would answer that with GOAWAY.
        ("grpc.keepalive_permit_without_calls", 1),
        # (grpc core's name for GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS;
        # an unknown option name is silently ignored)
        ("grpc.http2.min_ping_interval_without_data_ms", 1000),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    # Go Kiam's keepalive.ServerParameters under grpc core's names; 0 leaves gRPC's
    # default, never, as grpc-go reads a zero (docs/MIGRATING.md)
    for name, seconds in (
        ("grpc.max_connection_idle_ms", settings.max_connection_idle),
        ("grpc.max_connection_age_ms", settings.max_connection_age),
        ("grpc.max_connection_age_grace_ms", settings.max_connection_age_grace),
    ):
        if seconds > 0:
            options.append((name, int(seconds * 1000)))
    return options


def _grpc_server(
    settings: ServerSettings,
    *,
    service: KiamService,
    node_service: KiamNodeService,
    tokens: KiamTokenService,
    health: health_aio.HealthServicer,
) -> tuple[aio.Server, str]:
    """Build the server and bind its port; the address it listens on."""
    try:
        host, port = split_host_port(settings.bind)
    except ValueError as exc:
        raise StartupError(f"--bind: {exc}") from None
    try:
        credentials = server_credentials(settings.tls)
    except TLSError as exc:
        raise StartupError(str(exc)) from None
    server = aio.server(interceptors=[ServerMetrics()], options=_grpc_options(settings))
    kiam_pb2_grpc.add_KiamServiceServicer_to_server(service, server)
    kiam_pb2_grpc.add_KiamTokenServiceServicer_to_server(tokens, server)
    kiam_pb2_grpc.add_KiamNodeServiceServicer_to_server(node_service, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    target = join_host_port(host or "::", port)
    try:
        bound = server.add_secure_port(target, credentials)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {settings.bind}: {exc}") from None
    if bound == 0:
        raise StartupError(f"cannot listen on {settings.bind}: address in use or unavailable")
    return server, join_host_port(host or "::", bound)


async def _start(server: aio.Server, address: str) -> None:
    try:
        await server.start()
    except RuntimeError as exc:
        raise StartupError(f"cannot start gRPC server on {address}: {exc}") from None
    log.info("serving on %s", address, extra={"fields": {"address": address}})


async def _set_health(
    health: health_aio.HealthServicer, status: health_pb2.HealthCheckResponse.ServingStatus
) -> None:
    for name in ("", SERVICE_NAME):
        await health.set(name, status)


async def _drain(
    server: aio.Server,
    *,
    services: tuple[KiamService, KiamNodeService],
    health: health_aio.HealthServicer,
) -> None:
    """Refuse new calls (UNAVAILABLE, NOT_SERVING), end node streams (UNAVAILABLE, so
    agents move to another server at once), give in-flight RPCs :data:`GRACE`."""
    rpcs, streams = services
    rpcs.draining = True
    streams.drain()
    await health.enter_graceful_shutdown()
    await server.stop(GRACE)
    log.info("gRPC server stopped")


__all__ = [
    "StartupError",
    "kube_client",
    "resolve_base_arn",
    "run_server",
    "serve",
    "sts_gateway",
]
