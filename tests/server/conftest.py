"""An app around a real coordinator (SQLite and Redis), and HTTP clients for it.

``httpx.ASGITransport`` runs no lifespan, so the app is built around the ``cp``
coordinator fixture, which the test owns and closes, and its services are built by
``build_services`` as the lifespan would. ``client`` holds the bootstrap admin token of
workspace ``default``; ``client_for`` makes clients with other tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from aragora.control_plane import ControlPlaneCoordinator
from aragora.server import create_app
from aragora.server.services import build_services, close_services
from aragora.server.state import ServerState, server_state

API = "/api/control-plane"
PROBLEM_JSON = "application/problem+json"
SECRET_KEY = bytes(range(32))
"""The server secret of the tests: fixed, so every app of a test shares it."""
ADMIN_TOKEN = "admin-token-of-the-server-tests"
"""The bootstrap admin token (``ARAGORA_ADMIN_TOKEN``) of workspace ``default``."""
BASE_URL = "http://testserver"

ClientFactory = Callable[[str | None], Awaitable[httpx.AsyncClient]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def started_app(cp: ControlPlaneCoordinator, **kwargs: Any) -> FastAPI:
    """An app around ``cp`` with its services built, as its lifespan would."""
    kwargs.setdefault("secret_key", SECRET_KEY)
    kwargs.setdefault("admin_token", ADMIN_TOKEN)
    app = create_app(cp.config, coordinator=cp, **kwargs)
    await build_services(app)
    return app


def http_client(app: FastAPI, token: str | None = ADMIN_TOKEN) -> httpx.AsyncClient:
    headers = {} if token is None else bearer(token)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE_URL, headers=headers
    )


@pytest.fixture
async def app(cp: ControlPlaneCoordinator) -> AsyncIterator[FastAPI]:
    built = await started_app(cp)
    yield built
    await close_services(built)


@pytest.fixture
def state(app: FastAPI) -> ServerState:
    return server_state(app)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(app) as http:
        yield http


@pytest.fixture
async def client_for(app: FastAPI) -> AsyncIterator[ClientFactory]:
    """Clients of the app holding a given token (``None``: no Authorization header)."""
    opened: list[httpx.AsyncClient] = []

    async def make(token: str | None) -> httpx.AsyncClient:
        http = http_client(app, token)
        opened.append(http)
        return http

    yield make
    for http in opened:
        await http.aclose()


async def issue(
    client: httpx.AsyncClient, role: str, workspace: str | None = None, **fields: Any
) -> str:
    """Issue a token through the API (``client`` must hold an admin token); its secret."""
    body: dict[str, Any] = {"role": role, **fields}
    if workspace is not None:
        body["workspace"] = workspace
    response = await client.post(f"{API}/tokens", json=body)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def create_workspace(client: httpx.AsyncClient, name: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(f"{API}/workspaces", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def register(
    client: httpx.AsyncClient,
    agent_id: str = "agent-1",
    capabilities: Sequence[str] = ("debate",),
    **fields: Any,
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/agents/register",
        json={"agent_id": agent_id, "capabilities": list(capabilities), "model": "m-1", **fields},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def submit(client: httpx.AsyncClient, task_type: str = "debate", **fields: Any) -> str:
    fields.setdefault("payload", {"topic": "x"})
    response = await client.post(f"{API}/tasks/submit", json={"task_type": task_type, **fields})
    assert response.status_code == 201, response.text
    task_id: str = response.json()["task_id"]
    return task_id


async def claim(client: httpx.AsyncClient, agent_id: str = "agent-1") -> dict[str, Any]:
    response = await client.post(f"{API}/tasks/claim", json={"agent_id": agent_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_problem(
    response: httpx.Response, status: int, type_suffix: str, field: str | None = None
) -> dict[str, Any]:
    """The response is a problem+json of this status and type (and names ``field``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].endswith(type_suffix), body
    assert body["title"] and body["detail"]
    if field is not None:
        assert body["field"] == field, body
        assert field in [e["field"] for e in body["errors"]], body
    return body
