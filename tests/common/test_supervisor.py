"""The daemons' lifecycle: ready once start-up is done, stop flag, ordered bounded shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable

import pytest

from kiam.common.supervisor import TASKS, Supervisor

ORDER = ("stop http", "remove rule", TASKS, "close clients")


class Journal:
    """Shutdown steps that note themselves; root tasks that note their cancellation."""

    def __init__(self) -> None:
        self.entries: list[str] = []

    def step(self, name: str) -> Callable[[], Awaitable[None]]:
        async def stop() -> None:
            self.entries.append(name)

        return stop

    async def forever(self, name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self.entries.append(f"task {name} ended")


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


async def test_shutdown_follows_the_stated_order_not_the_registration_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    journal = Journal()
    async with Supervisor("daemon", shutdown_order=ORDER) as daemon:
        daemon.on_stop("close clients", journal.step("close session"))
        daemon.on_stop("close clients", journal.step("close channel"))
        daemon.on_stop("stop http", journal.step("stop http"))
        daemon.on_stop("remove rule", journal.step("remove rule"))
        daemon.start("purge", journal.forever("purge"))
        asyncio.get_running_loop().call_soon(daemon.stop)
        assert await daemon.run() == 0
    assert journal.entries == [
        "stop http",
        "remove rule",
        "task purge ended",
        "close channel",  # one step's undos: the reverse of their registration
        "close session",
    ]
    assert messages(caplog)[-2:] == ["daemon ready", "daemon stopped"]


async def test_a_failed_start_undoes_only_what_was_set_up_and_logs_no_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    journal = Journal()
    with pytest.raises(OSError, match="port taken"):
        async with Supervisor("daemon", shutdown_order=ORDER) as daemon:
            daemon.on_stop("close clients", journal.step("close clients"))
            daemon.on_stop("stop http", journal.step("stop http"))
            raise OSError("port taken")
    assert journal.entries == ["stop http", "close clients"]
    assert "daemon ready" not in messages(caplog)
    assert "daemon stopped" not in messages(caplog)


async def test_ready_is_logged_once_the_ready_condition_holds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    synced = asyncio.Event()

    async def ready() -> None:
        await synced.wait()

    async with Supervisor("daemon", shutdown_order=ORDER) as daemon:
        running = asyncio.create_task(daemon.run(ready=ready, fields={"port": 3100}))
        await asyncio.sleep(0.01)
        assert "daemon ready" not in messages(caplog)
        synced.set()
        await asyncio.sleep(0.01)
        daemon.stop()
        assert await running == 0
    ready_records = [r for r in caplog.records if r.getMessage() == "daemon ready"]
    assert len(ready_records) == 1
    assert ready_records[0].fields == {"port": 3100}  # type: ignore[attr-defined]


async def test_the_first_task_to_fail_stops_the_rest_and_the_exit_code_is_1() -> None:
    journal = Journal()

    async def broken() -> None:
        raise RuntimeError("watch gave up")

    async with Supervisor("daemon", shutdown_order=ORDER) as daemon:
        daemon.start("purge", journal.forever("purge"))
        daemon.start("watch", broken())
        assert await daemon.run() == 1
        assert isinstance(daemon.failed, RuntimeError)
    assert journal.entries == ["task purge ended"]


async def test_a_task_that_ends_stops_the_daemon_with_exit_0() -> None:
    async def done() -> None:
        return None

    async with Supervisor("daemon", shutdown_order=ORDER) as daemon:
        daemon.start("short", done())
        assert await daemon.run() == 0


async def test_sigterm_only_sets_the_stop_flag(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    journal = Journal()
    async with Supervisor("daemon", shutdown_order=ORDER) as daemon:
        daemon.on_stop("stop http", journal.step("stop http"))
        # during start-up: honoured once start-up is done, not in the middle of it
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.01)
        journal.entries.append("start-up finished")
        assert await daemon.run() == 0
    assert journal.entries == ["start-up finished", "stop http"]
    assert "received SIGTERM; shutting down" in messages(caplog)
    # the handlers are gone again: the loop's default handling is back
    assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)


async def test_a_step_that_hangs_or_fails_does_not_hold_up_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = Journal()

    async def hang() -> None:
        await asyncio.Event().wait()

    async def fail() -> None:
        raise OSError("iptables: resource busy")

    async with Supervisor("daemon", shutdown_order=ORDER, shutdown_timeout=0.05) as daemon:
        daemon.on_stop("stop http", hang)
        daemon.on_stop("remove rule", fail)
        daemon.on_stop("close clients", journal.step("close clients"))
        daemon.stop()
        await daemon.run()
    assert journal.entries == ["close clients"]
    assert "shutdown step stop http did not finish within 0.05s" in messages(caplog)
    assert "shutdown step remove rule failed: iptables: resource busy" in messages(caplog)


def test_steps_must_be_in_the_order() -> None:
    with pytest.raises(ValueError, match="once"):
        Supervisor("daemon", shutdown_order=("stop http",))
    daemon = Supervisor("daemon", shutdown_order=ORDER)
    with pytest.raises(ValueError, match="not a step"):
        daemon.on_stop("unheard of", Journal().step("x"))
