"""Fuzzing the agent's pure input handling (hypothesis): whatever a pod sends, the
answer is a decision or a clear refusal, never an exception, and no spelling reaches
the proxy or the credentials routes other than the canonical one."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kiam.agent.errors import BadRequest
from kiam.agent.imdsv2 import MAX_TTL, MIN_TTL, parse_ttl
from kiam.agent.paths import AllowList, RouteKind, classify, normalise_path
from kiam.agent.token_answers import token_expiry, token_from_header
from tests.fuzzing import fuzz

pytestmark = pytest.mark.fuzz

FUZZ = fuzz(500)

# pieces of IMDS paths and of the usual smuggling tricks, glued at random
pieces = st.sampled_from(
    ["/", "//", ".", "..", "latest", "meta-data", "iam", "security-credentials", "api",
     "token", "instance-id", "role", "%2e", "%2f", "%25", "%41", "%", "?", "#", "\\",
     "%00", "%c3%a9", "~", "Security-Credentials", ":", "@", "a"]
)
raw_paths = st.one_of(
    st.lists(pieces, max_size=12).map("".join).map(lambda p: "/" + p),
    st.text(max_size=60),
)

CANONICAL_CREDENTIALS = re.compile(
    r"/[^/]+/meta-data/iam/security-credentials/(?:[A-Za-z0-9+=,.@_:-]+/)*"
    r"[A-Za-z0-9+=,.@_:-]+/?"
)


def _normalised(raw: str) -> str | None:
    try:
        return normalise_path(raw)
    except BadRequest:
        return None


@FUZZ
@given(raw=raw_paths)
@example(raw="/latest/meta-data/iam/security-credentials/../security-credentials/x")
def test_normalising_is_idempotent_and_leaves_no_trick(raw: str) -> None:
    path = _normalised(raw)
    if path is None:
        return
    assert normalise_path(path) == path
    assert path.startswith("/")
    assert "//" not in path and "%" not in path and "?" not in path and "#" not in path
    assert all(part not in (".", "..") for part in path.split("/"))


@FUZZ
@given(raw=raw_paths)
def test_credentials_are_reached_only_by_the_canonical_spelling(raw: str) -> None:
    path = _normalised(raw)
    if path is None:
        return
    route = classify(path)
    if route.kind is RouteKind.CREDENTIALS:
        assert CANONICAL_CREDENTIALS.fullmatch(path), path
        assert route.role and route.path == path
    if re.search("security-credentials", path, re.IGNORECASE) and route.kind is RouteKind.PROXY:
        # only a look-alike such as ".../security-credentialsx" may be proxied
        assert not re.search(r"/meta-data/iam/security-credentials(/|$)", path, re.IGNORECASE)


@FUZZ
@given(raw=raw_paths)
def test_the_proxy_forwards_only_what_the_allow_list_matches(raw: str) -> None:
    allow = AllowList.from_regexp("^/latest/meta-data/instance-id$")
    path = _normalised(raw)
    if path is None:
        return
    route = classify(path)
    if route.kind is RouteKind.PROXY and allow.permits(route.path):
        assert route.path == "/latest/meta-data/instance-id"


@FUZZ
@given(value=st.one_of(st.none(), st.text(max_size=12)))
@example(value="\u00b2")  # "²" is a digit to str.isdigit() but not to int()
@example(value="\u0661\u0662")  # Arabic-Indic digits
def test_ttl_parsing_is_a_number_in_range_or_bad_request(value: str | None) -> None:
    try:
        ttl = parse_ttl(value)
    except BadRequest:
        assert value is None or not value.strip().isascii() or not (
            value.strip().isdigit() and MIN_TTL <= int(value.strip()) <= MAX_TTL
        )
        return
    assert MIN_TTL <= ttl <= MAX_TTL
    assert value is not None and value.strip() == str(ttl).rjust(len(value.strip()), "0")


@pytest.mark.parametrize("value", ["\u00b2", "\u0661\u0662", "\uff16\uff10"])
def test_non_ascii_digits_are_a_bad_ttl(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_ttl(value)


jwt_pieces = st.sampled_from(["a", "B", "0", "-", "_", ".", " ", "=", "+", "/", "\u00e9",
                              "Bearer ", "\t", "eyJ", "\x00"])
headers = st.one_of(st.none(), st.text(max_size=40),
                    st.lists(jwt_pieces, max_size=20).map("".join))


@FUZZ
@given(value=headers)
@example(value="a.b.c")
def test_a_token_header_is_a_token_or_a_clear_400(value: str | None) -> None:
    # docs/token-credentials.md, "On the agent": never any other exception
    try:
        token = token_from_header(value)
    except BadRequest as exc:
        assert exc.status == 400 and "\n" not in str(exc)
        return
    assert value is not None and token == value.strip()
    parts = token.split(".")
    assert len(parts) == 3 and all(re.fullmatch(r"[A-Za-z0-9_-]+", p) for p in parts)
    expiry = token_expiry(token)  # readable or None, never an exception
    assert expiry is None or isinstance(expiry, float)
