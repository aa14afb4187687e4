"""Every route but the probes and the API description needs a valid API token; every
refusal looks the same, whatever the reason."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from aragora.control_plane import ControlPlaneCoordinator
from aragora.server import create_app
from aragora.server.middleware.tenancy import OPEN_PATHS
from aragora.tenancy.errors import AUTHENTICATION_FAILED_MESSAGE
from tests.conftest import Clock
from tests.server.conftest import (
    ADMIN_TOKEN,
    API,
    ClientFactory,
    assert_problem,
    bearer,
    issue,
    submit,
)

GENERIC_401 = {
    "type": "urn:aragora:problem:unauthorized",
    "title": "Unauthorized",
    "status": 401,
    "detail": AUTHENTICATION_FAILED_MESSAGE,
}

ROUTES = [
    ("GET", f"{API}/agents"),
    ("GET", f"{API}/health"),
    ("GET", f"{API}/tasks"),
    ("POST", f"{API}/tasks/submit"),
    ("GET", f"{API}/tasks/some-id"),
    ("DELETE", f"{API}/agents/a"),
    ("GET", f"{API}/workspaces"),
    ("POST", f"{API}/tokens"),
    ("GET", f"{API}/audit/verify"),
    ("GET", "/no/such/route"),
]


def assert_generic_401(response: httpx.Response) -> None:
    assert_problem(response, 401, "unauthorized")
    assert response.json() == GENERIC_401
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_no_token_is_401_with_a_bearer_challenge(
    client_for: ClientFactory, method: str, path: str
) -> None:
    anonymous = await client_for(None)
    assert_generic_401(await anonymous.request(method, path))


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {ADMIN_TOKEN}x",
        "Bearer admin-token",
        f"Basic {ADMIN_TOKEN}",
        ADMIN_TOKEN,
        "Bearer ",
        "Bearer  ",
        "Bearer acp_short_abcdef",
        "Bearer acp_" + "A" * 30,
        "Bearer " + "x" * 5000,
    ],
)
async def test_wrong_or_malformed_token_is_401(
    client: httpx.AsyncClient, authorization: str
) -> None:
    response = await client.get(f"{API}/agents", headers={"Authorization": authorization})
    assert_generic_401(response)
    assert ADMIN_TOKEN not in response.text


async def test_a_token_with_a_broken_checksum_is_401(client: httpx.AsyncClient) -> None:
    token = await issue(client, "viewer")
    last = token[-1]
    broken = token[:-1] + ("A" if last != "A" else "B")
    assert (await client.get(f"{API}/tasks", headers=bearer(token))).status_code == 200
    assert_generic_401(await client.get(f"{API}/tasks", headers=bearer(broken)))


async def test_a_revoked_token_is_401_at_once(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/tokens", json={"role": "operator"})
    token, token_id = response.json()["token"], response.json()["token_id"]
    assert (await client.get(f"{API}/tasks", headers=bearer(token))).status_code == 200
    assert (await client.delete(f"{API}/tokens/{token_id}")).status_code == 204
    assert_generic_401(await client.get(f"{API}/tasks", headers=bearer(token)))


async def test_an_expired_token_is_401(client: httpx.AsyncClient, clock: Clock) -> None:
    token = await issue(client, "submitter", expires_in_s=60)
    assert (await client.get(f"{API}/tasks", headers=bearer(token))).status_code == 200
    clock.advance(61)
    assert_generic_401(await client.get(f"{API}/tasks", headers=bearer(token)))


async def test_the_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    lower = {"Authorization": f"bearer {ADMIN_TOKEN}"}
    submitted = await client.post(
        f"{API}/tasks/submit", json={"task_type": "t", "payload": 1}, headers=lower
    )
    assert submitted.status_code == 201


async def test_body_is_not_read_before_the_token_is_checked(client_for: ClientFactory) -> None:
    anonymous = await client_for(None)
    response = await anonymous.post(
        f"{API}/tasks/submit",
        content=b"x" * 10_000_000,
        headers={"content-type": "application/json"},
    )
    assert_generic_401(response)


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
async def test_probes_and_docs_are_open(client_for: ClientFactory, path: str) -> None:
    anonymous = await client_for(None)
    assert (await anonymous.get(path)).status_code == 200


async def test_a_matching_workspace_header_passes_and_another_is_403(
    client: httpx.AsyncClient,
) -> None:
    same = await client.get(f"{API}/tasks", headers={"X-Workspace-ID": "default"})
    assert same.status_code == 200
    other = await client.get(f"{API}/tasks", headers={"X-Workspace-ID": "acme"})
    body = assert_problem(other, 403, "forbidden")
    assert "X-Workspace-ID" in body["detail"]
    submitted = await client.post(
        f"{API}/tasks/submit",
        json={"task_type": "t", "payload": 1},
        headers={"X-Workspace-ID": "acme"},
    )
    assert_problem(submitted, 403, "forbidden")
    assert (await client.get(f"{API}/tasks")).json()["tasks"] == []


async def test_the_workspace_never_comes_from_body_or_query(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{API}/tasks/submit", json={"task_type": "t", "payload": 1, "workspace_id": "acme"}
    )
    assert_problem(response, 422, "validation-error", "workspace_id")
    task_id = await submit(client)
    listed = await client.get(f"{API}/tasks", params={"workspace_id": "acme"})
    assert [t["id"] for t in listed.json()["tasks"]] == [task_id]
    assert listed.json()["tasks"][0]["workspace_id"] == "default"


async def test_request_ids_are_echoed_or_made(client: httpx.AsyncClient) -> None:
    given = await client.get(f"{API}/tasks", headers={"X-Request-ID": "req-42.a"})
    assert given.headers["x-request-id"] == "req-42.a"
    made = await client.get(f"{API}/tasks", headers={"X-Request-ID": "bad id\twith spaces"})
    assert made.headers["x-request-id"] not in ("", "bad id\twith spaces")
    refused = await client.get(f"{API}/tasks", headers={"Authorization": "Bearer nope"})
    assert len(refused.headers["x-request-id"]) == 32


async def test_openapi_declares_bearer_auth_except_on_probes(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    assert document["paths"][f"{API}/agents"]["get"]["security"]
    assert "security" not in document["paths"]["/livez"]["get"]


def test_an_empty_admin_token_is_refused(cp: ControlPlaneCoordinator) -> None:
    with pytest.raises(ValueError, match="admin_token"):
        create_app(cp.config, coordinator=cp, admin_token="")


async def test_a_websocket_without_a_valid_token_is_closed(app: FastAPI) -> None:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    for headers in ([], [(b"authorization", b"Bearer wrong")]):
        sent.clear()
        scope = {"type": "websocket", "path": f"{API}/tasks", "headers": headers, "root_path": ""}
        await app(scope, receive, send)
        assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]
