"""The real ``kiam agent`` process over real mTLS to a scripted KiamService.

Each caller is a distinct loopback source address (127.0.0.x, ::1), standing for a pod;
the scripted server answers by that address (see ``standins.PODS``), so every status
code of the agent (docs/architecture.md) can be produced, including the ones a real
server rarely gives.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import orjson
import pytest

from kiam.agent.imdsv2 import TOKEN_HEADER, TTL_HEADER
from kiam_testbed.node_stream_server import ScriptedNodeServer
from tests.agent.conftest import ImdsStandIn
from tests.agent.standins import AgentProcess, raw_request

CREDS = "/latest/meta-data/iam/security-credentials/"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    text: str


async def call(
    agent: AgentProcess,
    path: str,
    *,
    source: str = "127.0.0.2",
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request from ``source`` (a pod's address), the way an SDK would send it."""
    host = "::1" if ":" in source else "127.0.0.1"
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(
            method, agent.url(host) + path, headers=headers or {}, allow_redirects=False
        ) as resp,
    ):
        text = await resp.text()
        return Reply(resp.status, dict(resp.headers), text)


async def token(agent: AgentProcess, *, source: str, ttl: str = "60") -> str:
    reply = await call(
        agent, "/latest/api/token", source=source, method="PUT", headers={TTL_HEADER: ttl}
    )
    assert reply.status == 200, reply.text
    return reply.text


# ------------------------------------------------------------------ plain routes


async def test_ping_and_health(agent: AgentProcess, fake_kiam: ScriptedNodeServer) -> None:
    assert (await call(agent, "/ping")).text == "pong"
    assert (await call(agent, "/health")).status == 200
    before = fake_kiam.health_checks
    deep = await call(agent, "/health?deep=1")
    assert (deep.status, deep.text) == (200, "ok from scripted")
    assert fake_kiam.health_checks == before + 1


async def test_role_name_and_credentials(
    agent: AgentProcess, fake_kiam: ScriptedNodeServer
) -> None:
    role = await call(agent, CREDS, source="127.0.1.21")
    assert (role.status, role.text) == (200, "role-21")
    assert role.headers["Content-Type"].startswith("text/plain")
    creds = await call(agent, CREDS + "role-21", source="127.0.1.21")
    assert creds.status == 200
    assert creds.headers["Content-Type"] == "application/json"
    document = orjson.loads(creds.text)
    assert list(document) == [
        "Code",
        "LastUpdated",
        "Type",
        "AccessKeyId",
        "SecretAccessKey",
        "Token",
        "Expiration",
    ]
    assert document["Code"] == "Success"
    assert document["Type"] == "AWS-HMAC"
    assert document["AccessKeyId"] == "ASIAROLE21"
    assert document["LastUpdated"] == "2030-01-01T00:00:00Z"
    assert document["Expiration"] == "2030-01-01T01:00:00Z"
    calls = fake_kiam.rpcs("127.0.1.21")
    assert [(c.method, c.role) for c in calls] == [
        ("GetPodRole", ""),
        ("GetPodCredentials", "role-21"),
    ]


async def test_no_slash_role_list_redirects_to_the_slash_form(agent: AgentProcess) -> None:
    # as Go Kiam (TestRedirectsToCanonicalPath); the Location has no host, so the client
    # comes back by whatever address it used (docs/architecture.md)
    reply = await call(agent, CREDS.rstrip("/"), source="127.0.1.22")
    assert reply.status == 301
    assert reply.headers["Location"] == CREDS
    followed = await call(agent, reply.headers["Location"], source="127.0.1.22")
    assert (followed.status, followed.text) == (200, "role-22")


async def test_redirect_keeps_the_query_and_normalises_the_path(agent: AgentProcess) -> None:
    reply = await raw_request(
        agent.port, "//latest//meta-data/iam/./security-credentials?x=1", source="127.0.1.22"
    )
    assert reply.status == 301
    assert reply.headers["Location"] == "/latest/meta-data/iam/security-credentials/?x=1"


async def test_an_aiohttp_client_following_the_redirect_gets_the_role(agent: AgentProcess) -> None:
    # a client that follows redirects (as AsyncAws for PHP does) and never sends the slash
    connector = aiohttp.TCPConnector(local_addr=("127.0.1.22", 0), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(agent.url("127.0.0.1") + CREDS.rstrip("/")) as resp,
    ):
        assert (resp.status, await resp.text()) == (200, "role-22")
        assert [r.status for r in resp.history] == [301]


async def test_other_version_segments(agent: AgentProcess) -> None:
    reply = await call(
        agent, "/2016-09-02/meta-data/iam/security-credentials/", source="127.0.1.23"
    )
    assert (reply.status, reply.text) == (200, "role-23")


