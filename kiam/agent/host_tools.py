"""The node's network tools (``iptables``, iproute2's ``ip``) run as asyncio subprocesses:
the one way :mod:`kiam.agent.iptables` and :mod:`kiam.agent.link_local` call them."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ToolRun:
    code: int
    out: str
    err: str
    """stderr on one line: the tool's own words, for the error message."""


def find_tool(name: str, *, error: type[Exception], hint: str) -> str:
    """The tool's path on PATH; ``error`` saying ``hint`` when it is missing."""
    found = shutil.which(name)
    if found is None:
        raise error(f"{name} not found on PATH: {hint}")
    return found


async def run_tool(binary: str, args: list[str], *, error: type[Exception]) -> ToolRun:
    """Run ``binary args...``; ``error`` when it cannot be started at all."""
    try:
        proc = await asyncio.create_subprocess_exec(
            binary, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        raise error(f"cannot run {binary}: {exc.strerror or exc}") from None
    out, err = await proc.communicate()
    return ToolRun(
        proc.returncode or 0,
        out.decode(errors="replace"),
        " ".join(err.decode(errors="replace").split()),
    )
