"""Run inside a test pod: boto3's default credential chain, then STS GetCallerIdentity.

    python -m kiam_testbed.sdk_clients.boto3_caller http://10.1.2.1:PORT

The chain ends at the instance metadata service (IMDSv2 token PUT first, then the role,
then the credentials), which the node's DNAT rule sends to ``kiam agent``. Prints one
JSON line (see :func:`kiam_testbed.sdk_clients.parse_result`); never the secret or token.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def call(endpoint: str) -> dict[str, Any]:
    import boto3  # type: ignore[import-untyped]
    import botocore.exceptions

    session = boto3.session.Session(region_name="us-east-1")
    try:
        creds = session.get_credentials()
        if creds is None:
            return {"ok": False, "error": "NoCredentials: the default chain found none"}
        frozen = creds.get_frozen_credentials()
        sts = session.client("sts", endpoint_url=endpoint)
        identity = sts.get_caller_identity()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "ok": True,
        "access_key_id": frozen.access_key,
        "arn": identity["Arn"],
        "method": creds.method,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: boto3_caller STS_ENDPOINT_URL", file=sys.stderr)
        return 2
    result = call(argv[0])
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
