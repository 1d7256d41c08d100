"""``python -m kiam_testbed.http_lines``: HTTP requests made where this process runs.

The test bed runs it in place (``Placement.wrap``: a node or pod namespace the test
process can neither reach nor listen in), so it needs nothing but the standard library.
One request per JSON line on stdin, ``{"method", "url", "body", "content_type"}`` (all but
``url`` optional); one answer per line on stdout, ``[status, body]``, in order and as
each comes (a caller can act part-way), status 0 when nothing answered.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any


def request(spec: dict[str, Any]) -> tuple[int, str]:
    """One request, on a connection of its own."""
    body = spec.get("body")
    data = None if body is None else str(body).encode()
    headers = {} if data is None else {"Content-Type": spec.get("content_type", "")}
    req = urllib.request.Request(spec["url"], data=data, method=spec.get("method", "GET"),
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def main() -> None:
    for line in sys.stdin:
        print(json.dumps(request(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
