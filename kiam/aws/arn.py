"""Role ARNs: resolving the pod annotation against the base ARN; AWS partitions and the
region table (which STS host a ``--region`` means).

Pure functions, no I/O. A role annotation is either a full role ARN (of any account and
any partition, kept as it is) or a name relative to ``--role-base-arn``: ``name``,
``/name`` or ``path/name``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NewType

RoleArn = NewType("RoleArn", str)
"""A validated IAM role ARN: ``arn:<partition>:iam::<account>:role/<path/>name``."""


class InvalidRoleArn(ValueError):
    """An annotation or base ARN that cannot make a valid role ARN."""


_PARTITION = r"aws|aws-cn|aws-us-gov|aws-iso(?:-[a-z])?|aws-eusc"
# IAM allows path segments and names of [\w+=,.@-]; names are at most 64 characters.
_ROLE_ARN = re.compile(
    rf"^arn:(?P<partition>{_PARTITION}):iam::(?P<account>\d{{12}}):role/"
    r"(?P<path>(?:[\w+=,.@-]+/)*)(?P<name>[\w+=,.@-]{1,64})$",
    re.ASCII,
)
_BASE_ARN = re.compile(
    rf"^arn:(?:{_PARTITION}):iam::\d{{12}}:role/(?:[\w+=,.@-]+/)*$",
    re.ASCII,
)
_INSTANCE_PROFILE = re.compile(
    rf"^arn:(?P<partition>{_PARTITION}):iam::(?P<account>\d{{12}}):instance-profile/.+$",
    re.ASCII,
)


def is_role_arn(text: str) -> bool:
    """True when ``text`` is a syntactically valid role ARN."""
    return _ROLE_ARN.fullmatch(text) is not None


def validate_base_arn(base_arn: str) -> str:
    """Return the base ARN with a trailing ``/`` (added when missing); raise InvalidRoleArn."""
    base = base_arn if base_arn.endswith("/") else base_arn + "/"
    if _BASE_ARN.fullmatch(base) is None:
        raise InvalidRoleArn(
            f"invalid base role ARN {base_arn!r}: "
            "expected arn:<partition>:iam::<12-digit account>:role/"
        )
    return base


def resolve_role_arn(annotation: str, base_arn: str) -> RoleArn:
    """Resolve a pod's ``iam.amazonaws.com/role`` annotation to a full role ARN.

    A full ARN is kept (any account or partition); otherwise one leading ``/`` is dropped
    and the rest appended to ``base_arn``. Raises InvalidRoleArn (a ValueError) for an
    annotation that does not make a valid role ARN.
    """
    value = annotation.strip()
    if not value:
        raise InvalidRoleArn("empty role annotation")
    if value.startswith("arn:"):
        if not is_role_arn(value):
            raise InvalidRoleArn(f"invalid role ARN {annotation!r}")
        return RoleArn(value)
    relative = value.removeprefix("/")
    candidate = validate_base_arn(base_arn) + relative
    if not is_role_arn(candidate):
        raise InvalidRoleArn(f"invalid role {annotation!r}: {candidate!r} is not a role ARN")
    return RoleArn(candidate)


def role_name(arn: str) -> str:
    """The last path segment of a role ARN: the name IMDS lists under security-credentials."""
    return arn.rpartition("/")[2]


def base_arn_from_instance_profile(arn: str) -> str:
    """``arn:aws:iam::123456789012:instance-profile/x`` -> ``arn:aws:iam::123456789012:role/``."""
    match = _INSTANCE_PROFILE.fullmatch(arn.strip())
    if match is None:
        raise InvalidRoleArn(f"not an instance profile ARN: {arn!r}")
    return f"arn:{match['partition']}:iam::{match['account']}:role/"


def partition_of_region(region: str) -> str:
    """The AWS partition a region belongs to."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    if region.startswith("us-isob-"):
        return "aws-iso-b"
    if region.startswith("us-iso-"):
        return "aws-iso"
    if region.startswith("eusc-"):
        return "aws-eusc"
    return "aws"


_DNS_SUFFIX = {
    "aws": "amazonaws.com",
    "aws-cn": "amazonaws.com.cn",
    "aws-us-gov": "amazonaws.com",
    "aws-iso": "c2s.ic.gov",
    "aws-iso-b": "sc2s.sgov.gov",
    "aws-eusc": "amazonaws.eu",
}
_REGION = re.compile(r"^(?:[a-z]{2}|eusc)(?:-[a-z]+)+-\d+$", re.ASCII)
# The FIPS pseudo-regions of AWS's endpoint table for STS (botocore's endpoints.json, the
# table Go Kiam's resolver reads for any region containing "fips"): each names a host and
# the region that signs for it. In GovCloud the regular STS endpoint is the FIPS one.
_FIPS_ENDPOINTS = {
    "us-east-1-fips": "sts-fips.us-east-1.amazonaws.com",
    "us-east-2-fips": "sts-fips.us-east-2.amazonaws.com",
    "us-west-1-fips": "sts-fips.us-west-1.amazonaws.com",
    "us-west-2-fips": "sts-fips.us-west-2.amazonaws.com",
    "us-gov-east-1-fips": "sts.us-gov-east-1.amazonaws.com",
    "us-gov-west-1-fips": "sts.us-gov-west-1.amazonaws.com",
}


@dataclass(frozen=True, slots=True)
class StsEndpoint:
    """Where ``--region`` sends AssumeRole, and the region that signs the calls."""

    host: str
    signing_region: str

    @property
    def url(self) -> str:
        return f"https://{self.host}"


def sts_endpoint(region: str) -> StsEndpoint:
    """The STS endpoint of ``region`` (see docs/MIGRATING.md for the forms Go Kiam took).

    A regular region gets its partition's regional endpoint, e.g.
    ``sts.cn-north-1.amazonaws.com.cn``; a FIPS region (``us-east-1-fips``) the FIPS host
    AWS's endpoint table names. Raises ValueError for anything else.
    """
    if fips_host := _FIPS_ENDPOINTS.get(region):
        return StsEndpoint(host=fips_host, signing_region=region.removesuffix("-fips"))
    if _REGION.fullmatch(region) is None:
        fips = ", ".join(_FIPS_ENDPOINTS)
        raise ValueError(
            f"invalid AWS region {region!r}: expected a region such as eu-west-1, "
            f"or one of the FIPS regions {fips}"
        )
    suffix = _DNS_SUFFIX[partition_of_region(region)]
    return StsEndpoint(host=f"sts.{region}.{suffix}", signing_region=region)
