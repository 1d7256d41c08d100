"""``python -m kiam_testbed.kube`` as a process: URL first on stdout, serves, exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_standalone_prints_url_serves_and_exits_cleanly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kiam_testbed.kube", "--host", "127.0.0.1", "--port", "0",
        "--kubeconfig", str(kubeconfig),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            url = (await process.stdout.readline()).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        config = json.loads(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == url
        async with aiohttp.ClientSession() as session, \
                session.get(f"{url}/api/v1/namespaces") as response:
            body = await response.json()
        assert response.status == 200
        assert "default" in {item["metadata"]["name"] for item in body["items"]}
        process.send_signal(signum)
        async with asyncio.timeout(10):
            code = await process.wait()
        assert code == 0, (await process.stderr.read()).decode() if process.stderr else ""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
