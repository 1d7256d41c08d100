"""Fixtures for the Kubernetes emulator's tests: a running emulator and clients of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client, config

from kiam_testbed.kube import KubeEmulator


@pytest.fixture
async def kube_emulator() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(bookmark_interval=60.0) as kube:
        yield kube


@pytest.fixture
def kube_kubeconfig(kube_emulator: KubeEmulator, tmp_path: Path) -> Path:
    return kube_emulator.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
async def kube_api_client(kube_kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    """A kubernetes_asyncio client configured the way the kiam server configures it."""
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kube_kubeconfig), client_configuration=cfg)
    async with client.ApiClient(configuration=cfg) as api:
        yield api


@pytest.fixture
def kube_core(kube_api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api_client)


@pytest.fixture
async def kube_http(kube_emulator: KubeEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    """Raw HTTP, for what kubernetes_asyncio cannot easily express."""
    async with aiohttp.ClientSession(base_url=kube_emulator.url) as session:
        yield session
