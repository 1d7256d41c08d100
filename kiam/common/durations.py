"""Go-style durations (``15m``, ``1h30m``, ``500ms``), as Kiam's flags take them."""

from __future__ import annotations

import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Return seconds for a Go duration string; raise ValueError with the reason otherwise.

    ``0`` alone needs no unit, as in Go. A bare number otherwise is refused, because
    ``--sync 60`` is ambiguous (Go Kiam refuses it too).
    """
    raw = text.strip()
    if raw in ("0", "+0", "-0"):
        return 0.0
    sign = 1.0
    if raw[:1] in "+-" and raw:
        sign = -1.0 if raw[0] == "-" else 1.0
        raw = raw[1:]
    if not raw:
        raise ValueError(f"invalid duration {text!r}")
    pos = 0
    total = 0.0
    while pos < len(raw):
        match = _PART.match(raw, pos)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r}: "
                "expected a number with a unit such as 500ms, 15s, 5m, 1h"
            )
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Short human form used in logs and help text: 900.0 -> ``15m``, 0.5 -> ``500ms``."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
