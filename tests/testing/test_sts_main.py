"""``python -m kiam_testbed.sts`` as a process: URL first on stdout, faults over HTTP,
clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import aiohttp
import botocore.exceptions
import pytest
from aiobotocore.session import get_session
from botocore.config import Config

ROLE = "arn:aws:iam::123456789012:role/standalone"
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=5)


async def test_standalone_process_serves_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kiam_testbed.sts",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            url = (await proc.stdout.readline()).decode().strip()
        assert url.startswith("http://127.0.0.1:")

        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/_standin/faults", json={"kind": "throttling"}) as r:
                assert r.status == 200
            async with get_session().create_client(
                "sts",
                region_name="us-east-1",
                endpoint_url=url,
                config=NO_RETRIES,
                aws_access_key_id="AKIDTESTING",
                aws_secret_access_key="testing-secret",
            ) as sts:
                with pytest.raises(botocore.exceptions.ClientError) as info:
                    await sts.assume_role(RoleArn=ROLE, RoleSessionName="standalone")
                assert info.value.response["Error"]["Code"] == "Throttling"
                ok: dict[str, Any] = await sts.assume_role(
                    RoleArn=ROLE, RoleSessionName="standalone"
                )
                assert ok["Credentials"]["AccessKeyId"]
            async with http.get(f"{url}/_standin/calls") as r:
                calls = (await r.json())["calls"]
        assert [(c["fault"], c["status"]) for c in calls] == [("throttling", 400), (None, 200)]

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await proc.wait()
        assert code == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_standalone_rate_limit_from_the_flag_and_the_control_api() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kiam_testbed.sts", "--host", "127.0.0.1", "--port", "0",
        "--rate-limit", "0.01", "--burst", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            url = (await proc.stdout.readline()).decode().strip()
        async with get_session().create_client(
            "sts", region_name="us-east-1", endpoint_url=url, config=NO_RETRIES,
            aws_access_key_id="AKIDTESTING", aws_secret_access_key="testing-secret",
        ) as sts, aiohttp.ClientSession() as http:
            await sts.assume_role(RoleArn=ROLE, RoleSessionName="standalone")
            with pytest.raises(botocore.exceptions.ClientError) as info:
                await sts.assume_role(RoleArn=ROLE, RoleSessionName="standalone")
            assert info.value.response["Error"]["Code"] == "Throttling"
            async with http.post(f"{url}/_standin/rate-limit", json={"rate": 0}) as r:
                assert r.status == 200
            await sts.assume_role(RoleArn=ROLE, RoleSessionName="standalone")
            async with http.get(f"{url}/_standin/calls") as r:
                calls = (await r.json())["calls"]
        assert [c["rate_limited"] for c in calls] == [False, True, False]
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
