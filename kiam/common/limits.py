"""Process limits a daemon sets for itself at start."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit and return it.

    Every agent connection, gRPC channel and watch holds a descriptor; distributions
    still default the soft limit to 1024, which a busy node exceeds. Go raises it the
    same way at start-up, so Kiam never had to ask operators to.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard
