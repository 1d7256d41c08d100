"""The pure part of token credentials on the agent (kiam/agent/token_answers.py): the
header, the container JSON, and how long an answer is kept (docs/token-credentials.md,
"On the agent")."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest

from kiam.agent.errors import BadRequest
from kiam.agent.token_answers import (
    CAPACITY,
    MAX_TOKEN,
    TokenAnswer,
    TokenAnswers,
    account_of,
    answer_of,
    container_document,
    digest,
    token_expiry,
    token_from_header,
)
from kiam.wire import kiam_pb2

EXPIRATION = "2026-12-02T21:00:00Z"
EXPIRES_AT = 1796245200.0  # EXPIRATION as seconds since the epoch


def _jwt(claims: object) -> str:
    payload = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return f"eyJhbGciOiJFUzI1NiJ9.{payload}.c2ln"


ROLE_ARN = "arn:aws:iam::123456789012:role/team-tools"


def _reply(*, expiration: str = EXPIRATION, role_arn: str = ROLE_ARN
           ) -> kiam_pb2.TokenCredentials:
    return kiam_pb2.TokenCredentials(
        credentials=kiam_pb2.Credentials(
            access_key_id="ASIAKEY", secret_access_key="secret", token="session",
            expiration=expiration),
        role_arn=role_arn, pod_namespace="team", pod_name="tools")


def _answer(fresh_until: float, key_id: str = "ASIAKEY") -> TokenAnswer:
    return TokenAnswer(body=b"{}", access_key_id=key_id, role_arn="r", pod="ns/p",
                       fresh_until=fresh_until)


# ------------------------------------------------------------------ the header


@pytest.mark.parametrize("value", ["a.b.c", " a.b.c ", "eyJ-_0.eyJ_-1.sig-_", "A.B.C"])
def test_a_jwt_shaped_header_is_the_token(value: str) -> None:
    assert token_from_header(value) == value.strip()


MISSING = ("missing Authorization header: send the pod's service-account token "
           "(AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)")
EMPTY = "empty Authorization header: the token file is empty"
NOT_A_JWT = ("Authorization header is not a service-account token (a JWT: three base64url "
             "parts joined by dots, no scheme such as 'Bearer')")


@pytest.mark.parametrize(("value", "message"), [
    (None, MISSING), ("", EMPTY), ("junk", NOT_A_JWT), ("Bearer a.b.c", NOT_A_JWT)])
def test_the_reasons_in_full(value: str | None, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        token_from_header(value)
    assert str(info.value) == message


@pytest.mark.parametrize(("value", "reason"), [
    (None, "missing Authorization header"),
    ("", "empty Authorization header"),
    ("   ", "empty Authorization header"),
    ("junk", "not a service-account token"),
    ("Bearer a.b.c", "not a service-account token"),
    ("a.b", "not a service-account token"),
    ("a.b.", "not a service-account token"),
    (".b.c", "not a service-account token"),
    ("a..c", "not a service-account token"),
    ("a.b.c.d", "not a service-account token"),
    ("a.b.c\n", None),
    ("a.b+c.d", "not a service-account token"),
    ("a.b=.c", "not a service-account token"),
    ("á.b.c", "not a service-account token"),
])
def test_anything_else_is_a_bad_request(value: str | None, reason: str | None) -> None:
    if reason is None:  # surrounding whitespace is not part of the token
        assert token_from_header(value) == "a.b.c"
        return
    with pytest.raises(BadRequest) as info:
        token_from_header(value)
    assert reason in str(info.value)
    assert info.value.status == 400


def test_the_longest_token_is_taken_and_one_more_character_is_not() -> None:
    longest = "a." + "b" * (MAX_TOKEN - 4) + ".c"
    assert len(longest) == MAX_TOKEN
    assert token_from_header(longest) == longest
    with pytest.raises(BadRequest, match=f"over {MAX_TOKEN} characters"):
        token_from_header(longest[:-1] + "cc")


# ------------------------------------------------------------------ the document


def test_the_container_document_has_exactly_the_sdks_fields() -> None:
    document = orjson.loads(container_document(_reply(expiration="2026-12-02T22:00:00+01:00")))
    assert document == {"AccessKeyId": "ASIAKEY", "SecretAccessKey": "secret",
                        "Token": "session", "AccountId": "123456789012",
                        "Expiration": EXPIRATION}


@pytest.mark.parametrize(("arn", "account"), [
    ("arn:aws:iam::123456789012:role/a", "123456789012"),
    ("arn:aws-cn:iam::210987654321:role/path/a", "210987654321"),
    ("arn:aws:iam::12345678901:role/a", ""),
    ("arn:aws:iam::1234567890123:role/a", ""),
    ("arn:aws:iam::123456789012:user/a", ""),
    ("arn:aws:iam::123456789012:role/", ""),
    ("xarn:aws:iam::123456789012:role/a", ""),
    ("", ""),
])
def test_the_account_is_read_off_the_role_arn(arn: str, account: str) -> None:
    assert account_of(arn) == account


def test_an_unreadable_expiration_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        container_document(_reply(expiration="soon"))


# ------------------------------------------------------------------ how long it is kept


@pytest.mark.parametrize(("claims", "expected"), [
    ({"exp": 1700000000}, 1700000000.0),
    ({"exp": 1700000000.5}, 1700000000.5),
    ({"exp": True}, None),
    ({"exp": "1700000000"}, None),
    ({"iat": 1}, None),
    ([1, 2], None),
])
def test_the_tokens_expiry_is_its_exp_claim(claims: object, expected: float | None) -> None:
    assert token_expiry(_jwt(claims)) == expected


@pytest.mark.parametrize("filler", range(20))
def test_the_expiry_is_read_whatever_padding_the_payload_lost(filler: int) -> None:
    # base64url payloads of every length modulo 4 (and 5) once their "=" are stripped
    assert token_expiry(_jwt({"exp": 1700000000, "x": "y" * filler})) == 1700000000.0


@pytest.mark.parametrize("payload", ["!!!", "bm90IGpzb24", "a"])
def test_an_unreadable_payload_has_no_expiry(payload: str) -> None:
    assert token_expiry(f"h.{payload}.s") is None


def test_an_answer_is_fresh_until_refresh_time_or_the_tokens_expiry() -> None:
    late = answer_of(_reply(), token=_jwt({"exp": EXPIRES_AT + 10}), session_refresh=300)
    assert late.fresh_until == EXPIRES_AT - 300
    early = answer_of(_reply(), token=_jwt({"exp": EXPIRES_AT - 1000}), session_refresh=300)
    assert early.fresh_until == EXPIRES_AT - 1000
    unknown = answer_of(_reply(), token="a.b.c", session_refresh=60)
    assert unknown.fresh_until == EXPIRES_AT - 60
    assert (late.access_key_id, late.role_arn, late.pod) == (
        "ASIAKEY", "arn:aws:iam::123456789012:role/team-tools", "team/tools")
    assert late.body == container_document(_reply())


def test_answers_are_kept_until_their_time() -> None:
    answers = TokenAnswers()
    answers.put(b"k", _answer(100.0), wall=10.0)
    assert answers.get(b"k", wall=99.9) == _answer(100.0)
    assert len(answers) == 1
    assert answers.get(b"k", wall=100.0) is None
    assert len(answers) == 0, "an answer past its time is forgotten"
    assert answers.get(b"other", wall=0.0) is None


def test_an_answer_already_stale_is_not_kept() -> None:
    answers = TokenAnswers()
    answers.put(b"k", _answer(100.0), wall=100.0)
    assert len(answers) == 0
    answers.put(b"k", _answer(100.0), wall=99.0)
    assert len(answers) == 1


def test_past_capacity_the_least_recently_used_goes() -> None:
    answers = TokenAnswers(capacity=2)
    answers.put(b"a", _answer(100.0, "A"), wall=0.0)
    answers.put(b"b", _answer(100.0, "B"), wall=0.0)
    assert answers.get(b"a", wall=1.0) is not None  # a is now the most recent
    answers.put(b"c", _answer(100.0, "C"), wall=0.0)
    assert answers.get(b"b", wall=1.0) is None
    assert answers.get(b"a", wall=1.0) is not None
    assert answers.get(b"c", wall=1.0) is not None
    answers.put(b"a", _answer(100.0, "A2"), wall=0.0)  # replacing one makes it the newest
    answers.put(b"d", _answer(100.0, "D"), wall=0.0)
    assert answers.get(b"c", wall=1.0) is None
    found = answers.get(b"a", wall=1.0)
    assert found is not None and found.access_key_id == "A2"
    assert len(answers) == 2


def test_the_default_capacity() -> None:
    answers = TokenAnswers()
    assert answers.capacity == CAPACITY == 4096


def test_purge_forgets_only_the_stale() -> None:
    answers = TokenAnswers()
    answers.put(b"old", _answer(50.0), wall=0.0)
    answers.put(b"new", _answer(150.0), wall=0.0)
    answers.put(b"edge", _answer(100.0), wall=0.0)
    answers.purge(wall=100.0)
    assert len(answers) == 1
    assert answers.get(b"new", wall=100.0) is not None


def test_the_key_is_the_sha256_digest_of_the_token() -> None:
    assert digest("a.b.c") == hashlib.sha256(b"a.b.c").digest()
    assert digest("a.b.c") != digest("a.b.d")