async def test_ipv6_caller(agent: AgentProcess, fake_kiam: ScriptedNodeServer) -> None:
    reply = await call(agent, CREDS, source="::1")
    assert (reply.status, reply.text) == (200, "v6-role")
    assert fake_kiam.rpcs("::1")


async def test_ipv4_caller_is_not_seen_as_mapped_ipv6(
    agent: AgentProcess, fake_kiam: ScriptedNodeServer
) -> None:
    # the agent listens on one dual-stack socket, where IPv4 peers are ::ffff:a.b.c.d
    await call(agent, CREDS, source="127.0.1.24")
    assert fake_kiam.rpcs("127.0.1.24")
    assert not fake_kiam.rpcs("::ffff:127.0.1.24")


async def test_ip_query_is_ignored_by_default(
    agent: AgentProcess, fake_kiam: ScriptedNodeServer
) -> None:
    before = len(fake_kiam.rpcs("127.0.0.2"))
    reply = await call(agent, CREDS + "?ip=127.0.0.2", source="127.0.1.25")
    assert (reply.status, reply.text) == (200, "role-25")
    assert len(fake_kiam.rpcs("127.0.0.2")) == before


async def test_identity_headers_are_ignored(
    agent: AgentProcess, fake_kiam: ScriptedNodeServer
) -> None:
    # only the TCP peer says who the caller is, whatever headers claim
    before = len(fake_kiam.rpcs("127.0.0.2"))
    claims = {
        "X-Forwarded-For": "127.0.0.2",
        "X-Real-IP": "127.0.0.2",
        "Forwarded": "for=127.0.0.2",
    }
    reply = await call(agent, CREDS, source="127.0.1.26", headers=claims)
    assert (reply.status, reply.text) == (200, "role-26")
    assert len(fake_kiam.rpcs("127.0.0.2")) == before


# ------------------------------------------------------------------ error statuses


@pytest.mark.parametrize(
    ("source", "path", "status", "words"),
    [
        ("127.0.0.3", CREDS, 404, "no iam.amazonaws.com/role annotation"),
        ("127.0.0.4", CREDS, 404, "no pod found"),
        ("127.0.0.4", CREDS + "app-role", 404, "no pod found"),
        ("127.0.0.5", CREDS, 409, "different roles"),
        ("127.0.0.2", CREDS + "someone-elses-role", 403, "forbidden"),
        ("127.0.0.6", CREDS + "broken", 500, "could not get credentials"),
        ("127.0.0.9", CREDS + "garbled", 502, "unreadable credentials"),
        ("127.0.0.8", CREDS, 503, "no kiam server available"),
        ("127.0.0.7", CREDS, 504, "did not answer in time"),
    ],
)
async def test_error_statuses(
    agent: AgentProcess, source: str, path: str, status: int, words: str
) -> None:
    reply = await call(agent, path, source=source)
    assert reply.status == status
    assert words in reply.text
    assert reply.text.count("\n") == 1 and reply.text.endswith("\n")


async def test_unavailable_is_retried_and_permission_denied_is_not(
    agent: AgentProcess, fake_kiam: ScriptedNodeServer
) -> None:
    assert (await call(agent, CREDS, source="127.0.0.8")).status == 503
    assert len(fake_kiam.rpcs("127.0.0.8")) >= 2
    forbidden_before = [
        c for c in fake_kiam.rpcs("127.0.0.2") if c.role == "not-mine"
    ]
    assert (await call(agent, CREDS + "not-mine", source="127.0.0.2")).status == 403
    forbidden = [c for c in fake_kiam.rpcs("127.0.0.2") if c.role == "not-mine"]
    assert len(forbidden) - len(forbidden_before) == 1


async def test_bad_request_and_method(agent: AgentProcess) -> None:
    bad = await raw_request(agent.port, "/latest/meta-data/%2e%2e/iam/")
    assert bad.status == 400
    post = await call(agent, CREDS, method="POST")
    assert (post.status, post.headers["Allow"]) == (405, "GET, HEAD")
    get = await call(agent, "/latest/api/token", method="GET")
    assert (get.status, get.headers["Allow"]) == (405, "PUT")


async def test_unknown_path_is_blocked(agent: AgentProcess, fake_imds: ImdsStandIn) -> None:
    before = len(fake_imds.state.requests)
    reply = await call(agent, "/latest/user-data")
    assert reply.status == 404
    assert "request blocked by allow-route-regexp" in reply.text
    assert len(fake_imds.state.requests) == before


# ------------------------------------------------------------------ IMDSv2


