"""The real ``kiam server`` process over real gRPC with mTLS, against the Kubernetes
emulator and the STS stand-in (both in this process). See testbed/kiam_testbed/processes.py."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import orjson
import pytest
from aiohttp import web
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kiam.certs import CertPaths
from kiam.wire import kiam_pb2
from kiam.wire.credentials import parse_timestamp
from kiam_testbed.commands import ROLE_BASE_ARN as BASE_ARN
from kiam_testbed.commands import aws_test_env, server_args, tls_args
from kiam_testbed.processes import ServerStack, server_stack, start_kiam, start_server

PERMITTED = "iam.amazonaws.com/permitted"
ROLE = "iam.amazonaws.com/role"


@pytest.fixture
async def stack(tmp_path: Path, certs: CertPaths) -> AsyncIterator[ServerStack]:
    async with server_stack(tmp_path, certs=certs, namespaces={"team": BASE_ARN + ".*"}) as s:
        yield s


async def role_of(stack: ServerStack, ip: str, *, timeout: float = 3.0) -> str:  # noqa: ASYNC109
    answer = await stack.stub().GetPodRole(kiam_pb2.GetPodRoleRequest(ip=ip), timeout=timeout)
    return answer.name


async def creds_of(
    stack: ServerStack,
    ip: str,
    role: str,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109
) -> kiam_pb2.Credentials:
    request = kiam_pb2.GetPodCredentialsRequest(ip=ip, role=role)
    return await stack.stub().GetPodCredentials(request, timeout=timeout)


async def status_of(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def eventually(check: Callable[[], Awaitable[bool]], *, attempts: int = 200) -> None:
    """Re-check (every 50 ms) a condition that depends on the server catching up."""
    for _ in range(attempts):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


def add_pod(stack: ServerStack, name: str, ip: str | None, role: str = "reader") -> None:
    stack.kube.create_pod("team", name, ip=ip, annotations={ROLE: role} if role else None)


async def test_role_lookup_and_credentials(stack: ServerStack) -> None:
    add_pod(stack, "web", "10.1.0.5", role="reader")
    add_pod(stack, "plain", "10.1.0.6", role="")
    assert await role_of(stack, "10.1.0.5") == "reader"
    assert await role_of(stack, "10.1.0.6") == ""

    answer = await creds_of(stack, "10.1.0.5", "reader")
    assert answer.code == "Success"
    assert answer.type == "AWS-HMAC"
    assert answer.access_key_id
    assert answer.secret_access_key
    assert answer.token
    assert parse_timestamp(answer.expiration) > parse_timestamp(answer.last_updated)
    assert answer.expiration.endswith("Z")
    calls = [c for c in stack.sts.calls if c.successful]
    assert {(c.role_arn, c.session_name) for c in calls} == {(BASE_ARN + "reader", "kiam-kiam")}
    # the full ARN is accepted too, and the answer comes from the cache
    again = await creds_of(stack, "10.1.0.5", BASE_ARN + "reader")
    assert again.access_key_id == answer.access_key_id
    # the access key id is logged, the secret and the token never
    await stack.server.wait_for_log(answer.access_key_id)
    assert not any(answer.secret_access_key in line for line in stack.server.logs)
    assert not any(answer.token in line for line in stack.server.logs)


async def test_raw_protobuf_on_go_kiams_method_paths(stack: ServerStack) -> None:
    # bytes as a Go Kiam agent sends them, on its method paths, without our generated code
    add_pod(stack, "web", "10.1.0.9", role="reader")
    channel = stack.channel()
    get_role = channel.unary_unary("/kiam.KiamService/GetPodRole")
    answer = await get_role(b"\x0a\x0810.1.0.9", timeout=3)
    assert answer == b"\x0a\x06reader"
    get_credentials = channel.unary_unary("/kiam.KiamService/GetPodCredentials")
    raw = await get_credentials(b"\x0a\x0810.1.0.9\x12\x06reader", timeout=5)
    credentials = kiam_pb2.Credentials.FromString(raw)
    assert credentials.code == "Success"
    assert credentials.access_key_id
    health = await channel.unary_unary("/kiam.KiamService/GetHealth")(b"", timeout=3)
    assert health == b"\x0a\x02ok"


async def test_unknown_ip_is_not_found(stack: ServerStack) -> None:
    status = await status_of(role_of(stack, "10.1.9.9", timeout=0.5))
    assert status == grpc.StatusCode.NOT_FOUND


async def test_denial_records_an_event(stack: ServerStack) -> None:
    stack.kube.create_namespace("locked", annotations={PERMITTED: BASE_ARN + "other"})
    stack.kube.create_pod("locked", "api", ip="10.1.0.7", annotations={ROLE: "reader"})
    status = await status_of(creds_of(stack, "10.1.0.7", "reader"))
    assert status == grpc.StatusCode.PERMISSION_DENIED
    # asking for a role that is not the pod's is denied too
    add_pod(stack, "web", "10.1.0.8", role="reader")
    assert (
        await status_of(creds_of(stack, "10.1.0.8", "admin")) == grpc.StatusCode.PERMISSION_DENIED
    )

    await stack.kube.wait_for(
        lambda: len(stack.kube.events(reason="KiamRoleForbidden")) >= 2, timeout=10
    )
    events = stack.kube.events(reason="KiamRoleForbidden")
    assert {(e["involvedObject"]["namespace"], e["involvedObject"]["name"]) for e in events} == {
        ("locked", "api"),
        ("team", "web"),
    }
    assert all(e["type"] == "Warning" for e in events)
    assert stack.sts.assume_role_calls(BASE_ARN + "admin") == 0


async def test_wait_for_pod(tmp_path: Path, certs: CertPaths) -> None:
    namespaces = {"team": ".*"}
    async with server_stack(
        tmp_path, certs=certs, namespaces=namespaces, server_args=("--level", "debug")
    ) as stack:
        stack.kube.create_pod("team", "late", annotations={ROLE: "reader"})  # no IP yet
        request = asyncio.create_task(creds_of(stack, "10.1.0.30", "reader", timeout=10))
        await stack.server.wait_for_log(r"waiting for a pod with this IP.*10\.1\.0\.30")
        stack.kube.set_pod_status("team", "late", pod_ip="10.1.0.30")
        answer = await request
        assert answer.code == "Success"
        # even at debug level (botocore's own debug logs print response bodies)
        await stack.server.wait_for_log(answer.access_key_id)
        assert not any(answer.secret_access_key in line for line in stack.server.logs)
        assert not any(answer.token in line for line in stack.server.logs)


async def test_ip_reuse_gives_the_new_pods_role(stack: ServerStack) -> None:
    add_pod(stack, "a", "10.1.0.40", role="role-a")
    assert await role_of(stack, "10.1.0.40") == "role-a"
    stack.kube.delete_pod("team", "a", grace_period=0)
    assert stack.kube.find("pods", "team", "a") is None

    async def gone() -> bool:
        return await status_of(role_of(stack, "10.1.0.40", timeout=0.3)) == (
            grpc.StatusCode.NOT_FOUND
        )

    await eventually(gone)
    add_pod(stack, "b", "10.1.0.40", role="role-b")
    assert await role_of(stack, "10.1.0.40") == "role-b"
    denied = await status_of(creds_of(stack, "10.1.0.40", "role-a"))
    assert denied == grpc.StatusCode.PERMISSION_DENIED
    answer = await creds_of(stack, "10.1.0.40", "role-b")
    assert answer.code == "Success"
    assert stack.sts.successful_assume_role_calls(BASE_ARN + "role-b") >= 1


async def test_ip_claimed_by_pods_with_different_roles_is_refused(stack: ServerStack) -> None:
    add_pod(stack, "x", "10.1.0.45", role="role-x")
    add_pod(stack, "y", "10.1.0.45", role="role-y")

    async def refused() -> bool:
        status = await status_of(role_of(stack, "10.1.0.45"))
        return status == grpc.StatusCode.FAILED_PRECONDITION

    await eventually(refused)
    status = await status_of(creds_of(stack, "10.1.0.45", "role-x"))
    assert status == grpc.StatusCode.FAILED_PRECONDITION
    # once one of them finishes, the other owns the IP again
    stack.kube.set_pod_status("team", "x", phase="Succeeded")

    async def owned_by_y() -> bool:
        try:
            return await role_of(stack, "10.1.0.45") == "role-y"
        except aio.AioRpcError:
            return False

    await eventually(owned_by_y)


async def test_cold_start_1000_pods_50_roles_cost_50_calls(stack: ServerStack) -> None:
    roles = [f"role-{n}" for n in range(50)]
    ips = {f"10.2.{n // 250}.{n % 250 + 1}": roles[n % 50] for n in range(1000)}
    for n, (ip, role) in enumerate(ips.items()):
        add_pod(stack, f"pod-{n}", ip, role=role)
    async with asyncio.timeout(30):
        await stack.sts.wait_for_calls(50)
    limit = asyncio.Semaphore(50)

    async def fetch(ip: str, role: str) -> str:
        async with limit:
            return (await creds_of(stack, ip, role, timeout=10)).access_key_id

    keys = await asyncio.gather(*(fetch(ip, role) for ip, role in ips.items()))
    assert len(set(keys)) == 50
    assert stack.sts.assume_role_calls() == 50
    assert {c.role_arn for c in stack.sts.calls} == {BASE_ARN + r for r in roles}


async def test_refresh_ahead_of_expiry(tmp_path: Path, certs: CertPaths) -> None:
    args = ("--session-duration", "15m", "--session-refresh", "14m59s")
    async with server_stack(
        tmp_path, certs=certs, namespaces={"team": ".*"}, server_args=args
    ) as stack:
        add_pod(stack, "web", "10.1.0.50", role="reader")
        first = await creds_of(stack, "10.1.0.50", "reader")
        arn = BASE_ARN + "reader"
        # a key in use is refreshed without anyone asking
        async with asyncio.timeout(15):
            await stack.sts.wait_for_calls(2, role_arn=arn)
        second: list[str] = []

        async def changed() -> bool:
            answer = await creds_of(stack, "10.1.0.50", "reader")
            second.append(answer.access_key_id)
            return answer.access_key_id != first.access_key_id

        await eventually(changed)
        assert stack.sts.successful_assume_role_calls(arn) >= 2


async def test_access_denied_is_internal_with_an_event(stack: ServerStack) -> None:
    arn = BASE_ARN + "forbidden"
    stack.sts.queue_fault("access-denied", count=10, role_arn=arn)
    add_pod(stack, "web", "10.1.0.61", role="forbidden")
    status = await status_of(creds_of(stack, "10.1.0.61", "forbidden", timeout=10))
    assert status == grpc.StatusCode.INTERNAL
    await stack.kube.wait_for(
        lambda: bool(stack.kube.events("team", reason="KiamCredentialError")), timeout=10
    )


async def test_watch_dropped_and_410_leave_no_stale_entry(stack: ServerStack) -> None:
    add_pod(stack, "old", "10.1.0.70", role="reader")
    assert await role_of(stack, "10.1.0.70") == "reader"
    lists_before = stack.kube.request_count("GET", "/api/v1/pods", watch=False)
    # during the gap: the pod goes, a new one comes, and the history is compacted
    assert stack.kube.drop_watches("pods") >= 1
    stack.kube.delete_pod("team", "old", grace_period=0)
    add_pod(stack, "new", "10.1.0.71", role="writer")
    stack.kube.compact()
    # the server's re-watch gets 410 and re-lists
    await stack.kube.wait_for_requests(lists_before + 1, "GET", "/api/v1/pods", watch=False)
    await stack.kube.wait_for_watchers(1, "pods")
    assert await role_of(stack, "10.1.0.71") == "writer"
    status = await status_of(role_of(stack, "10.1.0.70", timeout=0.5))
    assert status == grpc.StatusCode.NOT_FOUND


async def test_client_without_certificate_is_refused(stack: ServerStack) -> None:
    ca = stack.certs.ca.read_bytes()
    channel = stack.channel(grpc.ssl_channel_credentials(root_certificates=ca))
    stub = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # the same server answers a client with the agent certificate
    answer = await stack.stub().GetHealth(kiam_pb2.GetHealthRequest(), timeout=3)
    assert answer.message == "ok"


async def test_health_reports_not_serving_while_the_api_fails(
    tmp_path: Path, certs: CertPaths
) -> None:
    from kiam_testbed.kube import KubeEmulator
    from kiam_testbed.sts import StsStandIn

    async with KubeEmulator() as kube, StsStandIn() as sts:
        kube.inject_fault(method="GET", path=r"^/api/v1/pods$", status=500, times=10_000)
        server = await start_server(
            kubeconfig=kube.write_kubeconfig(tmp_path / "kubeconfig"),
            sts_url=sts.url,
            certs=certs,
        )
        async with server:
            await kube.wait_for_requests(1, "GET", "/api/v1/pods", watch=False)
            channel = aio.secure_channel(
                server.address,
                grpc.ssl_channel_credentials(
                    root_certificates=certs.ca.read_bytes(),
                    private_key=certs.agent_key.read_bytes(),
                    certificate_chain=certs.agent_cert.read_bytes(),
                ),
            )
            async with channel:
                health = health_pb2_grpc.HealthStub(channel)
                for service in ("", "kiam.KiamService"):
                    answer = await health.Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=3
                    )
                    assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
                kiam = kiam_pb2.GetHealthRequest()
                from kiam.wire import kiam_pb2_grpc

                status = await status_of(
                    kiam_pb2_grpc.KiamServiceStub(channel).GetHealth(kiam, timeout=3)
                )
                assert status == grpc.StatusCode.UNAVAILABLE

                watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
                first = await watch.read()
                assert first.status == health_pb2.HealthCheckResponse.NOT_SERVING
                kube.clear_faults()
                second = await watch.read()
                assert second.status == health_pb2.HealthCheckResponse.SERVING
                watch.cancel()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_kiam_health_command(stack: ServerStack, host: str) -> None:
    # by IP and by DNS name (localhost may also resolve to ::1, where nothing listens)
    port = stack.server.address.rpartition(":")[2]
    tls = stack.agent_tls
    probe = await start_kiam(
        [
            "health",
            "--server-address",
            f"{host}:{port}",
            "--cert",
            tls.cert,
            "--key",
            tls.key,
            "--ca",
            tls.ca,
            "--timeout",
            "5s",
        ],
        log_dir=stack.directory,
        env=aws_test_env(),
    )
    assert await probe.wait(timeout=30) == 0, probe.log_tail()


async def test_sigterm_drains_and_exits_zero(stack: ServerStack) -> None:
    add_pod(stack, "web", "10.1.0.80", role="reader")
    assert await role_of(stack, "10.1.0.80") == "reader"
    assert await stack.server.stop() == 0
    assert stack.server.count_logs("received SIGTERM") == 1
    assert stack.server.count_logs("gRPC server stopped") == 1
    order = ["serving on", "caches synced", "kiam server ready", "received SIGTERM"]
    order += ["gRPC server stopped", "kiam server stopped"]
    found = [next(i for i, line in enumerate(stack.server.logs) if text in line) for text in order]
    assert found == sorted(found), stack.server.logs


async def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, certs: CertPaths) -> None:
    async with server_stack(
        tmp_path, certs=certs, namespaces={"team": ".*"}, server_args=("--level", "debug")
    ) as stack:
        stack.kube.create_pod("team", "late", annotations={ROLE: "reader"})  # no IP yet
        health = health_pb2_grpc.HealthStub(stack.channel())
        watch = health.Watch(health_pb2.HealthCheckRequest(service="kiam.KiamService"))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        request = asyncio.create_task(role_of(stack, "10.1.0.85", timeout=4))
        await stack.server.wait_for_log(r"waiting for a pod with this IP.*10\.1\.0\.85")
        stack.server.signal(signal.SIGTERM)
        await stack.server.wait_for_log("received SIGTERM")
        # load balancers and `kiam health` see the server leave at once
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        # the caches keep running while the server drains, so the wait still succeeds
        stack.kube.set_pod_status("team", "late", pod_ip="10.1.0.85")
        assert await request == "reader"
        assert await stack.server.wait() == 0
        assert stack.server.count_logs("gRPC server stopped") == 1


@pytest.mark.parametrize("taken_by", ["grpc", "metrics"])
async def test_port_taken_is_one_line_and_exit_1(
    tmp_path: Path, certs: CertPaths, taken_by: str
) -> None:
    from kiam_testbed.kube import KubeEmulator

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        grpc_port, extra = port, ()
        if taken_by == "metrics":
            grpc_port, extra = 0, ("--prometheus-listen-addr", f"127.0.0.1:{port}")
        async with KubeEmulator() as kube:
            process = await start_kiam(
                server_args(
                    bind=f"127.0.0.1:{grpc_port}",
                    kubeconfig=kube.write_kubeconfig(tmp_path / "kubeconfig"),
                    sts_url="http://127.0.0.1:9",
                    tls=tls_args(cert=certs.server_cert, key=certs.server_key, ca=certs.ca),
                    extra=extra,
                ),
                log_dir=tmp_path,
            )
            assert await process.wait(timeout=30) == 1
    errors = [line for line in process.logs if "cannot start" in line]
    assert len(errors) == 1, process.logs
    said = f"127.0.0.1:{port} for /metrics" if taken_by == "metrics" else f"127.0.0.1:{port}"
    assert said in errors[0]
    assert not any("Traceback" in line for line in process.logs)


async def test_bad_kubeconfig_is_one_line_and_exit_1(tmp_path: Path, certs: CertPaths) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("clusters: [\n")
    process = await start_kiam(
        [
            "server",
            "--bind",
            "127.0.0.1:0",
            "--kubeconfig",
            str(kubeconfig),
            "--role-base-arn",
            BASE_ARN,
            "--cert",
            str(certs.server_cert),
            "--key",
            str(certs.server_key),
            "--ca",
            str(certs.ca),
        ],
        log_dir=tmp_path,
    )
    assert await process.wait(timeout=30) == 1
    assert len(process.logs) == 1, process.logs
    assert "cannot load Kubernetes configuration" in process.logs[0]
    assert "not valid YAML" in process.logs[0]


def _server_flags(tmp_path: Path, certs: CertPaths, *, flag: str, value: str) -> list[str]:
    """Working server flags, but ``flag`` set to ``value`` (a ``.pem`` name: a garbage
    file in ``tmp_path``; ``{ca}``: the CA certificate)."""
    settings = {
        "--bind": "127.0.0.1:0",
        "--role-base-arn": BASE_ARN,
        "--cert": str(certs.server_cert),
        "--key": str(certs.server_key),
        "--ca": str(certs.ca),
    }
    if value.endswith(".pem"):
        value = str(tmp_path / value)
        Path(value).write_text("garbage\n")
    settings[flag] = value.replace("{ca}", str(certs.ca))
    return [part for item in settings.items() for part in item]


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--cert", "garbage.pem", "garbage.pem: not a PEM certificate"),
        ("--key", "{ca}", "not an unencrypted PEM private key"),
        ("--role-base-arn", "arn:aws:iam::123456789012:user/", "arn:aws:iam::123456789012:user/"),
        ("--bind", "127.0.0.1", "--bind"),
    ],
)
async def test_unusable_settings_are_one_line_and_exit_1(
    tmp_path: Path, certs: CertPaths, flag: str, value: str, expected: str
) -> None:
    from kiam_testbed.kube import KubeEmulator

    flags = _server_flags(tmp_path, certs, flag=flag, value=value)
    async with KubeEmulator() as kube:
        argv = ["server", "--kubeconfig", str(kube.write_kubeconfig(tmp_path / "kubeconfig"))]
        argv += ["--sts-endpoint", "http://127.0.0.1:9", *flags]
        process = await start_kiam(argv, log_dir=tmp_path)
        assert await process.wait(timeout=30) == 1
    errors = [line for line in process.logs if "cannot start" in line]
    assert len(errors) == 1, process.logs
    assert expected in errors[0]
    assert not any("Traceback" in line for line in process.logs)


async def test_metrics_and_json_logs(tmp_path: Path, certs: CertPaths) -> None:
    args = ("--json-log", "--prometheus-listen-addr", "127.0.0.1:0")
    async with server_stack(
        tmp_path, certs=certs, namespaces={"team": ".*"}, server_args=args
    ) as stack:
        add_pod(stack, "web", "10.1.0.90", role="reader")
        answer = await creds_of(stack, "10.1.0.90", "reader")
        assert await status_of(role_of(stack, "10.1.0.91", timeout=0.3)) == (
            grpc.StatusCode.NOT_FOUND
        )
        serving = orjson.loads(await stack.server.wait_for_log("serving metrics on"))
        metrics = serving["address"]
        not_found = 'grpc_code="NotFound",grpc_method="GetPodRole"'
        text = ""

        async def scraped() -> bool:
            # grpc.aio's abort() sends the status before the handler's frame unwinds,
            # so the client can see NOT_FOUND a moment before the counter moves
            nonlocal text
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://{metrics}/metrics") as response,
            ):
                assert response.status == 200
                text = await response.text()
            return not_found in text

        await eventually(scraped)
        assert (
            'grpc_server_handled_total{grpc_code="OK",grpc_method="GetPodCredentials",'
            'grpc_service="kiam.KiamService",grpc_type="unary"} 1.0' in text
        )
        assert "grpc_server_started_total{" in text
        assert "kiam_sts_cache_hit_total" in text or "kiam_sts_cache_miss_total" in text

        line = await stack.server.wait_for_log('"issued credentials"')
        doc = orjson.loads(line)
        assert doc["pod.namespace"] == "team"
        assert doc["pod.name"] == "web"
        assert doc["access.key.id"] == answer.access_key_id
        for raw in stack.server.logs:
            orjson.loads(raw)  # every line is one JSON object
            assert answer.secret_access_key not in raw


async def test_role_base_arn_autodetect(tmp_path: Path, certs: CertPaths) -> None:
    profile = "arn:aws:iam::210987654321:instance-profile/nodes"

    async def info(_: web.Request) -> web.Response:
        return web.json_response({"Code": "Success", "InstanceProfileArn": profile})

    async def token(_: web.Request) -> web.Response:
        return web.Response(text="imds-token")

    app = web.Application()
    app.router.add_get("/latest/meta-data/iam/info", info)
    app.router.add_put("/latest/api/token", token)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        args = ("--role-base-arn-autodetect", "--metadata-endpoint", f"http://{host}:{port}")
        async with server_stack(
            tmp_path, certs=certs, base_arn="", server_args=args, namespaces={"team": ".*"}
        ) as stack:
            await stack.server.wait_for_log("detected role base ARN")
            add_pod(stack, "web", "10.1.0.95", role="reader")
            answer = await creds_of(stack, "10.1.0.95", "reader")
            assert answer.code == "Success"
            assert [c.role_arn for c in stack.sts.calls] == [
                "arn:aws:iam::210987654321:role/reader"
            ]
    finally:
        await runner.cleanup()
