from __future__ import annotations

import pytest

from kiam.aws.arn import (
    InvalidRoleArn,
    StsEndpoint,
    base_arn_from_instance_profile,
    partition_of_region,
    resolve_role_arn,
    role_name,
    sts_endpoint,
    validate_base_arn,
)

BASE = "arn:aws:iam::123456789012:role/"


@pytest.mark.parametrize(
    ("annotation", "base", "expected"),
    [
        ("reader", BASE, "arn:aws:iam::123456789012:role/reader"),
        ("/reader", BASE, "arn:aws:iam::123456789012:role/reader"),
        ("team/reader", BASE, "arn:aws:iam::123456789012:role/team/reader"),
        ("/team/a/reader", BASE, "arn:aws:iam::123456789012:role/team/a/reader"),
        ("reader", BASE.rstrip("/"), "arn:aws:iam::123456789012:role/reader"),
        (
            "reader",
            "arn:aws:iam::123456789012:role/base/",
            "arn:aws:iam::123456789012:role/base/reader",
        ),
        ("arn:aws:iam::999999999999:role/other", BASE, "arn:aws:iam::999999999999:role/other"),
        ("arn:aws-cn:iam::999999999999:role/p/x", BASE, "arn:aws-cn:iam::999999999999:role/p/x"),
        (
            "arn:aws-us-gov:iam::999999999999:role/x",
            BASE,
            "arn:aws-us-gov:iam::999999999999:role/x",
        ),
        ("arn:aws-iso-b:iam::999999999999:role/x", BASE, "arn:aws-iso-b:iam::999999999999:role/x"),
        ("arn:aws:iam::999999999999:role/x", "", "arn:aws:iam::999999999999:role/x"),
        ("a+b=c,d.e@f-g_h", BASE, "arn:aws:iam::123456789012:role/a+b=c,d.e@f-g_h"),
        (" reader\n", BASE, "arn:aws:iam::123456789012:role/reader"),
    ],
)
def test_resolve(annotation: str, base: str, expected: str) -> None:
    assert resolve_role_arn(annotation, base) == expected


@pytest.mark.parametrize(
    ("annotation", "base"),
    [
        ("", BASE),
        ("  ", BASE),
        ("reader", ""),
        ("reader", "arn:aws:iam::123456789012:user/"),
        ("reader", "arn:aws:iam::12345:role/"),
        ("with space", BASE),
        ("trailing/", BASE),
        ("a//b", BASE),
        ("bad*char", BASE),
        ("x" * 65, BASE),
        ("arn:aws:iam::123456789012:user/bob", BASE),
        ("arn:aws:s3:::bucket", BASE),
        ("arn:aws:iam::123456789012:role/", BASE),
        ("arn:notapartition:iam::123456789012:role/x", BASE),
        ("arn:aws:iam::123456789012:role/x\ny", ""),
        ("reader\nx", BASE),
    ],
)
def test_resolve_rejects_garbage(annotation: str, base: str) -> None:
    with pytest.raises(InvalidRoleArn):
        resolve_role_arn(annotation, base)


def test_invalid_role_arn_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a role ARN"):
        resolve_role_arn("a b", BASE)


@pytest.mark.parametrize(
    ("arn", "name"),
    [
        ("arn:aws:iam::123456789012:role/reader", "reader"),
        ("arn:aws:iam::123456789012:role/team/a/reader", "reader"),
    ],
)
def test_role_name(arn: str, name: str) -> None:
    assert role_name(arn) == name


@pytest.mark.parametrize(
    ("profile", "base"),
    [
        ("arn:aws:iam::123456789012:instance-profile/x", "arn:aws:iam::123456789012:role/"),
        ("arn:aws:iam::123456789012:instance-profile/p/q/x", "arn:aws:iam::123456789012:role/"),
        ("arn:aws-cn:iam::123456789012:instance-profile/x", "arn:aws-cn:iam::123456789012:role/"),
    ],
)
def test_base_arn_from_instance_profile(profile: str, base: str) -> None:
    assert base_arn_from_instance_profile(profile) == base


@pytest.mark.parametrize(
    "profile", ["", "arn:aws:iam::123456789012:role/x", "arn:aws:iam::1:instance-profile/x"]
)
def test_base_arn_from_instance_profile_rejects(profile: str) -> None:
    with pytest.raises(InvalidRoleArn):
        base_arn_from_instance_profile(profile)


@pytest.mark.parametrize(
    ("region", "partition", "host"),
    [
        ("us-east-1", "aws", "sts.us-east-1.amazonaws.com"),
        ("eu-west-2", "aws", "sts.eu-west-2.amazonaws.com"),
        ("cn-north-1", "aws-cn", "sts.cn-north-1.amazonaws.com.cn"),
        ("cn-northwest-1", "aws-cn", "sts.cn-northwest-1.amazonaws.com.cn"),
        ("us-gov-west-1", "aws-us-gov", "sts.us-gov-west-1.amazonaws.com"),
        ("us-iso-east-1", "aws-iso", "sts.us-iso-east-1.c2s.ic.gov"),
        ("us-isob-east-1", "aws-iso-b", "sts.us-isob-east-1.sc2s.sgov.gov"),
        ("eusc-de-east-1", "aws-eusc", "sts.eusc-de-east-1.amazonaws.eu"),
    ],
)
def test_partitions_and_sts_hosts(region: str, partition: str, host: str) -> None:
    assert partition_of_region(region) == partition
    assert sts_endpoint(region).host == host
    assert sts_endpoint(region).signing_region == region


