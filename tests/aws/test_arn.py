from __future__ import annotations

import pytest

from kiam.aws.arn import (
    InvalidRoleArn,
    base_arn_from_instance_profile,
    partition_of_region,
    resolve_role_arn,
    role_name,
    sts_endpoint_host,
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
    ],
)
def test_partitions_and_sts_hosts(region: str, partition: str, host: str) -> None:
    assert partition_of_region(region) == partition
    assert sts_endpoint_host(region) == host


@pytest.mark.parametrize(
    "region", ["", "us-east", "https://evil.example/", "US-EAST-1", "us-east-1\n"]
)
def test_sts_endpoint_host_rejects_bad_regions(region: str) -> None:
    with pytest.raises(ValueError, match="invalid AWS region"):
        sts_endpoint_host(region)
