"""``/metrics`` on a real port on 127.0.0.1: served, and a bad or taken address refused
at start-up with one line."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter

from kiam.common.metrics_http import MetricsError, serve_metrics, start_metrics


def registry_with_a_counter() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("kiam_test_things", "things counted by the test", registry=registry).inc(3)
    return registry


async def scrape(address: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{address}/metrics") as response,
    ):
        return response.status, response.headers["Content-Type"], await response.text()


def bound(runner: object) -> str:
    host, port = runner.addresses[0][:2]  # type: ignore[attr-defined]
    return f"{host}:{port}"


async def test_serves_the_registry(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="kiam.common.metrics_http")
    runner = await start_metrics("127.0.0.1:0", registry_with_a_counter())
    try:
        address = bound(runner)
        status, content_type, text = await scrape(address)
        assert status == 200
        assert content_type.startswith("text/plain")
        assert "kiam_test_things_total 3.0" in text
        assert f"serving metrics on {address}" in caplog.text
    finally:
        await runner.cleanup()


async def test_taken_port_is_a_metrics_error_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsError) as caught:
            await start_metrics(f"127.0.0.1:{port}", CollectorRegistry())
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "/metrics" in message
    assert "\n" not in message
    assert caught.value.__cause__ is None


async def test_invalid_address_is_a_metrics_error() -> None:
    with pytest.raises(MetricsError, match=r"--prometheus-listen-addr.*missing port"):
        await start_metrics("localhost", CollectorRegistry())


async def test_serve_metrics_stops_listening_when_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="kiam.common.metrics_http")
    task = asyncio.create_task(serve_metrics("127.0.0.1:0", registry_with_a_counter()))

    def announced() -> str | None:
        for record in caplog.records:
            if record.getMessage().startswith("serving metrics on"):
                return str(record.fields["address"])  # type: ignore[attr-defined]
        return None

    for _ in range(200):
        if (address := announced()) is not None:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("serve_metrics never said where it listens")
    status, _, _ = await scrape(address)
    assert status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        await scrape(address)
