"""Path normalisation and routing: pure functions, no sockets."""

from __future__ import annotations

import pytest

from kiam.agent.errors import BadRequest
from kiam.agent.paths import AllowList, RouteKind, classify, normalise_path, split_target


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


@pytest.mark.parametrize(
    "raw",
    [
        "latest/meta-data",  # not absolute
        "/latest/meta-data/%2e%2e/iam",  # encoded dots
        "/latest/meta-data/%2E%2E/iam",
        "/latest%2fmeta-data",  # encoded slash
        "/latest%2Fmeta-data",
        "/latest/%5c..%5ciam",  # encoded backslash
        "/latest/meta-data/%00",
        "/latest/meta-data/%252e%252e/iam",  # double encoding
        "/latest/meta-data/%3f",  # '?' after decoding
        "/latest/meta-data/%23",  # '#'
        "/latest/meta-data/%20x",  # space
        "/latest/meta-data/%c3%a9",  # non-ASCII
        "/latest/meta-data/%zz",  # malformed escape
        "/latest/meta-data/%4",
        "/latest\\..\\iam",
        "/..",  # above the root
        "/latest/../../etc",
        "/" + "a" * 3000,
    ],
)
def test_normalise_refuses(raw: str) -> None:
    with pytest.raises(BadRequest):
        normalise_path(raw)


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
        ("/latest/meta-data/iam/security-credentials", RouteKind.ROLE_NAME, ""),
        ("/latest/meta-data/iam/security-credentials/", RouteKind.ROLE_NAME, ""),
        ("/2016-09-02/meta-data/iam/security-credentials/", RouteKind.ROLE_NAME, ""),
        ("/latest/meta-data/iam/security-credentials/app", RouteKind.CREDENTIALS, "app"),
        ("/latest/meta-data/iam/security-credentials/app/", RouteKind.CREDENTIALS, "app"),
        ("/latest/meta-data/iam/security-credentials/a/b", RouteKind.IAM_BLOCKED, ""),
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
    assert classify("/latest/meta-data/iam/security-credentials/").handler == "roleName"


def test_allow_list_default_allows_nothing() -> None:
    allow = AllowList.from_regexp("^$")
    assert not allow.permits("/")
    assert not allow.permits("/latest/meta-data/instance-id")
    assert not AllowList.from_regexp("").permits("/latest/meta-data/instance-id")


def test_allow_list_is_searched_in_the_whole_path_as_go_kiam_did() -> None:
    kiam_doc = AllowList.from_regexp("^/latest/meta-data/placement/availability-zone$")
    assert kiam_doc.permits("/latest/meta-data/placement/availability-zone")
    assert not kiam_doc.permits("/latest/meta-data/placement/availability-zone/x")
    unanchored = AllowList.from_regexp("instance-id")
    assert unanchored.permits("/latest/meta-data/instance-id")
    assert not unanchored.permits("/latest/meta-data/Instance-Id")
