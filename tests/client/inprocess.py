"""A real server app and coordinator (SQLite) in the test's own event loop.

``AsyncControlPlaneClient`` reaches the app through ``httpx.ASGITransport``: no port,
no subprocess, yet every request goes through the real routing, authentication,
authorization and problem handlers, down to a real store. The transport runs no
lifespan, so the app's services are built here as the lifespan would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from aragora.client import AsyncControlPlaneClient
from aragora.control_plane import ControlPlaneConfig, ControlPlaneCoordinator
from aragora.server.app import create_app
from aragora.server.services import build_services

TOKEN = "in-process-token"
"""The bootstrap admin token of workspace ``default``."""
SECRET_KEY = bytes(range(32))
BASE_URL = "http://aragora.test"


@dataclass
class InProcess:
    app: FastAPI
    coordinator: ControlPlaneCoordinator

    def client(self, token: str | None = TOKEN, **kwargs: Any) -> AsyncControlPlaneClient:
        """A client of the app (default: the admin's); close it (``async with``) when done."""
        return AsyncControlPlaneClient(
            BASE_URL, token, transport=httpx.ASGITransport(app=self.app), **kwargs
        )

    async def token(self, role: str, workspace: str | None = None) -> str:
        """A new token of ``role`` (in ``workspace``, default ``default``), issued by the
        admin through the API."""
        async with self.client() as admin:
            _, secret = await admin.create_token(role, workspace=workspace)
        return secret


@asynccontextmanager
async def in_process(tmp_path: Path, **config: Any) -> AsyncIterator[InProcess]:
    """An app over a fresh SQLite store; ``config`` overrides ``ControlPlaneConfig`` fields."""
    settings = {"retry_backoff_base_s": 0.01, "retry_jitter": 0.0, **config}
    cfg = ControlPlaneConfig(store_url=f"sqlite:///{tmp_path / 'state.db'}", **settings)
    async with ControlPlaneCoordinator(cfg, run_reaper=False) as coordinator:
        app = create_app(cfg, admin_token=TOKEN, coordinator=coordinator, secret_key=SECRET_KEY)
        await build_services(app)
        yield InProcess(app, coordinator)
