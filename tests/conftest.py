"""Hygiene shared by every test: no leaked asyncio tasks; warnings are errors (pyproject)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kiam.common.limits import raise_open_file_limit


def pytest_configure(config: pytest.Config) -> None:
    # The suite runs many servers and clients in one process; a normal user's default
    # soft limit (1024) is too low for that, as it is for the daemons (which raise it too).
    raise_open_file_limit()


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running after it ends.

    Fixtures that start servers stop them before this runs (it is set up first, torn
    down last); give cancelled tasks a few loop turns to finish before judging.
    """
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    for _ in range(50):
        leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
        if not leaked:
            return
        await asyncio.sleep(0.01)
    names = ", ".join(sorted(t.get_name() + ":" + repr(t.get_coro()) for t in leaked))
    pytest.fail(f"test leaked asyncio tasks: {names}")