async def test_imdsv2_flow(agent: AgentProcess) -> None:
    source = "127.0.1.30"
    reply = await call(
        agent, "/latest/api/token", source=source, method="PUT", headers={TTL_HEADER: "21600"}
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert reply.headers[TTL_HEADER] == "21600"
    good = {TOKEN_HEADER: reply.text}
    assert (await call(agent, CREDS, source=source, headers=good)).text == "role-30"
    creds = await call(agent, CREDS + "role-30", source=source, headers=good)
    assert creds.status == 200
    # the token is bound to the address it was issued to
    stolen = await call(agent, CREDS, source="127.0.1.31", headers=good)
    assert stolen.status == 401
    forged = await call(agent, CREDS, source=source, headers={TOKEN_HEADER: "forged"})
    assert forged.status == 401


async def test_expired_token_is_401(agent: AgentProcess) -> None:
    source = "127.0.1.36"
    value = await token(agent, source=source, ttl="1")
    assert (await call(agent, CREDS, source=source, headers={TOKEN_HEADER: value})).status == 200
    await asyncio.sleep(1.2)  # past the 1-second TTL; expiry is never early
    reply = await call(agent, CREDS, source=source, headers={TOKEN_HEADER: value})
    assert reply.status == 401
    assert "invalid, expired" in reply.text


async def test_imdsv1_fallback_when_optional(agent: AgentProcess) -> None:
    assert (await call(agent, CREDS, source="127.0.1.32")).status == 200


@pytest.mark.parametrize("ttl", [None, "0", "21601", "ten"])
async def test_token_ttl_is_checked(agent: AgentProcess, ttl: str | None) -> None:
    headers = {} if ttl is None else {TTL_HEADER: ttl}
    reply = await call(agent, "/latest/api/token", method="PUT", headers=headers)
    assert reply.status == 400
    assert TTL_HEADER in reply.text


async def test_forwarded_token_request_is_refused(agent: AgentProcess) -> None:
    reply = await call(
        agent,
        "/latest/api/token",
        method="PUT",
        headers={TTL_HEADER: "60", "X-Forwarded-For": "10.9.9.9"},
    )
    assert reply.status == 403


async def test_a_token_flood_from_one_pod_costs_only_its_own_tokens(agent: AgentProcess) -> None:
    neighbour = await token(agent, source="127.0.1.34")
    flooder = "127.0.1.35"
    issued: list[str] = []
    connector = aiohttp.TCPConnector(local_addr=(flooder, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(200):  # well past the per-address cap of 64
            async with session.put(
                agent.url() + "/latest/api/token", headers={TTL_HEADER: "21600"}
            ) as resp:
                assert resp.status == 200
                issued.append(await resp.text())
    assert len(set(issued)) == 200

    async def role_with(value: str, source: str) -> int:
        return (await call(agent, CREDS, source=source, headers={TOKEN_HEADER: value})).status

    # the flooder's oldest tokens were evicted, its newest still work
    assert await role_with(issued[0], flooder) == 401
    assert await role_with(issued[-1], flooder) == 200
    # another pod's token, issued before the flood, was not pushed out
    assert await role_with(neighbour, "127.0.1.34") == 200


async def test_required_mode(strict_agent: AgentProcess) -> None:
    source = "127.0.1.33"
    assert (await call(strict_agent, CREDS, source=source)).status == 401
    assert (await call(strict_agent, "/latest/meta-data/instance-id", source=source)).status == 401
    value = await token(strict_agent, source=source)
    reply = await call(strict_agent, CREDS, source=source, headers={TOKEN_HEADER: value})
    assert (reply.status, reply.text) == (200, "role-33")
    # /ping and /health are the agent's own, not metadata
    assert (await call(strict_agent, "/ping", source=source)).status == 200


# ------------------------------------------------------------------ the proxy


async def test_allowed_path_is_proxied_with_the_agents_own_token(
    agent: AgentProcess, fake_imds: ImdsStandIn
) -> None:
    pod_token = await token(agent, source="127.0.1.40")
    reply = await call(
        agent,
        "/latest/meta-data/instance-id",
        source="127.0.1.40",
        headers={TOKEN_HEADER: pod_token, "X-Forwarded-For": "1.2.3.4"},
    )
    assert (reply.status, reply.text) == (200, "upstream:/latest/meta-data/instance-id")
    gets = [r for r in fake_imds.state.requests if r.method == "GET"]
    assert gets
    last = gets[-1]
    assert last.headers[TOKEN_HEADER] in fake_imds.state.tokens
    assert last.headers[TOKEN_HEADER] != pod_token
    assert "X-Forwarded-For" not in last.headers


async def test_upstream_token_is_cached_and_renewed_when_refused(
    agent: AgentProcess, fake_imds: ImdsStandIn
) -> None:
    path = "/latest/meta-data/placement/availability-zone"
    assert (await call(agent, path)).status == 200
    puts = len(fake_imds.state.paths("PUT"))
    assert (await call(agent, path)).status == 200
    assert len(fake_imds.state.paths("PUT")) == puts  # cached
    with fake_imds.state.lock:
        fake_imds.state.tokens.clear()  # the IMDS forgets every token (e.g. it restarted)
    reply = await call(agent, path)
    assert (reply.status, reply.text) == (200, f"upstream:{path}")
    assert len(fake_imds.state.paths("PUT")) == puts + 1


async def test_upstream_failure_is_502(agent: AgentProcess) -> None:
    reply = await call(agent, "/latest/meta-data/reset")
    assert reply.status == 502
    assert "metadata service" in reply.text


BYPASSES = [
    "/latest/meta-data/instance-id/../iam/info",
    "/latest/meta-data/instance-id/..%2fiam/info",
    "/latest/meta-data/instance-id/%2e%2e/iam/info",
    "/latest/meta-data/instance-id/%2E%2E/iam/info",
    "/latest/meta-data/%252e%252e/iam/info",
    "//latest//meta-data//iam//info",
    "/latest/meta-data/./iam/info",
    "/latest/meta-data/iam/info?/../../instance-id",
    "/latest/meta-data/iam/info#/../instance-id",
    "/latest/meta-data/instance-id%3f/../../iam/info",
    "/latest/meta-data/INSTANCE-ID",
    "/LATEST/meta-data/instance-id",
    "/latest/Meta-Data/iam/security-credentials/other-role",
    "/latest/meta-data/iam/security-credentials/other-role/ex!tra",
    "/latest/meta-data/iam/security-credentials/other-role/ex~tra",
    "/latest/meta-data/iam/Security-Credentials/",
    "/latest/meta-data/instance-id\\..\\iam\\info",
]


@pytest.mark.parametrize("target", BYPASSES)
async def test_bypass_attempts_never_reach_a_blocked_path(
    agent: AgentProcess, strict_agent: AgentProcess, fake_imds: ImdsStandIn, target: str
) -> None:
    before = len(fake_imds.state.requests)
    reply = await raw_request(agent.port, target, source="127.0.1.50")
    assert reply.status in (400, 404), reply.text
    assert len(fake_imds.state.requests) == before
    # even when the allow-list allows everything, the credentials subtree is never proxied
    if "ecurity-" in target:
        value = await token(strict_agent, source="127.0.1.51")
        strict = await raw_request(
            strict_agent.port, target, source="127.0.1.51", headers={TOKEN_HEADER: value}
        )
        assert strict.status in (400, 404), strict.text
        assert [r for r in fake_imds.state.requests[before:] if r.method == "GET"] == []


async def test_query_strings_are_not_forwarded(agent: AgentProcess, fake_imds: ImdsStandIn) -> None:
    reply = await raw_request(agent.port, "/latest/meta-data/instance-id?x=/../iam/info")
    assert (reply.status, reply.text) == (200, "upstream:/latest/meta-data/instance-id")
    assert fake_imds.state.paths()[-1] == "/latest/meta-data/instance-id"


async def test_normalised_path_is_what_is_forwarded(
    agent: AgentProcess, fake_imds: ImdsStandIn
) -> None:
    reply = await raw_request(agent.port, "//latest/./meta-data/x/../placement//availability-zone")
    assert reply.status == 200
    assert fake_imds.state.paths()[-1] == "/latest/meta-data/placement/availability-zone"


async def test_dot_segments_cannot_reach_another_role(
    agent: AgentProcess, fake_kiam: ScriptedNodeServer, fake_imds: ImdsStandIn
) -> None:
    before = len(fake_imds.state.requests)
    target = CREDS + "app-role/../../security-credentials/other-role"
    reply = await raw_request(agent.port, target, source="127.0.0.2")
    # the server is asked for the role the normalised path names, and refuses it
    assert reply.status == 403
    asked = [c.role for c in fake_kiam.rpcs("127.0.0.2")]
    assert asked[-1] == "other-role"
    assert len(fake_imds.state.requests) == before


async def test_a_ttl_of_non_ascii_digits_is_400_not_500(agent: AgentProcess) -> None:
    # "²" (latin-1 0xB2) is a digit to str.isdigit() but not to int()
    reply = await raw_request(
        agent.port, "/latest/api/token", method="PUT", source="127.0.1.60",
        headers={TTL_HEADER: "\u00b2"},
    )
    assert reply.status == 400, reply.body
