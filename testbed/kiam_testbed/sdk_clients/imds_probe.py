"""Run inside a test pod: talk to the metadata service by hand, as IMDSv1 or IMDSv2.

    python -m kiam_testbed.sdk_clients.imds_probe v1|v2 [URL [ROLE]]

v1 sends plain GETs; v2 first PUTs ``/latest/api/token`` and sends the token on every
GET. Prints one JSON line: the status of each step, the role listed, and the access key
id of the credentials (never the secret or token). With ROLE, the credentials asked for
are ROLE's instead of the listed role's (what a pod trying another pod's role would do).

``kiam demo`` calls :func:`probe` in its own process for pods that are loopback
addresses (``source=``: the pod's address, which the agent tells pods apart by); only
there does the result carry the credentials document itself.
"""

from __future__ import annotations

import functools
import http.client
import json
import sys
import urllib.parse
from typing import Any

DEFAULT_URL = "http://169.254.169.254"
_TIMEOUT = 5.0
_PATH = "/latest/meta-data/iam/security-credentials/"


def _request(method: str, url: str, headers: dict[str, str], *, source: str) -> tuple[int, str]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname or "", parts.port or 80, timeout=_TIMEOUT,
        source_address=(source, 0) if source else None,
    )
    try:
        conn.request(method, parts.path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    except OSError as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def probe(version: str, base: str, *, ask_for: str = "", source: str = "") -> dict[str, Any]:
    """Walk the metadata API; the credentials document itself under ``credentials``."""
    request = functools.partial(_request, source=source)
    headers: dict[str, str] = {}
    result: dict[str, Any] = {"version": version}
    if version == "v2":
        status, body = request(
            "PUT", base + "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        )
        result["token_status"] = status
        if status != 200:
            result["error"] = body.strip()
            return result
        headers["X-aws-ec2-metadata-token"] = body
    status, body = request("GET", base + _PATH, headers)
    result["role_status"] = status
    if status != 200:
        result["error"] = body.strip()
        return result
    role = body.strip()
    result["role"] = role
    status, body = request("GET", base + _PATH + (ask_for or role), headers)
    result["credentials_status"] = status
    if status != 200:
        result["error"] = body.strip()
        return result
    doc = json.loads(body)
    result["code"] = doc.get("Code")
    result["access_key_id"] = doc.get("AccessKeyId")
    result["credentials"] = doc
    return result


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("v1", "v2") or len(argv) > 3:
        print("usage: imds_probe v1|v2 [URL [ROLE]]", file=sys.stderr)
        return 2
    base = (argv[1] if len(argv) >= 2 else DEFAULT_URL).rstrip("/")
    ask_for = argv[2] if len(argv) == 3 else ""
    result = probe(argv[0], base, ask_for=ask_for)
    result.pop("credentials", None)  # never the secret or the token
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
