"""An app around a real coordinator (SQLite and Redis), and an HTTP client for it.

``httpx.ASGITransport`` runs no lifespan, so the app is built around the ``cp``
coordinator fixture, which the test owns and closes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from aragora.control_plane import ControlPlaneCoordinator
from aragora.server import create_app
from aragora.server.state import ServerState, server_state

API = "/api/control-plane"
PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def app(cp: ControlPlaneCoordinator) -> FastAPI:
    return create_app(cp.config, coordinator=cp)


@pytest.fixture
def state(app: FastAPI) -> ServerState:
    return server_state(app)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        yield http


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