@pytest.mark.parametrize(
    ("region", "host", "signing_region"),
    [
        # as Go Kiam's resolver (TestUseDefaultForFIPS) and AWS's endpoint table give them
        ("us-east-1-fips", "sts-fips.us-east-1.amazonaws.com", "us-east-1"),
        ("us-east-2-fips", "sts-fips.us-east-2.amazonaws.com", "us-east-2"),
        ("us-west-1-fips", "sts-fips.us-west-1.amazonaws.com", "us-west-1"),
        ("us-west-2-fips", "sts-fips.us-west-2.amazonaws.com", "us-west-2"),
        ("us-gov-east-1-fips", "sts.us-gov-east-1.amazonaws.com", "us-gov-east-1"),
        ("us-gov-west-1-fips", "sts.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
    ],
)
def test_fips_regions(region: str, host: str, signing_region: str) -> None:
    assert sts_endpoint(region) == StsEndpoint(host=host, signing_region=signing_region)
    assert sts_endpoint(region).url == f"https://{host}"


@pytest.mark.parametrize(
    "region",
    ["", "us-east", "https://evil.example/", "US-EAST-1", "us-east-1\n", "eu-west-1-fips",
     "fips-us-east-1", "us-east-1-fips\n", "abcde-east-1"],
)
def test_sts_endpoint_rejects_bad_regions(region: str) -> None:
    with pytest.raises(ValueError) as refused:
        sts_endpoint(region)
    assert str(refused.value) == (
        f"invalid AWS region {region!r}: expected a region such as eu-west-1, or one of the "
        "FIPS regions us-east-1-fips, us-east-2-fips, us-west-1-fips, us-west-2-fips, "
        "us-gov-east-1-fips, us-gov-west-1-fips"
    )


def test_sts_endpoint_url_is_https_on_the_regional_host() -> None:
    assert sts_endpoint("eu-west-2").url == "https://sts.eu-west-2.amazonaws.com"


# Non-ASCII letters and digits are \w and \d to Python's re without re.ASCII; IAM allows
# neither, and an ARN that is not what IAM would parse must never be accepted.
NON_ASCII_DIGITS = "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662"


@pytest.mark.parametrize(
    ("annotation", "base"),
    [
        ("r\u00f4le", BASE),
        ("arn:aws:iam::123456789012:role/r\u00f4le", ""),
        (f"arn:aws:iam::{NON_ASCII_DIGITS}:role/x", ""),
        ("x", f"arn:aws:iam::{NON_ASCII_DIGITS}:role/"),
        ("x", "arn:aws:iam::123456789012:role/p\u00e4th/"),
    ],
)
def test_non_ascii_never_makes_a_valid_arn(annotation: str, base: str) -> None:
    with pytest.raises(InvalidRoleArn):
        resolve_role_arn(annotation, base)


def test_non_ascii_instance_profile_is_refused() -> None:
    with pytest.raises(InvalidRoleArn):
        base_arn_from_instance_profile(f"arn:aws:iam::{NON_ASCII_DIGITS}:instance-profile/x")


@pytest.mark.parametrize(
    ("annotation", "base", "message"),
    [
        ("", BASE, "empty role annotation"),
        (" ", BASE, "empty role annotation"),
        ("arn:aws:iam::1:role/x", BASE, "invalid role ARN 'arn:aws:iam::1:role/x'"),
        ("a b", BASE, f"invalid role 'a b': '{BASE}a b' is not a role ARN"),
        (
            "x",
            "arn:aws:iam::1:role/",
            "invalid base role ARN 'arn:aws:iam::1:role/': "
            "expected arn:<partition>:iam::<12-digit account>:role/",
        ),
    ],
)
def test_resolve_says_why(annotation: str, base: str, message: str) -> None:
    with pytest.raises(InvalidRoleArn) as refused:
        resolve_role_arn(annotation, base)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        (BASE, BASE),
        (BASE.rstrip("/"), BASE),
        ("arn:aws:iam::123456789012:role/team/a/", "arn:aws:iam::123456789012:role/team/a/"),
        ("arn:aws:iam::123456789012:role/team", "arn:aws:iam::123456789012:role/team/"),
        ("arn:aws-eusc:iam::123456789012:role/", "arn:aws-eusc:iam::123456789012:role/"),
    ],
)
def test_validate_base_arn(base: str, expected: str) -> None:
    assert validate_base_arn(base) == expected


@pytest.mark.parametrize(
    "base",
    [
        "",
        "arn:aws:iam::123456789012:user/",
        "arn:aws:iam::12345678901:role/",
        "arn:aws:iam::123456789012:role//",
        "arn:aws:iam::123456789012:role/with space/",
        "arn:other:iam::123456789012:role/",
        " arn:aws:iam::123456789012:role/",
    ],
)
def test_validate_base_arn_refuses(base: str) -> None:
    with pytest.raises(InvalidRoleArn) as refused:
        validate_base_arn(base)
    assert str(refused.value) == (
        f"invalid base role ARN {base!r}: expected arn:<partition>:iam::<12-digit account>:role/"
    )


def test_instance_profile_refusal_names_the_input() -> None:
    with pytest.raises(InvalidRoleArn) as refused:
        base_arn_from_instance_profile("arn:aws:iam::123456789012:role/x")
    assert str(refused.value) == "not an instance profile ARN: 'arn:aws:iam::123456789012:role/x'"


def test_role_name_of_a_bare_name_is_itself() -> None:
    assert role_name("reader") == "reader"
