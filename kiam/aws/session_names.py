"""STS role session names, as Kiam sends them: ``kiam-<name>``.

STS accepts 2-64 characters of ``[\\w+=,.@-]``; anything else in the pod annotation
would make every AssumeRole for that pod fail, so it is replaced instead.
"""

from __future__ import annotations

import re

PREFIX = "kiam-"
MAX_LENGTH = 64
_DISALLOWED = re.compile(r"[^\w+=,.@-]", re.ASCII)


def sts_session_name(annotation: str, default: str) -> str:
    """The RoleSessionName for a pod: its annotation, else ``default``, sanitised.

    Characters outside ``[\\w+=,.@-]`` become ``-``; the result is cut to 64 characters.
    """
    name = annotation.strip() or default
    return _DISALLOWED.sub("-", PREFIX + name)[:MAX_LENGTH]
