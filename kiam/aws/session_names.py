"""The AssumeRole parameters a pod's annotations choose: its session name and external ID.

Session names are sent as Kiam sends them, ``kiam-<name>``. STS accepts 2-64 characters
of ``[\\w+=,.@-]``; anything else in the pod annotation would make every AssumeRole for
that pod fail, so it is replaced instead. An external ID cannot be repaired that way (it
must equal what the trust policy says), so one STS would refuse is refused up front with
the reason (:func:`external_id_problem`), without an STS call.
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


EXTERNAL_ID_MIN = 2
EXTERNAL_ID_MAX = 1224
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]*", re.ASCII)


def external_id_problem(external_id: str) -> str | None:
    """Why STS would refuse ``external_id`` (never quoting it), or None when it is fine.

    "" means the pod sets none, which is fine. STS accepts 2-1224 characters of
    ``[\\w+=,.@:/-]``.
    """
    if not external_id:
        return None
    if not EXTERNAL_ID_MIN <= len(external_id) <= EXTERNAL_ID_MAX:
        return (
            f"is {len(external_id)} characters long; STS accepts "
            f"{EXTERNAL_ID_MIN} to {EXTERNAL_ID_MAX}"
        )
    if _EXTERNAL_ID.fullmatch(external_id) is None:
        return "holds characters STS does not accept (only letters, digits and +=,.@:/-_)"
    return None
