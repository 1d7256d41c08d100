"""``kiam agent``: the per-node metadata proxy process.

Its lifecycle is :class:`kiam.common.supervisor.Supervisor`'s. Start-up: logging, TLS
files, gRPC channels (waiting up to --gateway-timeout-creation for a first connection,
but starting anyway so the node is served as soon as a server appears), the HTTP
server, ``/metrics``, then - only once HTTP is listening - the iptables rule; with
--token-credentials, the interface holding the endpoint's addresses and the endpoint's
listeners (docs/token-credentials.md, "On the agent"); then one ``kiam agent ready``
line. Shutdown (SIGTERM/SIGINT), in :data:`SHUTDOWN_ORDER`: /health turns 503, the HTTP
servers stop accepting and let in-flight requests finish, then the rule is removed
(--iptables-remove) and the interface, then ``/metrics`` stops and the channels close.
A start-up step that fails undoes the steps before it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

import aiohttp
from aiohttp import web

from kiam.agent import metrics
from kiam.agent.app import AppConfig, MetadataApp
from kiam.agent.bad_requests import MetadataRunner
from kiam.agent.client import KiamClient
from kiam.agent.fairness import CallerLimits
from kiam.agent.imdsv2 import TokenStore
from kiam.agent.iptables import DnatRule, Iptables, IptablesError
from kiam.agent.link_local import InterfaceError, LinkLocalInterface
from kiam.agent.node_stream import NodeStream
from kiam.agent.paths import AllowList
from kiam.agent.proxy import MetadataProxy
from kiam.agent.replica import Replica
from kiam.agent.settings import AgentSettings
from kiam.common import logs
from kiam.common.limits import raise_open_file_limit
from kiam.common.metrics_http import MetricsError, start_metrics
from kiam.common.net import join_host_port
from kiam.common.supervisor import TASKS, Supervisor
from kiam.common.tls import TLSError, channel_credentials
from kiam.wire.client import grpc_targets

log = logging.getLogger("kiam.agent")

TOKEN_PURGE_INTERVAL = 60.0
HTTP_SHUTDOWN_TIMEOUT = 5.0


class StartupError(Exception):
    """The agent cannot start; the message says why."""


def run_agent(settings: AgentSettings) -> int:
    """Entry point called by ``kiam.cli``; returns the exit code."""
    logs.configure(json_log=settings.log.json_log, level=settings.log.level)
    raise_open_file_limit()
    try:
        if settings.iptables_cleanup:
            return asyncio.run(_cleanup(settings))
        return asyncio.run(_run(settings))
    except (StartupError, TLSError, IptablesError, InterfaceError) as exc:
        log.error("kiam agent cannot start: %s", exc)
        return 1


def _rule(settings: AgentSettings, port: int) -> DnatRule:
    return DnatRule(host=settings.host, port=port, interface=settings.host_interface)


async def _cleanup(settings: AgentSettings) -> int:
    removed = await Iptables().remove(_rule(settings, settings.port))
    interface = False
    if settings.token_credentials_interface:
        interface = await LinkLocalInterface(settings.token_credentials_interface, ()).remove()
    fields = {"removed": removed, "interface_removed": interface}
    log.info("iptables cleanup done", extra={"fields": fields})
    return 0


def listening_addresses(runner: web.AppRunner) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for address in runner.addresses:
        if isinstance(address, tuple):
            found.append((str(address[0]), int(address[1])))
    return found


async def _purge_tokens(tokens: TokenStore, metadata: MetadataApp) -> None:
    while True:
        await asyncio.sleep(TOKEN_PURGE_INTERVAL)
        tokens.purge()
        metadata.token_answers.purge(wall=time.time())


async def _serve_token_credentials(
    settings: AgentSettings, daemon: Supervisor, metadata: MetadataApp
) -> None:
    """The container credentials endpoint: its interface, then a listener per address."""
    listen = settings.token_listen
    if settings.token_credentials_interface:
        interface = LinkLocalInterface(
            settings.token_credentials_interface, [host for host, _ in listen]
        )
        # registered first: an interface half-made before a failure is removed too
        daemon.on_stop("remove interface", interface.remove)
        held = await interface.add()
        listen = tuple((host, port) for host, port in listen if host in held)
    runner = MetadataRunner(metadata.build_container(), handle_signals=False, access_log=None)
    await runner.setup()
    daemon.on_stop("stop http", runner.cleanup)
    for host, port in listen:
        site = web.TCPSite(
            runner, host, port, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT, reuse_address=True
        )
        try:
            await site.start()
        except OSError as exc:
            where = join_host_port(host, port)
            raise StartupError(
                f"cannot listen on {where} for token credentials: {exc.strerror}"
            ) from None
    shown = ", ".join(join_host_port(h, p) for h, p in listening_addresses(runner))
    log.info("token credentials endpoint listening on %s", shown)


SHUTDOWN_ORDER = (
    "stop http",
    "remove iptables rule",
    "remove interface",
    TASKS,
    "stop metrics",
    "close clients",
)
"""The documented order (docs/architecture.md): stop taking requests and let in-flight
ones finish, only then remove the DNAT rule and the token credentials interface, then
the rest."""


async def _run(settings: AgentSettings) -> int:
    try:
        targets = grpc_targets(settings.server_address)
    except ValueError as exc:
        raise StartupError(f"--server-address: {exc}") from None
    credentials = await asyncio.to_thread(channel_credentials, settings.tls)
    async with Supervisor("kiam agent", shutdown_order=SHUTDOWN_ORDER) as daemon:
        client = KiamClient(targets=targets, credentials=credentials, keepalive=settings.keepalive)
        session = aiohttp.ClientSession(auto_decompress=False)
        daemon.on_stop("close clients", lambda: _close(client, session))
        await _connect(client, budget=settings.gateway_timeout_creation)
        tokens = TokenStore()
        replica = _replica(settings, client)
        metadata = _metadata_app(
            settings, client=client, session=session, tokens=tokens, replica=replica
        )
        runner = MetadataRunner(metadata.build(), handle_signals=False, access_log=None)
        await runner.setup()
        daemon.on_stop("stop http", lambda: _stop_http(metadata, runner))
        try:
            await _listen(runner, settings)
        except OSError as exc:
            raise StartupError(f"cannot listen on port {settings.port}: {exc.strerror}") from None
        port = listening_addresses(runner)[0][1]
        if settings.prometheus_listen_addr:
            # bound now, so a taken port is one start-up line and exit 1, not a traceback
            try:
                metrics_runner = await start_metrics(
                    settings.prometheus_listen_addr, metrics.REGISTRY
                )
            except MetricsError as exc:
                raise StartupError(str(exc)) from None
            daemon.on_stop("stop metrics", metrics_runner.cleanup)
        if settings.iptables:
            iptables = Iptables()
            rule = _rule(settings, port)
            if settings.iptables_remove:
                # registered first: a rule half-added before a failure is removed too
                daemon.on_stop("remove iptables rule", lambda: iptables.remove(rule))
            await iptables.add(rule)
        if settings.token_credentials:
            await _serve_token_credentials(settings, daemon, metadata)
        daemon.start("token-purge", _purge_tokens(tokens, metadata))
        if replica is not None:
            stream = NodeStream(
                channels=client.channels,
                targets=client.targets,
                node_name=settings.node_name,
                replica=replica,
            )
            daemon.start("node-stream", stream.run())
        metadata.unavailable = None  # /health answers 200 from here on
        return await daemon.run(fields={"port": port, "iptables": settings.iptables})


async def _stop_http(metadata: MetadataApp, runner: web.AppRunner) -> None:
    metadata.unavailable = "the agent is shutting down"  # /health answers 503 from here on
    await runner.cleanup()


async def _connect(client: KiamClient, *, budget: float) -> None:
    # Start even without a server: the DaemonSet should not crash-loop while the
    # servers roll; pods get 503 (and retry) until one answers.
    fields = {"servers": ",".join(client.targets)}
    if await client.wait_ready(budget=budget):
        log.info("connected to a kiam server", extra={"fields": fields})
    else:
        log.warning(
            "no kiam server reachable yet; serving 503 until one is", extra={"fields": fields}
        )


def _replica(settings: AgentSettings, client: KiamClient) -> Replica | None:
    """The node replica, with its gauges; None without --node-name (every answer an RPC)."""
    if not settings.node_name:
        log.info("no --node-name (env NODE_NAME): every answer comes from an RPC")
        return None
    replica = Replica(session_refresh=settings.session_refresh)
    metrics.replica_entries.set_function(lambda: len(replica))
    metrics.replica_serving.set_function(lambda: float(replica.serving(now=time.monotonic())))
    return replica


def _metadata_app(
    settings: AgentSettings,
    *,
    client: KiamClient,
    session: aiohttp.ClientSession,
    tokens: TokenStore,
    replica: Replica | None,
) -> MetadataApp:
    if settings.allow_ip_query:
        log.warning("--allow-ip-query is on: callers can choose their identity (development only)")
    return MetadataApp(
        config=AppConfig(
            allow=AllowList.from_regexp(settings.allow_route_regexp),
            imdsv2_required=settings.imdsv2 == "required",
            allow_ip_query=settings.allow_ip_query,
            limits=CallerLimits(
                max_in_flight=settings.pod_max_in_flight,
                rate=settings.pod_rate,
                burst=settings.pod_burst,
            ),
            session_refresh=settings.session_refresh,
        ),
        client=client,
        proxy=MetadataProxy(endpoint=settings.metadata_endpoint, session=session),
        tokens=tokens,
        replica=replica,
    )


def dual_stack_socket(port: int) -> socket.socket:
    """One socket on every address of both families (IPv4 peers show as ``::ffff:a.b.c.d``).

    One socket keeps one port for both families, also when ``--port 0`` picks it; a
    host without IPv6 gets an IPv4-only socket.
    """
    try:
        return _bound_socket(socket.AF_INET6, "::", port)
    except OSError:
        return _bound_socket(socket.AF_INET, "0.0.0.0", port)


def _bound_socket(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _listen(runner: web.AppRunner, settings: AgentSettings) -> None:
    site: web.BaseSite
    if settings.listen_address:
        site = web.TCPSite(
            runner,
            settings.listen_address,
            settings.port,
            shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT,
            reuse_address=True,
        )
    else:
        sock = dual_stack_socket(settings.port)
        site = web.SockSite(runner, sock, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT)
    await site.start()
    shown = ", ".join(join_host_port(h, p) for h, p in listening_addresses(runner))
    log.info("listening on %s", shown, extra={"fields": {"families": _families(runner)}})


def _families(runner: web.AppRunner) -> str:
    # IPv6 socket addresses are 4-tuples; a dual-stack "::" socket serves IPv4 too
    families: set[str] = set()
    for address in runner.addresses:
        if isinstance(address, tuple):
            families.update(("ipv4", "ipv6") if address[0] == "::" else ("ipv4",))
            if len(address) == 4 and address[0] != "::":
                families = (families - {"ipv4"}) | {"ipv6"}
    return ",".join(sorted(families))


async def _close(client: KiamClient, session: aiohttp.ClientSession) -> None:
    with contextlib.suppress(Exception):
        await client.close()
    await session.close()
