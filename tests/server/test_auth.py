"""With an admin token, every route but the probes and the API description needs it."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest

from aragora.control_plane import ControlPlaneCoordinator
from aragora.server import create_app
from tests.server.conftest import API, assert_problem

TOKEN = "s3cret-token"


@pytest.fixture
async def guarded(cp: ControlPlaneCoordinator) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(cp.config, coordinator=cp, admin_token=TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        yield http


ROUTES = [
    ("GET", f"{API}/agents"),
    ("GET", f"{API}/health"),
    ("GET", f"{API}/tasks"),
    ("POST", f"{API}/tasks/submit"),
    ("GET", f"{API}/tasks/some-id"),
    ("DELETE", f"{API}/agents/a"),
    ("GET", "/no/such/route"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_no_token_is_401_with_a_bearer_challenge(
    guarded: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await guarded.request(method, path)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TOKEN}x", "Bearer s3cret", f"Basic {TOKEN}", TOKEN, "Bearer ", "Bearer  "],
)
async def test_wrong_token_is_401(guarded: httpx.AsyncClient, authorization: str) -> None:
    response = await guarded.get(f"{API}/agents", headers={"Authorization": authorization})
    body = assert_problem(response, 401, "unauthorized")
    assert TOKEN not in response.text
    assert TOKEN not in body["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_right_token_is_let_through(guarded: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert (await guarded.get(f"{API}/agents", headers=headers)).status_code == 200
    lower = {"Authorization": f"bearer {TOKEN}"}
    submitted = await guarded.post(
        f"{API}/tasks/submit", json={"task_type": "t", "payload": 1}, headers=lower
    )
    assert submitted.status_code == 201


async def test_body_is_not_read_before_the_token_is_checked(guarded: httpx.AsyncClient) -> None:
    response = await guarded.post(
        f"{API}/tasks/submit",
        content=b"x" * 10_000_000,
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 401, "unauthorized")


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/openapi.json", "/docs"])
async def test_probes_and_docs_are_open(guarded: httpx.AsyncClient, path: str) -> None:
    assert (await guarded.get(path)).status_code == 200


async def test_openapi_declares_bearer_auth_except_on_probes(guarded: httpx.AsyncClient) -> None:
    document = (await guarded.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    assert document["paths"][f"{API}/agents"]["get"]["security"]
    assert "security" not in document["paths"]["/livez"]["get"]


def test_an_empty_token_is_refused(cp: ControlPlaneCoordinator) -> None:
    with pytest.raises(ValueError, match="admin_token"):
        create_app(cp.config, coordinator=cp, admin_token="")


async def test_a_websocket_without_the_token_is_closed(cp: ControlPlaneCoordinator) -> None:
    app = create_app(cp.config, coordinator=cp, admin_token=TOKEN)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": f"{API}/tasks", "headers": [], "root_path": ""}
    await app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]
