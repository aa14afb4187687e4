from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aragora.client import AsyncControlPlaneClient
from tests.client.inprocess import InProcess, in_process


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[InProcess]:
    async with in_process(tmp_path) as running:
        yield running


@pytest.fixture
async def client(server: InProcess) -> AsyncIterator[AsyncControlPlaneClient]:
    async with server.client() as c:
        yield c
