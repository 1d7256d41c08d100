"""Path normalisation and routing: pure functions, no sockets."""

from __future__ import annotations

import pytest

from kiam.agent.errors import BadRequest
from kiam.agent.paths import (
    AllowList,
    Route,
    RouteKind,
    classify,
    normalise_path,
    split_target,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/latest/meta-data/instance-id", "/latest/meta-data/instance-id"),
        ("/latest/meta-data/", "/latest/meta-data/"),
        ("//latest///meta-data//instance-id", "/latest/meta-data/instance-id"),
        ("/latest/./meta-data/instance-id", "/latest/meta-data/instance-id"),
        ("/latest/meta-data/x/../instance-id", "/latest/meta-data/instance-id"),
        ("/latest/meta-data/x/..", "/latest/meta-data/"),
        ("/latest/meta-data/.", "/latest/meta-data/"),
        ("/latest/meta-data/%69nstance-id", "/latest/meta-data/instance-id"),
        (
            "/latest/meta-data/iam/security-credentials",
            "/latest/meta-data/iam/security-credentials",
        ),
        ("/..%41", "/..A"),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise_path(raw) == expected


NOT_ABSOLUTE = "request path must start with '/'"
ENCODED_SEPARATOR = "percent-encoded '/', '.', '\\' or NUL is not allowed in the path"
MALFORMED = "malformed percent-encoding in the path"
UNSAFE = "the decoded path may hold only letters, digits, '/' and -._~!$&'()*+,;=:@"
ABOVE_ROOT = "'..' above the root is not allowed in the path"
TOO_LONG = "request path longer than 2048 characters"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("latest/meta-data", NOT_ABSOLUTE),
        ("/latest/meta-data/%2e%2e/iam", ENCODED_SEPARATOR),  # encoded dots
        ("/latest/meta-data/%2E%2E/iam", ENCODED_SEPARATOR),
        ("/latest%2fmeta-data", ENCODED_SEPARATOR),  # encoded slash
        ("/latest%2Fmeta-data", ENCODED_SEPARATOR),
        ("/latest/%5c..%5ciam", ENCODED_SEPARATOR),  # encoded backslash
        ("/latest/meta-data/%00", ENCODED_SEPARATOR),
        ("/latest/meta-data/%252e%252e/iam", UNSAFE),  # double encoding
        ("/latest/meta-data/%3f", UNSAFE),  # '?' after decoding
        ("/latest/meta-data/%23", UNSAFE),  # '#'
        ("/latest/meta-data/%20x", UNSAFE),  # space
        ("/latest/meta-data/%c3%a9", UNSAFE),  # non-ASCII
        ("/latest/meta-data/%zz", MALFORMED),  # malformed escape
        ("/latest/meta-data/%4", MALFORMED),
        ("/latest/meta-data/%", MALFORMED),
        ("/latest/%41%", MALFORMED),  # a good escape does not hide a bad one
        ("/latest\\..\\iam", UNSAFE),
        ("/..", ABOVE_ROOT),
        ("/latest/../../etc", ABOVE_ROOT),
        ("/" + "a" * 3000, TOO_LONG),
        ("/" + "a" * 2048, TOO_LONG),  # 2049 characters: one past the limit
    ],
)
def test_normalise_refuses(raw: str, reason: str) -> None:
    with pytest.raises(BadRequest) as refused:
        normalise_path(raw)
    assert str(refused.value) == reason


def test_normalise_accepts_a_path_of_exactly_the_limit() -> None:
    path = "/" + "a" * 2047
    assert normalise_path(path) == path


def test_split_target_drops_the_query() -> None:
    assert split_target("/latest/meta-data/?ip=1.2.3.4&x=/..") == (
        "/latest/meta-data/",
        "ip=1.2.3.4&x=/..",
    )
    assert split_target("/ping") == ("/ping", "")


