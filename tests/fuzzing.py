"""How long the randomised tests run: bounded in ``make test``, longer in ``make fuzz``.

``make test`` runs every property test with its own example count and the hostile-request
test with a fixed seed, so a run takes the same few seconds each time. ``make fuzz`` sets
:data:`SCALE_ENV` (``FUZZ_SCALE``, 20 by default), which multiplies every count, and
draws a fresh seed for the hostile requests, printed so a failure can be replayed with
:data:`SEED_ENV`. Property tests carry the ``fuzz`` marker, which ``make fuzz`` selects.
"""

from __future__ import annotations

import os
import random

from hypothesis import settings

SCALE_ENV = "KIAM_FUZZ_SCALE"
SEED_ENV = "KIAM_FUZZ_SEED"


def _positive_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{name}={text!r} must be 1 or more")
    return value


def scale() -> int:
    """The multiplier of every example count (1 unless ``make fuzz`` set it)."""
    return _positive_int(SCALE_ENV, 1)


def fuzz(examples: int) -> settings:
    """Hypothesis settings for a property test that runs ``examples`` times per scale."""
    return settings(max_examples=examples * scale(), deadline=None, database=None)


def count(n: int) -> int:
    """``n`` randomised cases, times the scale."""
    return n * scale()


def seed(fixed: int) -> int:
    """``fixed`` in ``make test``; under ``make fuzz`` a fresh seed unless one is given."""
    if os.environ.get(SEED_ENV, "").strip():
        return _positive_int(SEED_ENV, fixed)
    if scale() == 1:
        return fixed
    return random.SystemRandom().randrange(1, 2**31)