@pytest.mark.parametrize(
    ("path", "kind", "role"),
    [
        ("/ping", RouteKind.PING, ""),
        ("/health", RouteKind.HEALTH, ""),
        ("/latest/api/token", RouteKind.TOKEN, ""),
        ("/2021-03-23/api/token", RouteKind.TOKEN, ""),
        ("/latest/api/token/x", RouteKind.PROXY, ""),  # deeper than the token route
        ("/latest/api/tokens", RouteKind.PROXY, ""),
        ("/api/token", RouteKind.PROXY, ""),
        ("/latest/meta-data/iam/security-credentials", RouteKind.ROLE_NAME_REDIRECT, ""),
        ("/latest/meta-data/iam/security-credentials/", RouteKind.ROLE_NAME, ""),
        ("/2016-09-02/meta-data/iam/security-credentials/", RouteKind.ROLE_NAME, ""),
        ("/latest/meta-data/iam/security-credentials/app", RouteKind.CREDENTIALS, "app"),
        ("/latest/meta-data/iam/security-credentials/app/", RouteKind.CREDENTIALS, "app"),
        # roles with a path, and full ARNs, as Go servers name them
        ("/latest/meta-data/iam/security-credentials/a/b", RouteKind.CREDENTIALS, "a/b"),
        ("/latest/meta-data/iam/security-credentials/kiam/pathrole/", RouteKind.CREDENTIALS,
         "kiam/pathrole"),
        (
            "/latest/meta-data/iam/security-credentials/arn:aws:iam::123456789012:role/p/x",
            RouteKind.CREDENTIALS,
            "arn:aws:iam::123456789012:role/p/x",
        ),
        ("/latest/meta-data/iam/security-credentials/a+b=c,d.e@f_g-h", RouteKind.CREDENTIALS,
         "a+b=c,d.e@f_g-h"),
        # characters IAM never uses in a role keep the subtree blocked
        ("/latest/meta-data/iam/security-credentials/a/b!", RouteKind.IAM_BLOCKED, ""),
        ("/latest/meta-data/iam/security-credentials/a~b", RouteKind.IAM_BLOCKED, ""),
        ("/latest/meta-data/iam/security-credentials/a$b", RouteKind.IAM_BLOCKED, ""),
        ("/latest/meta-data/iam/security-credentialsx", RouteKind.PROXY, ""),
        ("/latest/Meta-Data/iam/security-credentials/app", RouteKind.IAM_BLOCKED, ""),
        ("/latest/meta-data/IAM/Security-Credentials/", RouteKind.IAM_BLOCKED, ""),
        ("/latest/meta-data/iam/info", RouteKind.PROXY, ""),
        ("/latest/meta-data/instance-id", RouteKind.PROXY, ""),
        ("/ping/", RouteKind.PROXY, ""),
        ("/", RouteKind.PROXY, ""),
    ],
)
def test_classify(path: str, kind: RouteKind, role: str) -> None:
    route = classify(path)
    assert (route.kind, route.role, route.path) == (kind, role, path)


def test_blocked_iam_paths_count_as_proxy_in_metrics() -> None:
    assert classify("/latest/META-DATA/iam/security-credentials/x").handler == "proxy"
    assert classify("/latest/meta-data/iam/security-credentials").handler == "roleName"
    assert classify("/latest/meta-data/iam/security-credentials/").handler == "roleName"


def test_the_container_credentials_route_is_never_a_metadata_route() -> None:
    # it exists only on the token credentials listener (docs/token-credentials.md)
    route = Route(RouteKind.CONTAINER_CREDENTIALS, "/v1/credentials")
    assert route.handler == "containerCredentials"
    assert classify("/v1/credentials").kind is RouteKind.PROXY


ORDINARY_PATHS = (
    "/",
    "/latest/",
    "/latest/meta-data/",
    "/latest/meta-data/instance-id",
    "/latest/meta-data/placement/availability-zone",
    "/latest/user-data",
    "/latest/dynamic/instance-identity/document",
    "/2016-09-02/meta-data/local-ipv4",
    "/latest/meta-data/iam/info",
)


@pytest.mark.parametrize("default", ["^$", ""])
@pytest.mark.parametrize("path", ORDINARY_PATHS)
def test_allow_list_default_allows_nothing(default: str, path: str) -> None:
    assert not AllowList.from_regexp(default).permits(path)


def test_allow_list_keeps_the_operator_expression_for_messages() -> None:
    assert AllowList.from_regexp("").expression == ""
    assert AllowList.from_regexp("^$").expression == "^$"
    assert AllowList.from_regexp("").pattern is None
    assert AllowList.from_regexp("^/latest/user-data$").expression == "^/latest/user-data$"


def test_allow_list_permits_what_its_expression_matches() -> None:
    everything = AllowList.from_regexp(".*")
    assert all(everything.permits(path) for path in ORDINARY_PATHS)


def test_allow_list_is_searched_in_the_whole_path_as_go_kiam_did() -> None:
    kiam_doc = AllowList.from_regexp("^/latest/meta-data/placement/availability-zone$")
    assert kiam_doc.permits("/latest/meta-data/placement/availability-zone")
    assert not kiam_doc.permits("/latest/meta-data/placement/availability-zone/x")
    unanchored = AllowList.from_regexp("instance-id")
    assert unanchored.permits("/latest/meta-data/instance-id")
    assert not unanchored.permits("/latest/meta-data/Instance-Id")
